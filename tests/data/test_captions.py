import numpy as np
import pytest

from sdlora.data.captions import (CaptionTransform, join_parts, read_caption_file, split_tags, too_long,
                                  transform_tags)

TAGS = ["sks", "1girl", "blue hair", "school uniform", "smile", "outdoors"]


@pytest.mark.parametrize("text, tags", [
    ("1girl, blue hair, school uniform", ["1girl", "blue hair", "school uniform"]),
    ("  a ,, b ,c,", ["a", "b", "c"]),
    ("a photo of sks person", ["a photo of sks person"]),
    ("", []),
])
def test_split_tags(text, tags):
    assert split_tags(text) == tags


@pytest.mark.parametrize("prefix, caption, suffix, out", [
    ("sks style, ", "1girl, smile", "", "sks style, 1girl, smile"),
    ("", "a photo", ", best quality", "a photo, best quality"),
    ("", "", "", ""),
    ("trigger ", "", "", "trigger"),
])
def test_join_parts(prefix, caption, suffix, out):
    assert join_parts(prefix, caption, suffix) == out


@pytest.mark.parametrize("keep, shuffle, dropout", [(0, True, 0.0), (1, True, 0.0), (2, True, 0.5), (1, False, 0.5),
                                                    (6, True, 0.9), (10, True, 0.0)])
def test_transform_tags_keeps_head_and_only_reorders_or_drops_tail(keep, shuffle, dropout):
    seen_orders = set()
    for seed in range(30):
        out = transform_tags(TAGS, np.random.default_rng(seed), keep=keep, shuffle=shuffle, dropout=dropout)
        assert out[:keep] == TAGS[:keep]
        tail = out[keep:]
        assert set(tail) <= set(TAGS[keep:]) and len(set(tail)) == len(tail)
        if dropout == 0:
            assert sorted(tail) == sorted(TAGS[keep:])
        if not shuffle:
            assert tail == [t for t in TAGS[keep:] if t in tail]  # order preserved
        seen_orders.add(tuple(out))
    if shuffle and keep < len(TAGS) - 1:
        assert len(seen_orders) > 1


def test_tag_dropout_rate_is_about_right():
    rng = np.random.default_rng(0)
    kept = sum(len(transform_tags(TAGS, rng, keep=1, shuffle=False, dropout=0.3)) - 1 for _ in range(2000))
    assert abs(kept / (2000 * 5) - 0.7) < 0.03


def test_caption_dropout_empties_whole_caption_including_prefix():
    t = CaptionTransform(prefix="sks, ", caption_dropout=0.5)
    outs = [t("1girl, smile", np.random.default_rng(s)) for s in range(400)]
    assert set(outs) == {"", "sks, 1girl, smile"}
    assert 0.4 < outs.count("") / len(outs) < 0.6


def test_prefix_is_never_shuffled():
    t = CaptionTransform(prefix="sks style, ", shuffle_tags=True, keep_tokens=0)
    for s in range(20):
        assert t("a, b, c, d", np.random.default_rng(s)).startswith("sks style, ")


@pytest.mark.parametrize("kw, static", [({}, True), ({"prefix": "x, "}, True), ({"shuffle_tags": True}, False),
                                        ({"tag_dropout": 0.1}, False), ({"caption_dropout": 0.05}, False)])
def test_is_static(kw, static):
    t = CaptionTransform(**kw)
    assert t.is_static is static
    assert t.static().is_static
    assert t.cacheable is (static or "caption_dropout" in kw)  # dropout only adds "", a fixed set


def test_caption_dropout_gives_the_full_caption_or_empty():
    t = CaptionTransform(prefix="sks, ", caption_dropout=0.5)
    seen = {t("a red square", np.random.default_rng(s)) for s in range(40)}
    assert seen == {"", "sks, a red square"}


def test_read_caption_file_bom_lines_and_bad_bytes(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeff1girl, smile\n\n  blue hair \n".encode() + b"\xff")
    assert read_caption_file(path) == "1girl, smile blue hair \ufffd"


def test_too_long_counts_clip_tokens(tokenizer):
    short, long = "a photo of sks person", ", ".join(f"tag{i}" for i in range(60))
    result = too_long(tokenizer, [short, long])
    assert [c for c, _ in result] == [long] and result[0][1] > 75


def test_tag_frequency_per_folder_as_kohya_counts_it():
    from sdlora.data.captions import tag_frequency

    pairs = [("10_sks", "sks dog, Smile , outdoors"), ("10_sks", "sks dog, smile,, smile"), ("style", ""),
             ("style", "painting")]
    assert tag_frequency(pairs) == {"10_sks": {"outdoors": 1, "sks dog": 2, "smile": 3}, "style": {"painting": 1}}
    assert tag_frequency([]) == {}
