"""Which convolution kernels the training step runs on the CPU: oneDNN's or PyTorch's native ones.

`train.conv_backend = "auto"` resolves with a reason the log shows:

    CPU, fp32         native   (im2col + GEMM; oneDNN measured slower for training, below)
    CPU, bf16         onednn   (only fp32 was measured; oneDNN has the AMX/AVX512-BF16 kernels)
    CUDA              onednn   (the setting only concerns CPU kernels: nothing changes on a GPU)

Issue 19 measured the full-size SD 1.4 UNet's training step (attention LoRA, 256 px, batch 1, one
thread, this project's 2-core AMD EPYC, torch 2.14.1): 7.3-8.0 s of CPU time per step with oneDNN's
convolutions, 5.8-6.3 s with the native ones (1.3x; with two threads 4.3-4.4 against 3.7-3.9 s of
wall time, 1.14x), and a lower peak RSS (4.95 vs 5.03 GB); the small
SD models (sd-tiny at 64 px, issue 19's small model) train at the same speed with either. eager
oneDNN re-lays-out each frozen 3x3 weight (up to 118 MB) in every forward and backward call, which at
small spatial sizes costs about as much as the convolution itself. The two differ only by fp32
rounding. The setting covers the UNet's forward and backward in `train_step`; caching latents,
validation and sampling keep PyTorch's default.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ConvChoice:
    native: bool  # True: PyTorch's native CPU convolutions for the step, oneDNN off
    reason: str

    @property
    def name(self) -> str:
        return "native" if self.native else "onednn"


def choose(setting: str, device_type: str, precision: str = "no") -> ConvChoice:
    """`auto` / `onednn` / `native` -> the kernels the step uses on `device_type` in `precision`
    (accelerate's mode: "no", "fp16", "bf16"), and why."""
    if device_type != "cpu":
        return ConvChoice(False, f"{device_type}: train.conv_backend only concerns CPU kernels")
    if setting == "native":
        return ConvChoice(True, "train.conv_backend = native")
    if setting == "onednn":
        return ConvChoice(False, "train.conv_backend = onednn")
    if precision != "no":
        return ConvChoice(False, f"auto: oneDNN for {precision} autocast (native kernels were measured in fp32 only)")
    return ConvChoice(True, "auto: native on the CPU (oneDNN measured 1.3x slower for the full-size UNet's "
                            "training step; train.conv_backend = onednn to use it)")


@contextlib.contextmanager
def conv_kernels(native: bool):
    """A `with` block whose CPU convolutions (forward and backward) use the native kernels when `native`;
    oneDNN's switch is restored after (only the switch: its other flags stay as they are)."""
    saved = torch.backends.mkldnn.enabled
    if native:
        torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = saved
