"""A lower peak memory for the CPU training step of a large UNet, with the same gradients.

`train.low_memory = "auto"` resolves with a reason the log shows:

    CPU, fp32, UNet >= 300M parameters   on   (the full-size SD 1.x UNet: issue 19's 0.8x peak-RSS target)
    CPU, small UNet (sd-tiny, tests)      off  (nothing to gain: its weights and activations are small)
    CUDA, bf16/fp16 autocast, compile     off  (only the eager fp32 CPU step was measured)

"on" does three things, none of which changes a result beyond what fp32 already guarantees
(the frozen convolutions' input gradient is the kernel call autograd makes; recomputation repeats
the same deterministic kernels):
  - frozen convolutions keep no copy of their input for backward (only the input gradient is needed;
    autograd's convolution saves the input for a weight gradient that a frozen layer never gets)
  - the transformer blocks at the UNet's two highest resolutions (its first two down and last two up
    blocks) are recomputed in backward (gradient checkpointing) instead of keeping their activations:
    they hold most of what the step saves (GEGLU feed-forwards, attention at 1,024 and 256 tokens at
    256 px); the resnets are not recomputed (their convolutions are the step's most expensive part)
  - glibc's heap is trimmed (malloc_trim) before the forward, between the UNet's blocks in the forward
    and the backward, and before the backward: the step's freed temporaries leave free blocks that
    glibc keeps resident (0.2-0.4 GB of the full-size step's peak, measured with mallinfo2)
Full-size SD 1.4 architecture, 256 px, batch 1, one thread, this project's 2-core AMD EPYC (issue 19,
benchmarks/RESULTS.md): `sdlora train`'s peak RSS 4.97-5.00 -> 4.59-4.66 GB, ~20% more CPU time per
step (in-process: 6.4-6.5 against 5.3-5.4 s; half recomputation, half page faults after the trims),
the same losses to the last digit.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint

LARGE_UNET = 300_000_000  # parameters: the SD 1.x UNet has 860M, sd-tiny and the test models a few million
TOP_LEVELS = 2  # resolution levels whose transformer blocks recompute (SD 1.x at 256 px: 32x32 and 16x16 latents)


@dataclass(frozen=True)
class MemoryChoice:
    on: bool
    reason: str

    @property
    def name(self) -> str:
        return "low" if self.on else "default"


def choose(setting: str, device_type: str, precision: str, unet_params: int, compile: bool = False) -> MemoryChoice:
    """`auto` / `on` / `off` -> whether the step saves memory as above, and why."""
    if setting == "on":
        return MemoryChoice(True, "train.low_memory = on")
    if setting == "off":
        return MemoryChoice(False, "train.low_memory = off")
    if device_type != "cpu":
        return MemoryChoice(False, f"auto: off on {device_type} (measured for the CPU step only)")
    if precision != "no":
        return MemoryChoice(False, f"auto: off for {precision} autocast (measured in fp32 only)")
    if compile:
        return MemoryChoice(False, "auto: off with train.compile (measured in eager mode only)")
    if unet_params < LARGE_UNET:
        return MemoryChoice(False, f"auto: off for a UNet of {unet_params / 1e6:.0f}M parameters (small: nothing "
                                   "to gain)")
    return MemoryChoice(True, f"auto: on for a {unet_params / 1e6:.0f}M-parameter UNet on the CPU (frozen "
                              "convolutions keep no input, top-level transformer blocks recomputed, heap trimmed: "
                              "a lower peak RSS for ~20% more time; train.low_memory = off to disable)")


# ----------------------------------------------------------------------------- frozen convolutions

class _FrozenConv2d(torch.autograd.Function):
    """conv2d whose weight and bias are frozen: backward computes only the input gradient, so only the
    (frozen, already resident) weight is kept, not the input."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.input_shape, ctx.conf = x.shape, (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        grad_input = torch.nn.grad.conv2d_input(ctx.input_shape, weight, grad, stride, padding, dilation, groups)
        return grad_input, None, None, None, None, None, None


