import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import sdlora
from sdlora.config import RunConfig, SourceConfig
from sdlora.errors import SdloraError
from sdlora.lora import inject, lora_modules
from sdlora.models import tiny_components
from sdlora.train.export import (base_norm, caption_warning, delta_norm, lora_filenames, lora_metadata, run_name,
                                 save_lora, tag_frequency, uncaptioned)


@pytest.fixture
def lora_model():
    c = tiny_components(0)
    inject(c.unet, "unet-attn", rank=2)
    inject(c.text_encoder, "text-encoder", rank=2)
    return c


def test_metadata_has_kohya_fields():
    cfg = RunConfig()
    cfg.lora.rank, cfg.train.seed, cfg.data.resolution = 8, 7, 256
    summary = {"images": 5, "class_images": 2, "sources": [{"path": "/d", "images": 5, "items": 5}]}
    meta = lora_metadata(cfg, step=100, epoch=3, dataset={**summary, "tag_frequency": {"d": {"a cat": 5}}},
                         base="sd14", started=1.0)
    assert "ss_network_dim" not in meta and meta["ss_seed"] == "7"  # rank/alpha: from the tensors (save_lora)
    assert meta["modelspec.resolution"] == "256x256" and meta["sdlora_version"] == sdlora.__version__
    assert json.loads(meta["ss_tag_frequency"]) == {"d": {"a cat": 5}}
    assert "tag_frequency" not in json.loads(meta["sdlora_dataset"])  # said once
    assert meta["ss_steps"] == "100" and meta["ss_epoch"] == "3" and meta["ss_resolution"] == "(256, 256)"
    assert meta["ss_sd_model_name"] == "sd14" and meta["ss_learning_rate"] == "0.0001"
    assert json.loads(meta["ss_dataset_dirs"]) == {"/d": {"n_repeats": 1, "img_count": 5}}
    folders = {"folders": {"10_sks": {"repeats": 10, "images": 3}, "d": {"repeats": 1, "images": 2}}}
    meta = lora_metadata(cfg, step=1, epoch=1, dataset={**summary, **folders}, base="sd14", started=1.0)
    assert json.loads(meta["ss_dataset_dirs"]) == {"10_sks": {"n_repeats": 10, "img_count": 3},
                                                   "d": {"n_repeats": 1, "img_count": 2}}
    assert json.loads(meta["sdlora_dataset"])["class_images"] == 2
    assert all(isinstance(v, str) for v in meta.values())


def test_filenames_per_format():
    cfg = RunConfig()
    cfg.save.name, cfg.save.formats = "me", ["kohya", "diffusers", "kohya"]
    assert lora_filenames(cfg) == {"kohya": "me.safetensors", "diffusers": "me.diffusers.safetensors"}
    assert lora_filenames(cfg, 500) == {"kohya": "me-000500.safetensors", "diffusers": "me-000500.diffusers.safetensors"}


def test_files_are_named_after_the_run_folder_unless_named(tmp_path):
    cfg = RunConfig()
    cfg.save.output_dir = str(tmp_path / "runs" / "first")
    assert cfg.save.name == "" and run_name(cfg) == "first"
    assert lora_filenames(cfg) == {"kohya": "first.safetensors"}
    cfg.save.output_dir = "."
    assert run_name(cfg) == Path.cwd().name


def test_every_format_carries_the_ranks_of_its_tensors(lora_model, tmp_path):
    """ss_network_dim/alpha were the config's lora.rank in diffusers/native files (wrong with conv rank or
    overrides); now every format says what the tensors hold (rank 2 here, lora.rank 8, alpha default)."""
    cfg = RunConfig()
    cfg.lora.rank, cfg.save.formats = 8, ["kohya", "diffusers", "native"]
    meta = lora_metadata(cfg, step=1, epoch=0, dataset={}, base="tiny", started=0.0)
    for path in save_lora(tmp_path, lora_model, cfg, meta):
        with safe_open(str(path), framework="pt") as f:
            saved = f.metadata()
        assert saved["ss_network_dim"] == "2" and saved["ss_network_alpha"] == "2", path.name
        assert saved["modelspec.resolution"] == "512x512" and saved["sdlora_version"] == sdlora.__version__


