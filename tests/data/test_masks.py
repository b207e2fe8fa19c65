"""Loss masks: where they come from, that they follow the pixels exactly, and every way one can be wrong."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.config import SourceConfig, load_config
from sdlora.data import BucketBatchSampler, build_datasets, collate
from sdlora.data.masks import latent_mask, mask_file
from sdlora.errors import SdloraError


def stripes(w: int, h: int, seed: int) -> np.ndarray:
    """A grey pattern (H, W) uint8 with black, white and grey regions, different per seed."""
    rng = np.random.default_rng(seed)
    cols = rng.choice(np.array([0, 96, 255], np.uint8), size=w)
    rows = rng.choice(np.array([0, 255], np.uint8), size=h)
    return np.maximum(cols[None, :], rows[:, None]).astype(np.uint8)


def block_means(grey: torch.Tensor, factor: int) -> torch.Tensor:
    """(H, W) values in [0, 1] -> (1, H/f, W/f) block means by torch's average pooling (the reference)."""
    return torch.nn.functional.avg_pool2d(grey[None, None].double(), factor)[0].float()


def pixel_channel(sample: dict) -> torch.Tensor:
    """The red channel of a sample's pixels back in [0, 1]."""
    return (sample["pixel_values"][0] + 1) / 2


@pytest.fixture()
def painted(tmp_path, mk):
    """Images whose pixels ARE their mask (grey pattern in every channel) plus the mask files, so the
    mask seen in training can be checked against the pixels seen in training."""
    src, masks = tmp_path / "img", tmp_path / "masks"
    for i, (w, h) in enumerate([(96, 64), (64, 96), (80, 80)]):
        grey = stripes(w, h, i)
        mk.save(src / f"{i}.png", Image.fromarray(np.dstack([grey] * 3)))
        mk.save(masks / f"{i}.png", Image.fromarray(grey, "L"))
    return src, masks


def test_latent_mask_is_the_block_mean_and_flips_exactly():
    grey = stripes(32, 16, 5)
    got = latent_mask(Image.fromarray(grey, "L"), (32, 16), 4)
    torch.testing.assert_close(got, block_means(torch.from_numpy(grey) / 255.0, 4), atol=1e-6, rtol=0)
    flipped = latent_mask(Image.fromarray(grey[:, ::-1].copy(), "L"), (32, 16), 4)
    assert torch.equal(flipped, torch.flip(got, dims=[-1]))  # bitwise: the cache stores one and mirrors it
    assert torch.equal(latent_mask(None, (32, 16), 8), torch.ones(1, 2, 4))
    black = latent_mask(Image.new("L", (16, 16), 0), (16, 16), 8)
    assert torch.equal(black, torch.zeros(1, 2, 2))


