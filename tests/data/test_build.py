import logging
from collections import Counter
from pathlib import Path

import pytest

from sdlora.config import SourceConfig
from sdlora.data.build import build_datasets, class_order, expand_items, split_validation
from sdlora.data.dataset import LoRADataset, SampleOptions
from sdlora.data.sources import ImageRecord
from sdlora.errors import SdloraError


def rec(i, source=0, is_class=False, repeats=1):
    return ImageRecord(path=f"/x/{source}/{i}.png", source=source, width=64, height=64, digest=str(i), caption="",
                       caption_from="none", repeats=repeats, is_class=is_class)


@pytest.mark.parametrize("n, fraction, n_val", [(10, 0.1, 1), (10, 0.25, 2), (100, 0.1, 10), (2, 0.5, 1),
                                                (1, 0.5, 0), (3, 0.01, 1), (10, 0.0, 0)])
def test_split_validation_sizes(n, fraction, n_val):
    records = [rec(i) for i in range(n)]
    train, val = split_validation(records, fraction, seed=0)
    assert len(val) == n_val and sorted(train + val) == list(range(n)) and not set(train) & set(val)


def test_split_is_per_source_seeded_and_never_takes_class_images():
    records = [rec(i, 0) for i in range(10)] + [rec(i, 1) for i in range(20)] + [rec(i, 2, True) for i in range(10)]
    train, val = split_validation(records, 0.2, seed=5)
    assert Counter(records[i].source for i in val) == {0: 2, 1: 4}
    assert split_validation(records, 0.2, seed=5) == (train, val)
    assert split_validation(records, 0.2, seed=6)[1] != val


@pytest.mark.parametrize("n_inst, repeats, n_class", [(3, 2, 4), (5, 1, 2), (2, 3, 10), (4, 1, 0)])
def test_dreambooth_pairs_class_items_with_instance_items(n_inst, repeats, n_class):
    records = [rec(i, 0, repeats=repeats) for i in range(n_inst)] + [rec(i, 1, True) for i in range(n_class)]
    items = expand_items(records, list(range(len(records))), seed=0)
    inst = [i for i in items if not records[i].is_class]
    cls = [i for i in items if records[i].is_class]
    assert Counter(inst) == {i: repeats for i in range(n_inst)}
    assert len(cls) == (n_inst * repeats if n_class else 0)
    if n_class:
        uses = Counter(cls)
        assert max(uses.values()) - min(uses.values()) <= 1  # cycled evenly
        assert len(uses) == min(n_class, n_inst * repeats)


def test_class_slots_take_every_class_image_over_the_epochs_within_their_bucket():
    """9 class images for 3 instance items: epoch 0 uses expand_items' three, the next epochs the next
    ones in the seeded order, so every class image is trained on; a slot only takes class images of its
    own bucket (batch shapes stay fixed)."""
    records = [rec(i, 0) for i in range(3)] + [rec(i, 1, True) for i in range(9)]
    buckets = [(64, 64)] * 3 + [(64, 64)] * 6 + [(64, 32)] * 3
    indices = list(range(len(records)))
    items = expand_items(records, indices, seed=0)
    ds = LoRADataset(records, buckets, items, {}, SampleOptions(), class_pool=class_order(records, indices, 0))
    slots = [i for i, r in enumerate(items) if records[r].is_class]
    one_bucket = LoRADataset(records, [(64, 64)] * 12, items, {}, SampleOptions(),
                             class_pool=class_order(records, indices, 0))
    assert [one_bucket.record_of(i) for i in range(len(items))] == items  # epoch 0: expand_items' pairing
    taken = []
    for epoch in range(3):
        one_bucket.set_epoch(epoch)
        taken += [one_bucket.record_of(i) for i in slots]
    assert sorted(taken) == list(range(3, 12))  # three epochs of three slots: each class image once
    seen = Counter()
    for epoch in range(6):
        ds.set_epoch(epoch)
        taken = [ds.record_of(i) for i in slots]
        assert all(buckets[r] == ds.bucket_of(i) for i, r in zip(slots, taken))  # the slot's own bucket
        assert all(ds.record_of(i) == items[i] for i in range(len(items)) if i not in slots)
        seen.update(taken)
    used_buckets = {ds.bucket_of(i) for i in slots}
    assert set(seen) == {r for r in range(3, 12) if buckets[r] in used_buckets}
    assert set(ds.used_records()) == set(range(12))  # cached and captioned: every class image


