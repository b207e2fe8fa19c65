"""Which precision a run trains in, why, and running inference (samples) in that same precision.

`auto` resolves to a concrete mode with a reason the log shows:

    CUDA, bf16 supported   bf16   (tensor cores compute bf16 at fp16 speed; no loss scaling)
    CUDA, older GPU        fp16
    CPU without native bf16                  no     (emulated bf16)
    CPU with native bf16, large UNet         bf16 if a timed probe of the run's UNet says it is
                                             clearly faster, else no (train/precision_probe.py)
    CPU with native bf16, small UNet         no     (not timed: results stay machine-independent)

On the CPU, bf16 autocast is not reliably faster: issue 19 measured it 1.7-1.8x *slower* than fp32 on
an Intel Xeon with AMX and AVX512-BF16 (full-size SD 1.4 at 256 px and the small SD model at 64 px),
2.5x faster on an AMD Zen 4 EPYC, and on a CPU without native bf16 (an AVX2-only AMD EPYC) it
is emulated: `benchmarks/train_step.py --case tiny --no-reference --threads 1` measured 4.91 s of CPU
time per step in bf16 against 1.47 s in fp32 (3.3x). CPU flags cannot tell these apart, so `auto`
measures where it matters (the run's own UNet, one block, both ways) and otherwise stays in fp32;
`bf16` stays available to opt in. fp16 on the CPU is refused: there is no CPU
loss scaler in the trainer and fp16 matmuls are emulated there.

A run in fp16/bf16 keeps its frozen weights in that precision and its LoRA in fp32; sampling from
such a model (validation grids, DreamBooth class images) must therefore run under the same autocast
as training, or the first layer that mixes an fp32 LoRA output with low-precision weights fails
("Input type (float) and bias type (c10::BFloat16) should be the same").
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from sdlora.dtypes import DTYPES  # noqa: F401 (re-exported: mixed-precision mode -> weight dtype)
from sdlora.errors import SdloraError
from sdlora.train.precision_probe import ProbeResult

NAMES = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}  # what a person reads for each mode


@dataclass(frozen=True)
class Choice:
    """A resolved precision: `mode` as accelerate names it ("no", "fp16", "bf16") and why."""

    mode: str
    reason: str

    @property
    def name(self) -> str:
        return NAMES[self.mode]


def choose(setting: str, device_type: str, *, cuda_bf16: bool | None = None,
           probe: Callable[[], ProbeResult] | None = None) -> Choice:
    """Resolve train.mixed_precision (`auto`, no, fp16, bf16) for a device type ("cuda" or "cpu");
    `probe` times bf16 against fp32 for the run's UNet on this CPU (train/precision_probe.py), or is
    None where that is not measured (a small UNet: fp32)."""
    if setting != "auto":
        if setting == "fp16" and device_type == "cpu":
            raise SdloraError('train.mixed_precision = "fp16" needs a GPU; on the CPU use "no" (fp32, the '
                              'fastest there) or "bf16"')
        return Choice(setting, "as configured (train.mixed_precision)")
    if device_type == "cuda":
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if supported:
            return Choice("bf16", "auto: this GPU computes bf16 natively")
        return Choice("fp16", "auto: this GPU has no bf16, fp16 with loss scaling")
    if not cpu_has_native_bf16():
        return Choice("no", "auto: fp32 on the CPU (this CPU has no native bf16: emulated, it measured 3.3x slower; "
                            "--mixed-precision bf16 to opt in)")
    if probe is None:
        return Choice("no", "auto: fp32 on the CPU (bf16 autocast measured slower than fp32 on some CPUs with native "
                            "bf16; it is timed here only for a large UNet; --mixed-precision bf16 to opt in)")
    try:
        result = probe()
    except Exception as exc:  # noqa: BLE001 (a UNet block the probe cannot run: keep the safe choice)
        return Choice("no", f"auto: fp32 on the CPU (timing bf16 failed: {type(exc).__name__}: "
                            f"{(str(exc).splitlines() or [''])[0][:100]})")
    if result.bf16_faster:
        return Choice("bf16", f"auto: bf16 autocast measured {result.fp32_s / result.bf16_s:.1f}x faster than fp32 on "
                              f"this CPU ({result.describe()}); --mixed-precision no for fp32")
    return Choice("no", f"auto: fp32, bf16 autocast was not clearly faster on this CPU ({result.describe()})")


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, private but long-stable
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def weight_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a module's frozen weights (the first parameter that does not train)."""
    frozen = (p.dtype for p in module.parameters() if not p.requires_grad and p.is_floating_point())
    return next(frozen, torch.float32)


def autocast(device: torch.device | str, dtype: torch.dtype):
    """Autocast to `dtype` on `device`'s type for a low-precision model; nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def sampling_autocast(components, device: torch.device | str):
    """The autocast that matches how `components` were loaded (the VAE never carries a LoRA)."""
    return autocast(device, weight_dtype(components.vae))
