"""End to end on the tiny model: outputs, learning, bitwise resume, the NaN guard, Ctrl-C."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sdlora.config import load_config
from sdlora.errors import SdloraError
from sdlora.formats import load_lora_file
from sdlora.train import train
from sdlora.train.checkpoint import find_checkpoints, load_state
from sdlora.train.guard import TrainingDiverged


def read_file(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_run_writes_kohya_lora_logs_samples_and_config(make_cfg, tiny_data):
    cfg = make_cfg(sets=['validation.prompts=["a red square"]', "save.every_n_steps=2", "log.tensorboard=true"])
    result = train(cfg)
    run = result.run_dir
    assert result.status == "done" and result.step == 4
    state, meta = read_file(run / "run.safetensors")
    assert state and all(k.startswith("lora_unet_") for k in state)
    suffixes = {k.split(".", 1)[1] for k in state}
    assert suffixes == {"lora_down.weight", "lora_up.weight", "alpha"}
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in state
    # unet-attn on the tiny UNet: 4 transformer blocks (down, mid, 2 up) x attn1/attn2 x q/k/v/out, 3 keys each
    assert len(state) == 4 * 2 * 4 * 3
    assert meta["ss_network_dim"] == "4" and meta["ss_steps"] == "4" and meta["ss_seed"] == "42"
    assert meta["ss_resolution"] == "(32, 32)" and meta["ss_sd_model_name"] == str(cfg.model.name)
    assert meta["ss_num_train_images"] == "6" and meta["modelspec.resolution"] == "32x32"
    assert json.loads(meta["ss_tag_frequency"]) == {Path(tiny_data).name: {"a red square": 2, "a green square": 2,
                                                                          "a blue square": 2}}
    lora, _, fmt = load_lora_file(run / "run.safetensors")  # our own reader round-trips it
    assert fmt == "kohya" and len(lora) == len(state)
    # resolved config, text log, TensorBoard events, sample grids, checkpoints
    assert load_config(run / "config.toml") == cfg
    log = (run / "train.log").read_text()
    assert "step 1: loss" in log and "step 4: loss" in log and "done: 4 steps" in log
    assert re.search(r"training [\d,]+ LoRA parameters in 32 UNet modules, 4 steps, batch 2, fp32 on the CPU\n", log)
    assert "convolutions native: auto: native on the CPU" in log  # the kernels the step ran, as chosen for it
    assert "memory default: auto: off for a UNet of" in log  # the tiny model's step is left as it was
    assert log.rstrip().endswith(f"The LoRA is {run / 'run.safetensors'}")
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "logs").iterdir())
    assert (run / "samples" / "step-000000-base.png").is_file() and (run / "samples" / "step-000004.png").is_file()
    assert [c.step for c in find_checkpoints(run)] == [2, 4]
    assert (run / "checkpoints" / "step-000002" / "run-000002.safetensors").is_file()
    assert not list(run.rglob("*.tmp"))
    assert result.delta_norm > 0 and not result.warnings


def test_validation_loss_decreases_over_50_steps(make_cfg):
    cfg = make_cfg(**{"train.steps": 50, "train.lr": 5e-3, "data.validation_split": 0.34,
                      "validation.loss_every_n_steps": 25})
    losses = train(cfg).validation_losses
    assert sorted(losses) == [0, 25, 50]
    assert losses[50] < losses[25] < losses[0]
    assert losses[50] < 0.95 * losses[0]


def _interrupt_at(step):
    def hook(done, result):
        if done == step:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the handler only sets a flag
    return hook


def test_interrupted_and_resumed_run_equals_uninterrupted_bitwise(make_cfg, tmp_path):
    flags = {"train.steps": 5, "train.grad_accum": 2, "train.lr_scheduler": "cosine", "train.warmup_steps": 1,
             "lora.dropout": 0.1, "train.noise_offset": 0.05, "train.min_snr_gamma": 5.0}
    assert train(make_cfg(**flags, **{"save.output_dir": str(tmp_path / "full")})).step == 5
    parted = make_cfg(**flags, **{"save.output_dir": str(tmp_path / "parted")})
    first = train(parted, on_step=_interrupt_at(2))
    assert first.status == "interrupted" and first.step == 2
    assert f"to continue:\n  sdlora train --resume {tmp_path / 'parted'}" in (tmp_path / "parted" / "train.log").read_text()
    assert [c.step for c in find_checkpoints(tmp_path / "parted")] == [2]
    second = train(parted, resume="latest")
    assert second.status == "done" and second.step == 5
    a = load_state(find_checkpoints(tmp_path / "full")[-1])["lora"]
    b = load_state(find_checkpoints(tmp_path / "parted")[-1])["lora"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, fp32
    fa, _ = read_file(tmp_path / "full" / "full.safetensors")
    fb, _ = read_file(tmp_path / "parted" / "parted.safetensors")
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


def test_nan_loss_stops_with_message_and_keeps_the_good_lora(make_cfg):
    good = train(make_cfg(**{"train.steps": 2}))
    lora_bytes = (good.run_dir / "run.safetensors").read_bytes()
    state_bytes = (good.run_dir / "checkpoints" / "step-000002" / "state.pt").read_bytes()
    bad = make_cfg(**{"train.steps": 10, "train.max_nonfinite_steps": 3})
    bad.train.noise_offset = float("nan")  # past the config's checks (which refuse it): every loss is NaN
    with pytest.raises(TrainingDiverged, match=r"3 consecutive steps had a NaN/inf loss.*last good checkpoint"):
        train(bad)  # in the same run folder
    assert (good.run_dir / "run.safetensors").read_bytes() == lora_bytes
    assert [c.step for c in find_checkpoints(good.run_dir)] == [2]
    assert (good.run_dir / "checkpoints" / "step-000002" / "state.pt").read_bytes() == state_bytes
    log = (good.run_dir / "train.log").read_text()
    assert "[skipped: non-finite]" in log and "ERROR stopped: stopped at step" in log  # how the run ended


def test_no_effect_warning_when_lora_does_not_change(make_cfg):
    result = train(make_cfg(**{"train.steps": 2, "train.lr": 0.0}))
    assert result.delta_norm == 0.0
    assert any("LoRA changes nothing" in w for w in result.warnings)
    assert "LoRA changes nothing" in (result.run_dir / "train.log").read_text()


def test_dreambooth_bf16_checkpointing_text_encoder_dora_conv_run(make_cfg, tiny_data, tmp_path):
    """Many options at once: class images generated then trained with prior preservation, bf16 autocast
    with bf16 frozen weights and fp32 LoRA, gradient checkpointing, text-encoder LoRA (text not cached),
    DoRA + LoCon, LoRA+, cosine-with-restarts, uncached latents."""
    classes = tmp_path / "class"
    sets = [f'data.sources = [{{path = "{tiny_data}", prompt = "sks square"}}, '
            f'{{path = "{classes}", role = "class", prompt = "a square", num_images = 2}}]']
    cfg = make_cfg(sets=sets, data=[], **{
        "train.mixed_precision": "bf16", "train.gradient_checkpointing": True, "lora.train_text_encoder": True,
        "lora.dora": True, "lora.conv": True, "train.loraplus_ratio": 4.0, "train.lr_scheduler": "cosine_with_restarts",
        "train.lr_cycles": 2, "data.cache_latents": "off", "train.steps": 2})
    seen = []
    result = train(cfg, on_step=lambda step, r: seen.append(r))
    assert result.status == "done" and len(list(classes.glob("class-*.png"))) == 2
    assert all(not r.skipped for r in seen)
    state, meta = read_file(result.run_dir / "run.safetensors")
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in state)
    assert any(k.endswith(".dora_scale") for k in state)
    assert any("resnets_0_conv1" in k for k in state)
    assert meta["ss_num_reg_images"] == "2" and meta["ss_mixed_precision"] == "bf16"
    saved = load_state(find_checkpoints(result.run_dir)[-1])["lora"]
    assert all(t.dtype == torch.float32 for t in saved.values())  # trainable weights stay fp32


def test_channels_last_and_compiled_unet_train_the_same_lora(make_cfg, tmp_path):
    """train.channels_last and train.compile change how the UNet runs, not what it learns or the
    names it saves under (aot_eager: dynamo and autograd tracing without code generation)."""
    fast = train(make_cfg(**{"save.output_dir": str(tmp_path / "fast"), "train.channels_last": True,
                             "train.compile": True, "train.compile_backend": "aot_eager", "lora.conv": True}))
    conv = train(make_cfg(**{"save.output_dir": str(tmp_path / "conv"), "lora.conv": True}))
    assert fast.status == conv.status == "done"
    a, _ = read_file(conv.run_dir / "conv.safetensors")
    b, _ = read_file(fast.run_dir / "fast.safetensors")
    assert a.keys() == b.keys() and any("_resnets_" in k for k in a)  # conv adapters: channels-last matters
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-5)


def test_unknown_compile_backend_names_the_key_before_loading(make_cfg):
    cfg = make_cfg(**{"train.compile": True, "train.compile_backend": "nope"})
    with pytest.raises(SdloraError, match="train.compile_backend: 'nope'"):
        train(cfg)
    assert not (Path(cfg.save.output_dir) / "train.log").exists()


def test_a_failed_build_releases_the_log_file(make_cfg, monkeypatch):
    import sdlora.train.build as build

    def fail(*args, **kwargs):
        raise SdloraError("broken on purpose")

    monkeypatch.setattr(build, "speed_up_unet", fail)  # fails after the model and data are loaded
    cfg = make_cfg()
    with pytest.raises(SdloraError, match="broken on purpose"):
        train(cfg)
    assert "ERROR stopped: broken on purpose" in (Path(cfg.save.output_dir) / "train.log").read_text()
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("sdlora").handlers)


@pytest.mark.parametrize("floor, saved", [(0, [3, 6, 8]), (4, [6, 8])])
def test_epoch_checkpoints_wait_for_save_min_epoch_steps(make_cfg, floor, saved):
    """6 images at batch 2: an epoch every 3 steps. With save.min_epoch_steps = 4 the epoch checkpoint at
    step 3 is skipped (3 steps since the start), the one at step 6 is written; the final step always is."""
    cfg = make_cfg(**{"train.steps": 8, "save.every_n_epochs": 1, "save.min_epoch_steps": floor,
                      "save.keep_last": 0, "save.save_state": False})
    result = train(cfg)
    assert [c.step for c in find_checkpoints(result.run_dir)] == saved
    assert (result.run_dir / "run.safetensors").is_file()
