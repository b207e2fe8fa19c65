"""The samplers users know, as a data table: name -> (diffusers class, config overrides, A1111 label).

Every scheduler is built from the model's own scheduler config (SD 1.4: scaled_linear betas
0.00085-0.012, 1000 steps, steps_offset 1, epsilon), so only what differs is listed here. Classes
are named, not imported: the table can be read (e.g. for `--help`) without loading diffusers.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from sdlora.errors import SdloraError


@dataclass(frozen=True)
class SchedulerChoice:
    class_name: str  # a scheduler class exported by `diffusers`
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # the sampler name A1111 writes in its `parameters` chunk

    @property
    def cls(self) -> type:
        return getattr(importlib.import_module("diffusers"), self.class_name)


SCHEDULERS: dict[str, SchedulerChoice] = {
    # SD 1.4's default. PNDM with skip_prk_steps is the PLMS sampler of the original SD repo.
    "pndm": SchedulerChoice("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),
    "ddim": SchedulerChoice("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, "DDIM"),
    "euler": SchedulerChoice("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": SchedulerChoice("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "dpmpp_2m": SchedulerChoice("DPMSolverMultistepScheduler",
                                {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                 "use_karras_sigmas": False}, "DPM++ 2M"),
    "dpmpp_2m_karras": SchedulerChoice("DPMSolverMultistepScheduler",
                                       {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                        "use_karras_sigmas": True}, "DPM++ 2M Karras"),
}
DEFAULT_SCHEDULER = "pndm"


def check_scheduler_name(name: str, where: str = "scheduler") -> str:
    if name not in SCHEDULERS:
        raise SdloraError(f"{where}: unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return name


def make_scheduler(name: str, base_config: Any):
    """A fresh scheduler `name` built from `base_config` (a model's scheduler config) plus the table's overrides."""
    choice = SCHEDULERS[check_scheduler_name(name)]
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    return choice.cls.from_config({**config, **choice.overrides})


def sampler_label(name: str) -> str:
    return SCHEDULERS[check_scheduler_name(name)].label