@pytest.mark.parametrize("masks", ["folder", "alpha"])
def test_mask_follows_random_crop_and_flip_of_the_pixels(painted, mk, masks):
    src, mask_dir = painted
    if masks == "alpha":  # the same pattern as the alpha of a white image, composited on black
        for path in src.glob("*.png"):
            grey = np.asarray(Image.open(path))[..., 0]
            mk.save(path, Image.fromarray(np.dstack([np.full_like(grey, 255)] * 3 + [grey]), "RGBA"))
    cfg = mk.small_cfg(src, masks=masks, mask_dir=str(mask_dir), crop="random", flip=True, background="black")
    train, _ = build_datasets(cfg, None, seed=0, latent_factor=4)
    for epoch in range(3):
        train.set_epoch(epoch)
        for i in range(len(train)):
            sample = train[i]
            w, h = sample["bucket"]
            assert sample["loss_mask"].shape == (1, h // 4, w // 4) and sample["loss_mask"].dtype == torch.float32
            torch.testing.assert_close(sample["loss_mask"], block_means(pixel_channel(sample), 4), atol=2e-3, rtol=0)


def test_batches_carry_the_mask_only_when_masks_are_on(painted, mk):
    src, mask_dir = painted
    (mask_dir / "0.png").unlink()  # missing: trains everywhere
    mk.save(mask_dir / "1.png", Image.new("L", (64, 96), 0))  # black: contributes nothing
    on, _ = build_datasets(mk.small_cfg(src, masks="folder", mask_dir=str(mask_dir)), None, seed=0)
    off, _ = build_datasets(mk.small_cfg(src), None, seed=0)
    by_path = {Path(on.records[on.items[i]].path).name: on[i]["loss_mask"] for i in range(len(on))}
    assert torch.equal(by_path["0.png"], torch.ones_like(by_path["0.png"]))
    assert torch.equal(by_path["1.png"], torch.zeros_like(by_path["1.png"]))
    assert 0 < by_path["2.png"].mean() < 1
    for dataset, present in ((on, True), (off, False)):
        batches = [collate([dataset[i] for i in b]) for b in BucketBatchSampler(dataset, 2, seed=0)]
        assert all(("loss_mask" in b) == present for b in batches)
        assert all(b["loss_mask"].shape[:2] == (len(b["caption"]), 1) for b in batches if present)


def test_missing_masks_are_warned_and_nested_folders_are_followed(tmp_path, mk, caplog):
    src, masks = tmp_path / "src", tmp_path / "m"
    mk.rgb(src / "10_dog" / "a.png", 64, 64, seed=1)
    mk.rgb(src / "b.png", 64, 64, seed=2)
    mk.save(masks / "10_dog" / "a.png", Image.new("L", (64, 64), 0))
    assert mask_file(src, src / "10_dog" / "a.png", masks) == masks / "10_dog" / "a.png"
    with caplog.at_level(logging.WARNING, logger="sdlora.data"):
        train, _ = build_datasets(mk.small_cfg(src, masks="folder", mask_dir=str(masks)), None, seed=0)
    assert "1 of 2 images have no mask file and train on the whole image" in caplog.text
    means = {Path(train.records[r].path).name: train[i]["loss_mask"].mean().item() for i, r in enumerate(train.items)}
    assert means == {"a.png": 0.0, "b.png": 1.0}


def test_per_source_mask_dir_overrides_the_data_one(tmp_path, mk):
    a, b = tmp_path / "a", tmp_path / "b"
    mk.rgb(a / "x.png", 64, 64, seed=1)
    mk.rgb(b / "x.png", 64, 64, seed=2)  # the same stem in both sources
    mk.save(tmp_path / "ma" / "x.png", Image.new("L", (64, 64), 0))
    mk.save(tmp_path / "mb" / "x.png", Image.new("L", (64, 64), 255))
    cfg = mk.small_cfg(a, SourceConfig(path=str(b), mask_dir=str(tmp_path / "mb")), masks="folder",
                       mask_dir=str(tmp_path / "ma"))
    train, _ = build_datasets(cfg, None, seed=0)
    means = {train.records[r].source: train[i]["loss_mask"].mean().item() for i, r in enumerate(train.items)}
    assert means == {0: 0.0, 1: 1.0}


def test_unusable_masks_stop_the_build_with_one_line(tmp_path, mk):
    src, masks = tmp_path / "src", tmp_path / "m"
    mk.rgb(src / "a.png", 64, 48, seed=1)
    mk.save(masks / "a.png", Image.new("L", (48, 64), 255))  # drawn for the rotated image
    cfg = mk.small_cfg(src, masks="folder", mask_dir=str(masks))
    with pytest.raises(SdloraError, match=r"1 masks differ in size .*a.png is 48x64, .*a.png is 64x48"):
        build_datasets(cfg, None, seed=0)
    mk.write(masks / "a.png", b"not a png")
    with pytest.raises(SdloraError, match=r"1 mask files cannot be read \(e.g. .*a.png: not an image"):
        build_datasets(cfg, None, seed=0)


@pytest.mark.parametrize("where, key", [(None, "data.mask_dir"), ("nowhere", "data.mask_dir"),
                                        ("src/masks", "data.mask_dir"), ("src/file.png", "data.mask_dir")])
def test_bad_mask_folders_name_the_key(tmp_path, mk, where, key):
    mk.rgb(tmp_path / "src" / "file.png", 64, 64)
    if where == "src/masks":
        (tmp_path / where).mkdir()
    cfg = mk.small_cfg(tmp_path / "src", masks="folder", mask_dir=str(tmp_path / where) if where else None)
    with pytest.raises(SdloraError, match=key):
        build_datasets(cfg, None, seed=0)


def test_a_hidden_mask_folder_inside_the_source_is_not_trained_on(tmp_path, mk):
    mk.rgb(tmp_path / "a.png", 64, 64)
    mk.save(tmp_path / ".masks" / "a.png", Image.new("L", (64, 64), 0))
    train, _ = build_datasets(mk.small_cfg(tmp_path, masks="folder", mask_dir=str(tmp_path / ".masks")), None, seed=0)
    assert len(train.used_records()) == 1 and train[0]["loss_mask"].max() == 0


@pytest.mark.parametrize("override, key", [(["data.masks=yes"], "data.masks"), (["data.mask_dir=3"], "data.mask_dir"),
                                           (['data.sources=[{path="a", mask_dir=1}]'], r"data.sources\[0\].mask_dir")])
def test_mask_settings_are_validated(override, key):
    with pytest.raises(SdloraError, match=key):
        load_config(None, override)


def test_a_black_masked_image_gives_the_lora_exactly_zero_gradient(tmp_path, mk):
    """Through the whole path: mask file -> dataset -> collate -> the trainer's compute_loss -> backward.
    The same image without masks, or with a partly white mask, does move the LoRA."""
    from sdlora.config import TrainConfig
    from sdlora.data import vae_factor
    from sdlora.lora import inject, mark_only_lora_trainable
    from sdlora.models import tiny_components
    from sdlora.train import rng
    from sdlora.train.noise import NoiseSchedule
    from sdlora.train.step import StepContext, compute_loss

    src, masks = tmp_path / "img", tmp_path / "m"
    for name, seed in (("black", 1), ("half", 2)):
        mk.rgb(src / f"{name}.png", 32, 32, seed=seed)
    mk.save(masks / "black.png", Image.new("L", (32, 32), 0))
    mk.save(masks / "half.png", Image.fromarray(np.repeat([[0, 255]], 16, axis=1).repeat(32, axis=0).astype(np.uint8)))
    c = tiny_components(0)
    for m in c.modules().values():
        m.requires_grad_(False)
    inject(c.unet, "unet-attn", rank=2)
    mark_only_lora_trainable(c.unet)
    params = [p for p in c.unet.parameters() if p.requires_grad]
    ctx = StepContext(unet=c.unet, schedule=NoiseSchedule.from_config(c.scheduler.config), cfg=TrainConfig(),
                      device=torch.device("cpu"), weight_dtype=torch.float32, text_encoder=c.text_encoder,
                      vae=c.vae, params=params)

    def grads(masks_mode: str, name: str) -> list[torch.Tensor]:
        cfg = mk.small_cfg(src, masks=masks_mode, mask_dir=str(masks), resolution=32, buckets=False)
        train, _ = build_datasets(cfg, c.tokenizer, seed=0, latent_factor=vae_factor(c.vae))
        i = next(i for i, r in enumerate(train.items) if Path(train.records[r].path).stem == name)
        for p in params:
            p.grad = None
        compute_loss(ctx, collate([train[i]]), rng.generator(1, "mask")).backward()
        return [p.grad for p in params]

    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads("folder", "black"))
    assert any(torch.count_nonzero(g) > 0 for g in grads("off", "black"))
    assert any(torch.count_nonzero(g) > 0 for g in grads("folder", "half"))
