import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from sdlora.data import BucketBatchSampler, build_datasets, cache_latents, collate, encode_latents
from sdlora.data.cache import vae_fingerprint
from sdlora.errors import SdloraError
from sdlora.models.skeleton import tiny_vae


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(0).eval()


@pytest.fixture()
def folder(tmp_path, mk):
    for i in range(4):
        mk.rgb(tmp_path / "img" / f"{i}.png", 64 + 32 * (i % 2), 64, seed=i)
    return tmp_path / "img"


class EncodeCounter:
    """Counts VAE encoder calls (a forward hook: nothing is patched)."""

    def __init__(self, vae):
        self.calls = 0
        self.handle = vae.encoder.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


def test_memory_cache_matches_direct_encoding(folder, mk, vae):
    cfg = mk.small_cfg(folder)
    plain, _ = build_datasets(cfg, None, seed=0)
    cached, _ = build_datasets(cfg, None, seed=0)
    stats = cache_latents(cached, vae, mode="memory", progress=False)
    assert stats == {"computed": 4, "reused": 0, "failed": 0}
    for i in range(len(cached)):
        item, ref = cached[i], plain[i]
        assert "pixel_values" not in item and item["latents"].dtype == torch.float32
        w, h = item["bucket"]
        assert item["latents"].shape == (4, h // 2, w // 2)  # the tiny VAE downsamples by 2 (SD's by 8)
        with torch.no_grad():
            dist = vae.encode(ref["pixel_values"][None]).latent_dist
        mean, std, _ = cached.latents.get(cached.items[i], False)
        torch.testing.assert_close(mean.float(), dist.mean[0], atol=2e-2, rtol=1e-2)
        torch.testing.assert_close(std.float(), dist.std[0], atol=2e-2, rtol=1e-2)
        deviation = (item["latents"] / vae.config.scaling_factor - mean.float()) / std.float().clamp_min(1e-6)
        assert deviation.abs().max() < 8  # a sample of N(mean, std), scaled


def test_disk_cache_is_reused_then_invalidated_by_content_vae_flip_and_size(folder, tmp_path, mk, vae, caplog):
    cache_dir = tmp_path / "cache"

    def run(vae_=vae, **kw):
        ds, _ = build_datasets(mk.small_cfg(folder, **kw), None, seed=0)
        counter = EncodeCounter(vae_)
        stats = cache_latents(ds, vae_, mode="disk", cache_dir=cache_dir, progress=False, num_workers=kw.pop("w", 0))
        counter.handle.remove()
        return stats, counter.calls, ds

    stats, calls, ds = run()
    assert stats["computed"] == 4 and calls > 0 and len(list(cache_dir.glob("*.safetensors"))) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in cache_dir.iterdir()}
    stats, calls, ds = run()
    assert stats == {"computed": 0, "reused": 4, "failed": 0} and calls == 0
    assert {p: p.stat().st_mtime_ns for p in cache_dir.iterdir()} == mtimes
    assert ds[0]["latents"].shape[0] == 4
    mk.rgb(folder / "1.png", 96, 64, seed=99)  # same name and size, new content
    assert run()[0] == {"computed": 1, "reused": 3, "failed": 0}
    assert run(vae_=tiny_vae(1))[0]["computed"] == 4
    assert run(flip=True)[0]["computed"] == 4
    with caplog.at_level(logging.WARNING, logger="sdlora.data"):
        assert run(flip=True, crop="random")[0]["reused"] == 4  # random crop caches the center crop
    assert "center crop" in caplog.text
    assert run(resolution=48)[0]["computed"] == 4  # other buckets, other files


def test_flip_caches_the_encoded_mirror(folder, mk, vae):
    ds, _ = build_datasets(mk.small_cfg(folder, flip=True), None, seed=0)
    plain, _ = build_datasets(mk.small_cfg(folder), None, seed=0)
    cache_latents(ds, vae, progress=False)
    with torch.no_grad():
        ref = vae.encode(plain[0]["pixel_values"].flip(-1)[None]).latent_dist.mean[0]
    torch.testing.assert_close(ds.latents.get(ds.items[0], True)[0].float(), ref, atol=2e-2, rtol=1e-2)


def test_cache_worker_processes_and_a_file_failing_during_caching(folder, mk, vae, caplog):
    ds, _ = build_datasets(mk.small_cfg(folder), None, seed=0)
    broken = next(i for i, r in enumerate(ds.records) if r.path.endswith("2.png"))
    Path(ds.records[broken].path).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="sdlora.data"):
        stats = cache_latents(ds, vae, progress=False, num_workers=2)
    assert stats == {"computed": 3, "reused": 0, "failed": 1} and "skipping " in caplog.text and "2.png" in caplog.text
    assert broken not in ds.items and len(ds) == 3  # dropped before training, reported as skipped
    assert ds.summary()["skipped_by_reason"] == {"empty": 1}
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(ds, 2, seed=0), collate_fn=collate)
    assert sum(b["latents"].shape[0] for b in loader) == len(ds)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_an_image_alone_in_its_bucket_failing_at_caching_is_dropped_not_fatal(folder, tmp_path, mk, vae, mode):
    """It used to abort training with 'no image of bucket 128x32 can be loaded any more'."""
    mk.rgb(folder / "wide.png", 160, 40, seed=9)
    ds, _ = build_datasets(mk.small_cfg(folder), None, seed=0)
    wide = next(i for i, r in enumerate(ds.records) if r.path.endswith("wide.png"))
    bucket = ds.record_buckets[wide]
    assert [ds.record_buckets[r] for r in ds.items].count(bucket) == 1  # alone in its bucket
    Path(ds.records[wide].path).write_bytes(b"rewritten")
    stats = cache_latents(ds, vae, mode=mode, cache_dir=tmp_path / "c", progress=False)
    assert stats["failed"] == 1 and bucket not in ds.bucket_indices() and len(ds) == 4
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(ds, 2, seed=0), collate_fn=collate)
    assert sum(b["latents"].shape[0] for b in loader) == 4
    assert ds.summary()["skipped_by_reason"] == {"not_image": 1}


