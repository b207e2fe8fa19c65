import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sdlora.data import BucketBatchSampler, build_datasets, collate
from sdlora.errors import SdloraError


@pytest.fixture()
def mixed_dataset(mixed_folder, mk, tokenizer):
    folder, good, bad = mixed_folder
    train, _ = build_datasets(mk.small_cfg(folder), tokenizer, seed=0)
    return train, good, bad


def test_mixed_folder_yields_only_good_samples_and_counts_add_up(mixed_dataset):
    train, good, bad = mixed_dataset
    s = train.summary()
    assert s["images"] == len(good) and s["skipped"] == len(bad)
    assert s["images"] + s["skipped"] == len(good) + len(bad)
    assert sorted(Path(r.path).name for r in train.records) == sorted(good)
    assert sum(s["buckets"].values()) == len(train) == len(good)
    for i in range(len(train)):
        item = train[i]
        w, h = item["bucket"]
        assert item["pixel_values"].shape == (3, h, w) and item["pixel_values"].dtype == torch.float32
        assert -1.0 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1.0
        assert item["input_ids"].shape == (77,) and item["input_ids"].dtype == torch.int64
        assert item["input_ids"][0] == 49406 and item["is_class"] is False


def test_rotated_image_is_portrait(mixed_dataset):
    train, _, _ = mixed_dataset
    record = next(i for i, r in enumerate(train.records) if r.path.endswith("rotated.jpg"))
    assert train.records[record].size == (64, 80)  # stored 80x64 landscape, displayed portrait


def test_samples_are_deterministic_per_seed_and_epoch(tmp_path, mk, tokenizer):
    mk.rgb(tmp_path / "a.png", 160, 100)
    (tmp_path / "a.txt").write_text("a, b, c, d, e, f")
    cfg = mk.small_cfg(tmp_path, crop="random", flip=True, shuffle_tags=True)
    d1, _ = build_datasets(cfg, tokenizer, seed=3)
    d2, _ = build_datasets(cfg, tokenizer, seed=3)
    a, b = d1[0], d2[0]
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and a["caption"] == b["caption"]
    seen_pixels, seen_captions = set(), set()
    for epoch in range(12):
        d1.set_epoch(epoch)
        item = d1[0]
        seen_pixels.add(item["pixel_values"].numpy().tobytes())
        seen_captions.add(item["caption"])
    assert len(seen_pixels) > 3 and len(seen_captions) > 3


def test_flip_mirrors_the_center_crop(tmp_path, mk):
    mk.rgb(tmp_path / "a.png", 64, 64)
    plain, _ = build_datasets(mk.small_cfg(tmp_path), None, seed=0)
    flipping, _ = build_datasets(mk.small_cfg(tmp_path, flip=True), None, seed=0)
    ref = plain[0]["pixel_values"]
    outcomes = set()
    for epoch in range(10):
        flipping.set_epoch(epoch)
        x = flipping[0]["pixel_values"]
        outcomes.add("same" if torch.equal(x, ref) else "flipped" if torch.equal(x, ref.flip(-1)) else "other")
    assert outcomes == {"same", "flipped"}


def test_square_mode_center_crops(tmp_path, mk):
    arr = np.zeros((64, 128, 3), np.uint8)
    arr[:, 32:96] = 255  # white center square
    mk.save(tmp_path / "a.png", Image.fromarray(arr))
    train, _ = build_datasets(mk.small_cfg(tmp_path, buckets=False), None, seed=0)
    item = train[0]
    assert item["bucket"] == (64, 64) and item["pixel_values"].min() > 0.95


def test_image_failing_after_scan_is_replaced_and_logged_once(tmp_path, mk, caplog):
    for i in range(3):
        mk.rgb(tmp_path / f"{i}.png", 64, 64, seed=i)
    train, _ = build_datasets(mk.small_cfg(tmp_path), None, seed=0)
    victim = next(i for i, r in enumerate(train.records) if r.path.endswith("1.png"))
    Path(train.records[victim].path).write_bytes(b"overwritten")
    with caplog.at_level(logging.WARNING, logger="sdlora.data"):
        items = [train[i] for i in range(len(train))] + [train[i] for i in range(len(train))]
    assert all(x["pixel_values"].shape == (3, 64, 64) for x in items)
    assert caplog.text.count("1.png") == 1
    Path(train.records[0].path).unlink()
    Path(train.records[2].path).unlink()
    with pytest.raises(SdloraError, match="no image of bucket 64x64 can be loaded"):
        train[0]


def test_a_bad_setting_is_not_taken_for_a_bad_image(tmp_path, mk):
    """Only load errors are substituted; anything else (here a crop mode no code path knows) is raised
    as it is, not turned into 'no image of bucket ... can be loaded'."""
    import dataclasses

    mk.rgb(tmp_path / "a.png", 96, 64)
    train, _ = build_datasets(mk.small_cfg(tmp_path), None, seed=0)
    train.options = dataclasses.replace(train.options, crop="diagonal")
    with pytest.raises(SdloraError, match="^data.crop: 'diagonal' is not one of"):
        train[0]


def test_summary_counts_uncaptioned_images_and_repeats_per_folder(tmp_path, mk):
    from sdlora.config import SourceConfig

    mk.rgb(tmp_path / "inst" / "3_sks" / "a.png", 64, 64)
    mk.rgb(tmp_path / "inst" / "plain" / "b.png", 64, 64, seed=1)
    mk.rgb(tmp_path / "inst" / "plain" / "c.png", 64, 64, seed=2)
    (tmp_path / "inst" / "plain" / "c.txt").write_text("cat, Cat, sofa")
    mk.rgb(tmp_path / "cls" / "d.png", 64, 64, seed=3)
    train, _ = build_datasets(mk.small_cfg(SourceConfig(path=str(tmp_path / "inst")),
                                           SourceConfig(path=str(tmp_path / "cls"), role="class")), None, seed=0)
    s = train.summary()
    assert s["images_without_caption"] == 2  # b.png and the class image d.png
    assert s["folders"] == {"3_sks": {"repeats": 3, "images": 1}, "inst": {"repeats": 1, "images": 2}}
    assert train.tag_frequency() == {"3_sks": {"sks": 1}, "inst": {"cat": 2, "sofa": 1}, "cls": {}}


def test_dataset_pickles_and_loads_in_worker_processes(mixed_dataset):
    train, _, _ = mixed_dataset
    clone = pickle.loads(pickle.dumps(train))
    assert torch.equal(clone[2]["pixel_values"], train[2]["pixel_values"])
    sampler = BucketBatchSampler(train, 2, seed=0)
    sampler.set_epoch(1)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    batches = list(loader)
    assert sum(len(b["caption"]) for b in batches) == len(train)
    for b in batches:
        w, h = b["bucket"]
        assert b["pixel_values"].shape[1:] == (3, h, w) and b["input_ids"].shape[1] == 77
    first = next(iter(DataLoader(train, batch_sampler=sampler, collate_fn=collate, num_workers=0)))
    assert torch.equal(first["pixel_values"], batches[0]["pixel_values"])  # workers see the epoch too