def test_tag_frequency_and_the_missing_caption_warning(tmp_path):
    from sdlora.data import build_datasets
    from sdlora.models.tokenizer import load_tokenizer
    from .conftest import write_images

    write_images(tmp_path / "shapes", n=4)
    (tmp_path / "shapes" / "img0.txt").write_text("sks, a red square")
    cfg = RunConfig()
    cfg.data.sources = [SourceConfig(path=str(tmp_path / "shapes"))]
    cfg.data.resolution, cfg.data.bucket_step, cfg.data.min_bucket_side = 32, 32, 32
    train, _ = build_datasets(cfg.data, load_tokenizer(), seed=0)
    assert tag_frequency(train) == {"shapes": {"a red square": 2, "a green square": 1, "a blue square": 1, "sks": 1}}
    assert uncaptioned(train) == (0, 4) and caption_warning(train) is None
    for caption in (tmp_path / "shapes").glob("*.txt"):
        caption.unlink()
    cfg.data.sources[0].caption_prefix = "sks"
    train, _ = build_datasets(cfg.data, load_tokenizer(), seed=0)
    assert uncaptioned(train) == (4, 4) and tag_frequency(train) == {"shapes": {"sks": 4}}
    assert "none of the 4 training images has a caption" in caption_warning(train)


def test_save_writes_every_format_with_te_keys(lora_model, tmp_path):
    cfg = RunConfig()
    cfg.save.formats = ["kohya", "diffusers"]
    paths = save_lora(tmp_path, lora_model, cfg, {"ss_steps": "1"})
    assert [p.name for p in paths] == ["lora.safetensors", "lora.diffusers.safetensors"]
    with safe_open(str(paths[0]), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        down = next(k for k in keys if k.endswith(".lora_down.weight"))
        assert f.get_tensor(down).dtype == torch.float16  # save.precision default
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_") for k in keys)
    assert meta["ss_steps"] == "1"


def test_non_finite_or_fp16_overflowing_lora_is_not_written(lora_model, tmp_path):
    cfg = RunConfig()
    save_lora(tmp_path, lora_model, cfg, {})
    good = (tmp_path / "lora.safetensors").read_bytes()
    wrapper = next(iter(lora_modules(lora_model.unet).values()))
    with torch.no_grad():
        wrapper.adapters["default"].up.weight[0, 0] = 1e6  # finite in fp32, inf in fp16
    with pytest.raises(SdloraError, match="NaN/inf"):
        save_lora(tmp_path, lora_model, cfg, {})
    assert (tmp_path / "lora.safetensors").read_bytes() == good


def test_delta_norm_zero_until_up_moves(lora_model):
    assert delta_norm(lora_model) == 0.0 and base_norm(lora_model) > 0
    wrapper = next(iter(lora_modules(lora_model.unet).values()))
    with torch.no_grad():
        wrapper.adapters["default"].up.weight.fill_(0.01)
    expected = wrapper.delta_weight("default").norm().item()
    assert delta_norm(lora_model) == pytest.approx(expected)


def test_a_loha_run_saves_with_lycoris_metadata(tmp_path):
    c = tiny_components(0)
    inject(c.unet, "unet-attn", rank=2, algorithm="loha")
    cfg = RunConfig()
    cfg.lora.algorithm, cfg.save.formats = "loha", ["kohya", "native"]
    meta = lora_metadata(cfg, step=1, epoch=0, dataset={}, base="tiny", started=0.0)
    for path in save_lora(tmp_path, c, cfg, meta):
        with safe_open(str(path), framework="pt") as f:
            saved = f.metadata()
        assert saved["ss_network_module"] == "lycoris.kohya" and saved["ss_network_dim"] == "2", path.name
