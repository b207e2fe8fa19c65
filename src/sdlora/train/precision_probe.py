"""Whether bf16 autocast trains a large UNet faster than fp32 on this CPU, measured, not guessed.

CPU flags cannot tell (issue 19): with AVX512-BF16 (and AMX) bf16 autocast was 1.8x *slower* than fp32
on an Intel Xeon, 2.5x *faster* on an AMD Zen 4 EPYC (the full-size SD 1.4 UNet at 256 px, batch 1,
one thread: 2.03 against 5.12-5.21 s per step), and without those instructions it is emulated and
always slower (3.3x on an AVX2 EPYC). So `train.mixed_precision = "auto"` on a CPU with native bf16
times one block of the run's own UNet architecture (its first down block: the highest resolution,
where SD's step spends most of its time; random weights, no LoRA) forward and backward at the run's
latent size and batch, in fp32 and in bf16 as a bf16 run computes (weights in bf16, autocast), and
trains in bf16 only when that is clearly faster (BF16_MARGIN). It runs for a large UNet only
(>= PROBE_MIN_PARAMS: SD 1.x, ~5 s on 2 cores); small models (sd-tiny, the tests) stay in fp32, so
their results never depend on the machine.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from sdlora.train.convs import conv_kernels
from sdlora.train.lowmem import LARGE_UNET as PROBE_MIN_PARAMS  # one notion of an SD-sized UNet (300M)
BF16_MARGIN = 0.8  # bf16 is chosen when a step takes at most this share of fp32's time
TEXT_TOKENS = 77


@dataclass(frozen=True)
class ProbeResult:
    fp32_s: float
    bf16_s: float
    what: str  # the block and shape timed, for the log

    @property
    def bf16_faster(self) -> bool:
        return self.bf16_s <= BF16_MARGIN * self.fp32_s

    def describe(self) -> str:
        return f"{self.what}: fp32 {self.fp32_s:.2f} s, bf16 {self.bf16_s:.2f} s"


def probe_block(unet: nn.Module, batch: int, latent_hw: tuple[int, int], repeats: int = 2,
                native_convs: tuple[bool, bool] = (False, False)) -> ProbeResult:
    """Time `unet`'s first down block (an empty, meta-device UNet is fine: the block gets random weights
    of its own) forward + backward in fp32 and in bf16, with the convolution kernels each would train
    with (`native_convs` for fp32, bf16: train/convs.py); the best of `repeats` after one warm-up each."""
    block = unet.down_blocks[0].to_empty(device="cpu")
    _random_init(block)
    block.requires_grad_(False)
    config = unet.config
    channels = config.block_out_channels[0]
    x = torch.randn(batch, channels, *latent_hw)
    temb = torch.randn(batch, channels * 4)
    context = torch.randn(batch, TEXT_TOKENS, config.cross_attention_dim)
    with conv_kernels(native_convs[0]):
        fp32 = _best_time(block, x, temb, context, repeats, torch.float32)
    with conv_kernels(native_convs[1]):
        bf16 = _best_time(block.to(torch.bfloat16), x, temb, context, repeats, torch.bfloat16)
    what = f"{type(block).__name__} of {channels} channels at {latent_hw[0]}x{latent_hw[1]} latents, batch {batch}"
    return ProbeResult(fp32, bf16, what)


def _random_init(block: nn.Module) -> None:
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.02)
        for b in block.buffers():
            b.zero_()


def _best_time(block: nn.Module, x, temb, context, repeats: int, dtype: torch.dtype) -> float:
    best = float("inf")
    for i in range(repeats + 1):  # the first call is a warm-up (kernel selection, allocations)
        inp = x.to(dtype).requires_grad_(True)  # the step feeds the UNet in its weights' dtype
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = _forward(block, inp, temb.to(dtype), context.to(dtype))
        out.float().square().mean().backward()
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def _forward(block: nn.Module, x, temb, context) -> torch.Tensor:
    if getattr(block, "has_cross_attention", False):
        out = block(x, temb, encoder_hidden_states=context)
    else:
        out = block(x, temb)
    return out[0] if isinstance(out, tuple) else out
