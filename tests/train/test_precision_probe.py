"""`auto` precision on the CPU: bf16 only where a timed probe of the run's UNet says it is clearly faster
(train/precision_probe.py, train/precision.py, train/setup.py)."""
import pytest

from sdlora.config import RunConfig
from sdlora.models import skeleton
from sdlora.train import precision, setup
from sdlora.train.precision_probe import BF16_MARGIN, ProbeResult, probe_block


def test_the_probe_times_a_block_of_the_unet_both_ways():
    """A real timing of the first down block (random weights), forward and backward, fp32 and bf16."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        unet = skeleton.tiny_components(seed=0).unet  # meta: the probe gives the block weights of its own
    result = probe_block(unet, batch=1, latent_hw=(8, 8), repeats=1)
    assert result.fp32_s > 0 and result.bf16_s > 0
    assert "DownBlock2D of" in result.what and "8x8 latents, batch 1" in result.describe()


@pytest.mark.parametrize("fp32, bf16, mode", [(1.0, 0.5, "bf16"), (1.0, BF16_MARGIN, "bf16"), (1.0, 0.9, "no"),
                                              (1.0, 1.8, "no")])
def test_auto_trains_in_bf16_only_when_the_probe_says_it_is_clearly_faster(monkeypatch, fp32, bf16, mode):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    choice = precision.choose("auto", "cpu", probe=lambda: ProbeResult(fp32, bf16, "a block"))
    assert choice.mode == mode and "a block: fp32 1.00 s" in choice.reason
    assert precision.choose("auto", "cpu").mode == "no"  # not timed (a small UNet): fp32


def test_without_native_bf16_nothing_is_timed(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)

    def probe():
        raise AssertionError("timed on a CPU that emulates bf16")

    choice = precision.choose("auto", "cpu", probe=probe)
    assert choice.mode == "no" and "no native bf16" in choice.reason


def test_a_probe_that_fails_leaves_the_run_in_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)

    def probe():
        raise TypeError("forward() got an unexpected keyword argument")

    choice = precision.choose("auto", "cpu", probe=probe)
    assert choice.mode == "no" and "timing bf16 failed: TypeError: forward() got" in choice.reason


def _cfg(model: str, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name, cfg.data.resolution = model, 64
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.fixture
def native_cpu(monkeypatch):
    """A CPU with native bf16 and a probe that reports bf16 2x faster (records what it was asked)."""
    calls = []
    monkeypatch.setattr(setup, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(setup, "device_type", lambda: "cpu")

    def fake_probe(unet, batch, latent_hw, native_convs):
        calls.append((type(unet).__name__, batch, latent_hw, native_convs))
        return ProbeResult(1.0, 0.5, "the block")

    monkeypatch.setattr(setup, "probe_block", fake_probe)
    return calls


def test_a_small_unet_is_not_timed_and_trains_in_fp32(native_cpu):
    choice = setup.run_precision(_cfg("tiny"))
    assert choice.mode == "no" and native_cpu == []


def test_a_large_unet_is_timed_at_the_runs_latent_size(native_cpu, monkeypatch):
    monkeypatch.setattr(setup, "PROBE_MIN_PARAMS", 0)  # sd-tiny stands in for a large UNet
    choice = setup.run_precision(_cfg("tiny", batch_size=3))
    assert choice.mode == "bf16" and "2.0x faster" in choice.reason
    # 64 px / SD's 8x VAE; the convolutions each precision trains with (native in fp32, oneDNN in bf16)
    assert native_cpu == [("UNet2DConditionModel", 3, (8, 8), (True, False))]


def test_a_resumed_auto_run_keeps_the_precision_it_started_in(native_cpu, monkeypatch):
    monkeypatch.setattr(setup, "PROBE_MIN_PARAMS", 0)
    assert setup.run_precision(_cfg("tiny"), resumed="no").mode == "no" and native_cpu == []
    assert setup.run_precision(_cfg("tiny"), resumed="bf16").mode == "bf16"
    assert setup.run_precision(_cfg("tiny", mixed_precision="no"), resumed="bf16").mode == "no"  # as configured


def test_several_processes_are_not_timed(native_cpu, monkeypatch):
    """Each process would time on its own and might disagree: fp32."""
    monkeypatch.setattr(setup, "PROBE_MIN_PARAMS", 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert setup.run_precision(_cfg("tiny")).mode == "no" and native_cpu == []


def test_resumed_precision_is_read_from_the_checkpoint(tmp_path):
    """The state.pt of the run to resume says which mode `auto` resolved to (the loop writes it: test_ema)."""
    from sdlora.train import checkpoint as ckpt
    from sdlora.train.state import STATE_VERSION

    folder = ckpt.checkpoint_dir(tmp_path, 3)
    folder.mkdir(parents=True)
    ckpt.atomic_torch_save(folder / ckpt.STATE_FILE, {"version": STATE_VERSION, "step": 3, "precision": "bf16"})
    cfg = _cfg("tiny")
    cfg.save.output_dir = str(tmp_path)
    assert setup.resumed_precision(cfg, "latest") == "bf16"
    assert setup.resumed_precision(cfg, None) is None
    cfg.train.mixed_precision = "no"
    assert setup.resumed_precision(cfg, "latest") is None  # only `auto` is resolved again
    cfg.train.mixed_precision, cfg.save.output_dir = "auto", str(tmp_path / "nothing")
    assert setup.resumed_precision(cfg, "latest") is None  # the run reports the bad --resume itself