class FrozenConvInputs(TorchFunctionMode):
    """A `with` block in which conv2d calls with a frozen weight (and bias) and an input that needs a
    gradient run as _FrozenConv2d; every other call runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d or func is torch.conv2d:
            call = _frozen_call(*args, **kwargs)
            if call is not None:
                return _FrozenConv2d.apply(*call)
        return func(*args, **kwargs)


def _frozen_call(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """The arguments for _FrozenConv2d, or None when the call is not a frozen convolution of an input
    that needs a gradient (then autograd's own convolution runs)."""
    frozen = not weight.requires_grad and (bias is None or not bias.requires_grad)
    if not (frozen and x.requires_grad and torch.is_grad_enabled()) or isinstance(padding, str):
        return None
    return x, weight, bias, stride, padding, dilation, groups


# ----------------------------------------------------------------------------- recomputation, heap

def apply(unet: nn.Module, checkpoint_everything: bool) -> int:
    """Make `unet`'s training step low-memory: recomputation (`enable_checkpointing`) and heap trims
    at its block boundaries (`trim_between_blocks`); returns how many modules recompute."""
    trim_between_blocks(unet)
    return enable_checkpointing(unet, checkpoint_everything)


def recompute(module: nn.Module, *args):
    """diffusers' gradient-checkpointing function for a low-memory step: torch's non-reentrant
    checkpoint whose recomputation runs under FrozenConvInputs like the forward did (the two must save
    the same tensors)."""
    return checkpoint(module.__call__, *args, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), FrozenConvInputs()))


def enable_checkpointing(unet: nn.Module, everywhere: bool, levels: int = TOP_LEVELS) -> int:
    """Gradient checkpointing with `recompute`: everywhere (train.gradient_checkpointing), else only for
    the transformer blocks of the UNet's first `levels` down and last `levels` up blocks; returns how
    many modules recompute. A no-op for a UNet without diffusers' checkpointing."""
    if not getattr(unet, "_supports_gradient_checkpointing", False):
        return 0
    unet.enable_gradient_checkpointing(recompute)
    blocks = [*unet.down_blocks[:levels], *unet.up_blocks[len(unet.up_blocks) - levels:]]
    top = {id(m) for block in blocks for m in getattr(block, "attentions", [])}
    for module in unet.modules():
        if hasattr(module, "gradient_checkpointing") and id(module) not in top and not everywhere:
            module.gradient_checkpointing = False
    return sum(1 for m in unet.modules() if getattr(m, "gradient_checkpointing", False))


def trim_between_blocks(unet: nn.Module) -> None:
    """Trim the heap after each down/mid/up block's forward and again when backward reaches that
    block's output, while gradients are on (validation and sampling run no_grad: untouched)."""
    blocks = [*getattr(unet, "down_blocks", []), getattr(unet, "mid_block", None), *getattr(unet, "up_blocks", [])]
    for block in blocks:
        if block is not None:
            block.register_forward_hook(_trim_hook)


def _trim_hook(module: nn.Module, inputs, output) -> None:
    if not torch.is_grad_enabled():
        return
    trim_heap()
    out = output[0] if isinstance(output, tuple) else output  # down blocks: (hidden states, skip outputs)
    if isinstance(out, torch.Tensor) and out.requires_grad:
        out.register_hook(_trim_grad)


def _trim_grad(grad: torch.Tensor) -> None:
    trim_heap()  # returns None: the gradient passes unchanged


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_TRIM = _malloc_trim()


def trim_heap() -> None:
    """Give glibc's free heap pages back to the system (no-op elsewhere)."""
    if _TRIM is not None:
        _TRIM(0)


def forward_mode(on: bool):
    """The context of the step's forward: FrozenConvInputs when on."""
    return FrozenConvInputs() if on else contextlib.nullcontext()
