"""Which convolution kernels the training step runs on the CPU (src/sdlora/train/convs.py)."""
import dataclasses

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from sdlora.config import load_config
from sdlora.errors import SdloraError
from sdlora.train.convs import ConvChoice, choose, conv_kernels
from sdlora.train.step import train_step
from tests.train.test_step import _cached_batch, _setup, acc  # noqa: F401 (the accelerator fixture)


def test_auto_is_native_on_the_cpu_and_never_touches_a_gpu():
    assert choose("auto", "cpu").native and "auto" in choose("auto", "cpu").reason
    assert choose("native", "cpu").native and not choose("onednn", "cpu").native
    assert not any(choose(s, "cuda").native for s in ("auto", "native", "onednn"))
    assert not choose("auto", "cpu", "bf16").native and choose("native", "cpu", "bf16").native
    assert load_config(None, []).train.conv_backend == "auto"
    with pytest.raises(SdloraError, match="train.conv_backend"):
        load_config(None, ["train.conv_backend=mkl"])


def test_conv_kernels_switch_onednn_off_inside_and_restore_it():
    before = torch.backends.mkldnn.enabled
    with conv_kernels(True):
        assert torch.backends.mkldnn.enabled is False
    assert torch.backends.mkldnn.enabled == before
    with pytest.raises(RuntimeError), conv_kernels(True):
        raise RuntimeError("a failing step")
    assert torch.backends.mkldnn.enabled == before
    with conv_kernels(False):
        assert torch.backends.mkldnn.enabled == before


def conv_ops(acc, native: bool):  # noqa: F811
    """(loss, LoRA weights after one step, the convolution operators the step ran)."""
    torch.manual_seed(0)
    _, ctx, opt, sched = _setup()
    ctx = dataclasses.replace(ctx, convs=ConvChoice(native, "test"))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = train_step(acc, ctx, [_cached_batch()], opt, sched, 0)
    ops = {e.name for e in prof.events() if "conv" in e.name}
    return result.loss, [p.detach().clone() for p in ctx.params], ops


def test_native_step_runs_no_onednn_convolution_and_trains_the_same(acc):  # noqa: F811
    loss_dnn, weights_dnn, ops_dnn = conv_ops(acc, native=False)
    loss_nat, weights_nat, ops_nat = conv_ops(acc, native=True)
    assert "aten::mkldnn_convolution" in ops_dnn  # the tiny UNet's 3x3 convs use oneDNN by default
    assert "aten::mkldnn_convolution" not in ops_nat and any("slow_conv2d" in op for op in ops_nat)
    assert loss_nat == pytest.approx(loss_dnn, rel=1e-5)
    for a, b in zip(weights_nat, weights_dnn):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
