import numpy as np
import pytest

from sdlora.models import load_tokenizer
from sdlora.tiny.pool import CAPTION_VARIANTS, caption_table, render_pool
from sdlora.tiny.render import render_seed


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_pool_is_the_seed_stream_whatever_the_worker_count():
    one = render_pool(7, 1200, workers=1)
    two = render_pool(7, 1200, workers=2)
    assert one.images.shape == (1200, 64, 64, 3) and one.images.dtype == np.uint8
    assert np.array_equal(one.images, two.images) and one.scenes == two.scenes
    pixels, scene = render_seed(7, 1000)
    assert np.array_equal(one.images[1000], pixels) and one.scenes[1000] == scene


def test_pool_start_and_style():
    pool = render_pool(7, 5, "striped", start=100, workers=1)
    assert [s.style for s in pool.scenes] == ["striped"] * 5
    assert pool.scenes[0] == render_seed(7, 100, "striped")[1]


def test_caption_table_has_empty_row_and_every_variant(tokenizer):
    scenes = render_pool(1, 50, workers=1).scenes
    ids, index = caption_table(scenes, tokenizer)
    assert ids.shape[1] == 77 and index.shape == (50, len(CAPTION_VARIANTS))
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == ""
    for n in (0, 17):
        for v, variant in enumerate(CAPTION_VARIANTS):
            text = tokenizer.decode(ids[index[n, v]], skip_special_tokens=True)
            assert text == scenes[n].caption(**variant)
    assert len(ids) == len(set(map(tuple, ids.tolist())))  # rows are distinct captions


def test_captions_pad_like_the_pipeline(tokenizer):
    scenes = render_pool(1, 3, workers=1).scenes
    ids, index = caption_table(scenes, tokenizer)
    expected = tokenizer(scenes[2].caption(), padding="max_length", max_length=77, truncation=True).input_ids
    assert ids[index[2, 0]].tolist() == expected