def test_build_repeats_dreambooth_and_validation(tmp_path, mk, tokenizer):
    for i in range(10):
        mk.rgb(tmp_path / "inst" / f"{i}.png", 64, 64, seed=i)
    for i in range(7):
        mk.rgb(tmp_path / "cls" / f"{i}.jpg", 64, 64, seed=100 + i)
    cfg = mk.small_cfg(SourceConfig(path=str(tmp_path / "inst"), prompt="a photo of sks dog", repeats=3),
                       SourceConfig(path=str(tmp_path / "cls"), role="class", prompt="a photo of a dog"),
                       validation_split=0.2)
    train, val = build_datasets(cfg, tokenizer, seed=1)
    s = train.summary()
    assert s["items"] == 8 * 3 * 2 and s["class_images"] == 7 and s["images"] == 8 + 7
    assert len(val) == 2 and {val.records[r].source for r in val.items} == {0}
    assert not set(val.items) & set(train.items)
    captions = {train[i]["caption"]: train[i]["is_class"] for i in range(len(train))}
    assert captions == {"a photo of sks dog": False, "a photo of a dog": True}


def test_no_usable_image_is_a_clear_error(tmp_path, mk):
    mk.make_bad_files(tmp_path)
    with pytest.raises(SdloraError, match=r"no usable image .* all 9 image files were skipped .*truncated"):
        build_datasets(mk.small_cfg(tmp_path), None, seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SdloraError, match="no image files found"):
        build_datasets(mk.small_cfg(empty), None, seed=0)
    with pytest.raises(SdloraError, match="data.sources is empty"):
        build_datasets(mk.small_cfg(), None, seed=0)


def test_only_class_images_is_an_error(tmp_path, mk):
    mk.rgb(tmp_path / "a.png")
    with pytest.raises(SdloraError, match="only class images"):
        build_datasets(mk.small_cfg(SourceConfig(path=str(tmp_path), role="class")), None, seed=0)


def test_small_images_upscaled_with_warning_or_skipped(tmp_path, mk, caplog):
    mk.rgb(tmp_path / "big.png", 128, 128)
    mk.rgb(tmp_path / "small.png", 40, 40)
    with caplog.at_level(logging.WARNING, logger="sdlora.data"):
        train, _ = build_datasets(mk.small_cfg(tmp_path), None, seed=0)
    assert len(train) == 2 and "1 image is smaller than its bucket and will be upscaled" in caplog.text
    assert train[1 if "small" in train.records[1].path else 0]["pixel_values"].shape == (3, 64, 64)
    train, _ = build_datasets(mk.small_cfg(tmp_path, no_upscale=True), None, seed=0)
    assert [Path(r.path).name for r in train.records] == ["big.png"]
    assert train.summary()["skipped_by_reason"] == {"too_small": 1}


def test_truncation_warning_names_the_count(tmp_path, mk, tokenizer, caplog):
    mk.rgb(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text(", ".join(f"tag number {i}" for i in range(40)))
    mk.rgb(tmp_path / "b.png")
    with caplog.at_level(logging.WARNING, logger="sdlora.data"):
        build_datasets(mk.small_cfg(tmp_path), tokenizer, seed=0)
    assert "1 caption is longer than 75 tokens and will be truncated" in caplog.text


def test_caption_prefix_and_suffix_reach_the_items(tmp_path, mk):
    mk.rgb(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("1girl, smile")
    cfg = mk.small_cfg(SourceConfig(path=str(tmp_path), caption_prefix="sks style, ", caption_suffix=", masterpiece"))
    train, _ = build_datasets(cfg, None, seed=0)
    assert train[0]["caption"] == "sks style, 1girl, smile, masterpiece"


def test_the_log_says_which_kohya_folders_were_read_and_which_were_not(tmp_path, mk, caplog):
    mk.rgb(tmp_path / "3_sks" / "a.png", 64, 64)
    mk.rgb(tmp_path / "20240101_trip" / "b.png", 64, 64, seed=1)
    with caplog.at_level(logging.INFO, logger="sdlora.data"):
        train, _ = build_datasets(mk.small_cfg(tmp_path), None, seed=0)
    assert len(train) == 4  # 3 repeats + 1, not 20 million
    assert "kohya folders read: 3_sks (3 repeats, 1 image)" in caplog.text
    assert "20240101_trip: 20240101 is not read as a repeat count" in caplog.text
