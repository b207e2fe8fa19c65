"""The low-memory CPU training step (src/sdlora/train/lowmem.py): same results, fewer saved tensors."""
import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sdlora.config import load_config
from sdlora.errors import SdloraError
from sdlora.train import lowmem
from sdlora.train.convs import ConvChoice, conv_kernels
from sdlora.train.lowmem import FrozenConvInputs, MemoryChoice, choose, enable_checkpointing
from sdlora.train.step import train_step
from tests.train.test_step import _cached_batch, _setup, acc  # noqa: F401 (the accelerator fixture)

SD14_UNET = 859_520_964


def test_auto_is_on_only_for_a_large_unet_on_the_cpu_in_fp32():
    assert choose("auto", "cpu", "no", SD14_UNET).on and "860M" in choose("auto", "cpu", "no", SD14_UNET).reason
    assert not choose("auto", "cpu", "no", 2_000_000).on  # sd-tiny, the test models: unchanged
    assert not choose("auto", "cuda", "no", SD14_UNET).on and not choose("auto", "cpu", "bf16", SD14_UNET).on
    assert not choose("auto", "cpu", "no", SD14_UNET, compile=True).on
    assert choose("on", "cpu", "no", 1).on and not choose("off", "cpu", "no", SD14_UNET).on
    assert load_config(None, []).train.low_memory == "auto"
    with pytest.raises(SdloraError, match="train.low_memory"):
        load_config(None, ["train.low_memory=yes"])


def saved_bytes(fn):
    """(fn's result, bytes of the tensors autograd saved for backward while it ran)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


@pytest.mark.parametrize("padding,stride,groups", [(1, 1, 1), (0, 2, 2)])
def test_frozen_convolution_keeps_no_input_and_gives_the_same_input_gradient(padding, stride, groups):
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(8, 4 // groups, 3, 3, generator=g), torch.randn(8, generator=g)
    x = torch.randn(2, 4, 9, 9, generator=g, requires_grad=True)
    grad_out = torch.randn(2, 8, (9 + 2 * padding - 3) // stride + 1, (9 + 2 * padding - 3) // stride + 1,
                           generator=g)
    grads, saved = [], []
    for mode in (FrozenConvInputs, contextlib.nullcontext):
        with conv_kernels(True):  # the native kernels the CPU fp32 step runs
            with mode():
                y, n = saved_bytes(lambda: F.conv2d(x, weight, bias, stride, padding, 1, groups))
            (gx,) = torch.autograd.grad(y, x, grad_out)
        grads.append(gx)
        saved.append(n)
    assert torch.equal(grads[0], grads[1])
    assert saved[1] >= x.numel() * 4 and saved[0] < x.numel() * 4  # autograd keeps x; the frozen version does not


def test_trainable_convolution_runs_unchanged():
    w = torch.randn(3, 3, 3, 3, requires_grad=True)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    with FrozenConvInputs():
        y = F.conv2d(x, w, padding=1)
    assert type(y.grad_fn).__name__ == "ConvolutionBackward0"  # the weight needs its gradient: autograd's own


def test_checkpointing_covers_only_the_top_levels_unless_everywhere():
    from sdlora.models.skeleton import tiny_unet

    unet = tiny_unet(0)
    top = len(getattr(unet.down_blocks[0], "attentions", [])) + len(getattr(unet.up_blocks[-1], "attentions", []))
    assert top > 0 and enable_checkpointing(unet, everywhere=False, levels=1) == top
    assert enable_checkpointing(unet, everywhere=True) > top


def one_step(acc, low: bool):  # noqa: F811
    """(loss, LoRA weights after one step, bytes saved for backward, heap trims) of the tiny UNet's step."""
    torch.manual_seed(0)
    c, ctx, opt, sched = _setup()
    ctx = dataclasses.replace(ctx, convs=ConvChoice(True, "test"), memory=MemoryChoice(low, "test"))
    if low:
        lowmem.apply(c.unet, checkpoint_everything=False)
    trims = [0]
    real = lowmem._TRIM
    lowmem._TRIM = lambda pad: trims.__setitem__(0, trims[0] + 1)  # count the trims (the real one is glibc's)
    try:
        result, saved = saved_bytes(lambda: train_step(acc, ctx, [_cached_batch()], opt, sched, 0))
    finally:
        lowmem._TRIM = real
    return result.loss, [p.detach().clone() for p in ctx.params], saved, trims[0]


def test_low_memory_step_trains_exactly_like_the_default_and_saves_less(acc):  # noqa: F811
    loss, weights, saved, trims = one_step(acc, low=False)
    loss_low, weights_low, saved_low, trims_low = one_step(acc, low=True)
    assert loss_low == loss
    for a, b in zip(weights_low, weights):
        assert torch.equal(a, b)
    assert saved_low < 0.8 * saved  # frozen convolutions' inputs and the top level's activations are not kept
    assert trims == 0 and trims_low > 2  # before the forward and backward, and between the blocks
    lowmem.trim_heap()  # the real glibc call (a no-op where there is none)