def test_no_decodable_image_at_caching_is_one_clear_error(folder, mk, vae):
    ds, _ = build_datasets(mk.small_cfg(folder), None, seed=0)
    for rec in ds.records:
        Path(rec.path).write_bytes(b"")
    with pytest.raises(SdloraError, match=r"no image of the train set can be decoded \(4 failed, e.g. .*0.png: empty"):
        cache_latents(ds, vae, progress=False)


def test_a_validation_set_left_empty_is_not_fatal(folder, mk, vae):
    train, val = build_datasets(mk.small_cfg(folder, validation_split=0.25), None, seed=0)
    Path(val.records[val.items[0]].path).write_bytes(b"")
    assert cache_latents(val, vae, progress=False)["failed"] == 1 and len(val) == 0
    assert list(BucketBatchSampler(val, 2, seed=0, shuffle=False)) == []
    assert cache_latents(train, vae, progress=False)["failed"] == 0


def test_disk_mode_needs_a_folder(folder, mk, vae):
    ds, _ = build_datasets(mk.small_cfg(folder), None, seed=0)
    with pytest.raises(ValueError, match="cache_dir"):
        cache_latents(ds, vae, mode="disk")
    assert cache_latents(ds, vae, mode="off") == {"computed": 0, "reused": 0, "failed": 0} and ds.latents is None


def test_vae_fingerprint_sees_any_weight_change(vae):
    before = vae_fingerprint(vae)
    assert vae_fingerprint(vae) == before
    with torch.no_grad():
        p = next(vae.parameters())
        p.view(-1)[5] += 1e-3
        assert vae_fingerprint(vae) != before
        p.view(-1)[5] -= 1e-3


def test_encode_latents_samples_and_scales(vae):
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    out = encode_latents(vae, x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = vae.encode(x).latent_dist.sample(torch.Generator().manual_seed(0)) * vae.config.scaling_factor
    torch.testing.assert_close(out, ref)
    assert out.shape == (2, 4, 16, 24)


def test_a_fifo_where_a_cache_file_should_be_is_recomputed_not_opened(folder, tmp_path, mk, vae):
    import os

    from sdlora.data.cache import cache_file

    ds, _ = build_datasets(mk.small_cfg(folder), None, seed=0)
    (tmp_path / "c").mkdir()
    os.mkfifo(cache_file(tmp_path / "c", ds.records[0], ds.record_buckets[0]))  # opening it would block
    stats = cache_latents(ds, vae, mode="disk", cache_dir=tmp_path / "c", progress=False)
    assert stats == {"computed": 4, "reused": 0, "failed": 0}
    assert cache_file(tmp_path / "c", ds.records[0], ds.record_buckets[0]).is_file()


def test_masks_are_cached_with_the_latents_and_are_part_of_the_key(folder, tmp_path, mk, vae):
    """Cached items carry the uncached mask bitwise (both flips) at the latents' resolution; a changed
    mask file, or masks switched on, encodes again."""
    from PIL import Image

    masks = tmp_path / "masks"
    for i in range(4):
        grey = (mk.noise(64 + 32 * (i % 2), 64, seed=20 + i, channels=1) // 128 * 255).astype("uint8")
        mk.save(masks / f"{i}.png", Image.fromarray(grey, "L"))
    cfg = mk.small_cfg(folder, masks="folder", mask_dir=str(masks), flip=True)

    def run():
        ds, _ = build_datasets(cfg, None, seed=0, latent_factor=2)
        return cache_latents(ds, vae, mode="disk", cache_dir=tmp_path / "c", progress=False), ds

    plain, _ = build_datasets(cfg, None, seed=0, latent_factor=2)
    assert cache_latents(plain, vae, mode="disk", cache_dir=tmp_path / "c", progress=False)["computed"] == 4
    plain.latents = None  # the same dataset, read from the pixels again
    stats, cached = run()
    assert stats["reused"] == 4
    for epoch in range(2):  # different flips drawn
        plain.set_epoch(epoch), cached.set_epoch(epoch)
        for i in range(len(cached)):
            got, ref = cached[i], plain[i]
            assert got["loss_mask"].shape[-2:] == got["latents"].shape[-2:]
            assert torch.equal(got["loss_mask"], ref["loss_mask"])
    mk.save(masks / "2.png", Image.new("L", (64, 64), 0))
    assert run()[0] == {"computed": 1, "reused": 3, "failed": 0}
    cfg.masks = "off"
    assert run()[0]["computed"] == 4
