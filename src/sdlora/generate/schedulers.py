"""The samplers users know, as a data table: name -> (diffusers class, config overrides, A1111 label).

Every scheduler is built from the model's own scheduler config (SD 1.4: scaled_linear betas
0.00085-0.012, 1000 steps, steps_offset 1, epsilon), so only what differs is listed here. Classes
are named, not imported: the table can be read (e.g. for `--help`) without loading diffusers.
A model trained for another target or schedule (see sdlora.generate.prediction) adds its own overrides.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from sdlora.errors import SdloraError
from sdlora.generate.prediction import NoiseSettings


@dataclass(frozen=True)
class SchedulerChoice:
    class_name: str  # a scheduler class exported by `diffusers`
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # the sampler name A1111 writes in its `parameters` chunk
    zero_snr: bool = True  # can sample a zero-terminal-SNR schedule (diffusers' `rescale_betas_zero_snr`)

    @property
    def cls(self) -> type:
        return getattr(importlib.import_module("diffusers"), self.class_name)


SCHEDULERS: dict[str, SchedulerChoice] = {
    # SD 1.4's default. PNDM with skip_prk_steps is the PLMS sampler of the original SD repo.
    # Its update divides by the signal level, which is 0 at a zero-terminal-SNR schedule's last step.
    "pndm": SchedulerChoice("PNDMScheduler", {"skip_prk_steps": True}, "PLMS", zero_snr=False),
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


def check_sampleable(name: str, noise: NoiseSettings | None) -> str:
    """`name`, if that scheduler can sample a model trained with `noise`; SdloraError saying which can."""
    choice = SCHEDULERS[check_scheduler_name(name)]
    if noise is not None and noise.zero_terminal_snr and not choice.zero_snr:
        usable = ", ".join(n for n, c in SCHEDULERS.items() if c.zero_snr)
        raise SdloraError(f"scheduler {name!r} cannot sample a model trained with zero terminal SNR "
                          f"(train.zero_terminal_snr); choose one of {usable} (e.g. --scheduler ddim)")
    return name


def make_scheduler(name: str, base_config: Any, noise: NoiseSettings | None = None):
    """A fresh scheduler `name` built from `base_config` (a model's scheduler config) plus the table's overrides
    and those of `noise` (how the model, or the LoRA on it, was trained)."""
    choice = SCHEDULERS[check_sampleable(name, noise)]
    noise = noise or NoiseSettings()
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    return choice.cls.from_config({**config, **choice.overrides, **noise.overrides()})


def sampler_label(name: str) -> str:
    return SCHEDULERS[check_scheduler_name(name)].label
