import math

import numpy as np
import pytest

from sdlora.data.buckets import BucketSpec, assign_bucket, cover_size, crop_box, make_buckets, needs_upscale
from sdlora.errors import SdloraError

SD = make_buckets(BucketSpec(512, 64, 256, 1024))


@pytest.mark.parametrize("spec", [BucketSpec(512, 64, 256, 1024), BucketSpec(768, 64, 256, 1536),
                                  BucketSpec(512, 32, 320, 768), BucketSpec(64, 16, 32, 128)])
def test_bucket_invariants(spec):
    buckets = make_buckets(spec)
    assert (spec.resolution, spec.resolution) in buckets
    for w, h in buckets:
        assert w % spec.step == 0 and h % spec.step == 0
        assert w * h <= spec.resolution ** 2
        assert spec.min_side <= min(w, h) and max(w, h) <= spec.max_side
        assert (h, w) in buckets
    ratios = [w / h for w, h in buckets]
    assert ratios == sorted(ratios)


def test_sd_buckets_are_the_usual_list():
    landscape = {b for b in SD if b[0] >= b[1]}
    assert landscape == {(512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256),
                         (960, 256), (1024, 256)}


def test_square_mode_has_one_bucket():
    assert make_buckets(BucketSpec(512, 64, 256, 1024, enabled=False)) == [(512, 512)]


def test_min_side_above_resolution_still_leaves_the_square():
    assert make_buckets(BucketSpec(128, 64, 256, 1024)) == [(128, 128)]
    with pytest.raises(SdloraError, match="bucket_step"):
        make_buckets(BucketSpec(64, 128, 32, 256))


@pytest.mark.parametrize("size, bucket", [
    ((512, 512), (512, 512)), ((1000, 1000), (512, 512)), ((768, 512), (640, 384)), ((512, 768), (384, 640)),
    ((1920, 1080), (640, 384)), ((1080, 1920), (384, 640)), ((4000, 100), (1024, 256)), ((100, 4000), (256, 1024)),
    ((600, 480), (576, 448)), ((3000, 2000), (640, 384)), ((1024, 800), (576, 448)),
])
def test_assign_bucket_table(size, bucket):
    assert assign_bucket(size, SD) == bucket


def test_assign_bucket_picks_closest_log_ratio():
    rng = np.random.default_rng(0)
    for w, h in rng.integers(50, 5000, (200, 2)):
        best = assign_bucket((int(w), int(h)), SD)
        err = abs(math.log(best[0] / best[1]) - math.log(w / h))
        assert all(err <= abs(math.log(b[0] / b[1]) - math.log(w / h)) + 1e-9 for b in SD)


@pytest.mark.parametrize("size, bucket, cover", [
    ((1000, 500), (512, 512), (1024, 512)), ((500, 1000), (512, 512), (512, 1024)),
    ((768, 512), (640, 384), (640, 427)), ((200, 100), (512, 512), (1024, 512)), ((640, 384), (640, 384), (640, 384)),
])
def test_cover_size_table(size, bucket, cover):
    assert cover_size(size, bucket) == cover


@pytest.mark.parametrize("size, bucket, up", [((500, 1000), (512, 512), True), ((512, 512), (512, 512), False),
                                              ((2000, 1000), (640, 384), False), ((640, 380), (640, 384), True)])
def test_needs_upscale(size, bucket, up):
    assert needs_upscale(size, bucket) is up


def test_crop_box_center_and_random():
    assert crop_box((1024, 512), (512, 512), "center") == (256, 0, 768, 512)
    rng = np.random.default_rng(0)
    lefts = set()
    for _ in range(50):
        left, top, right, bottom = crop_box((1024, 600), (512, 512), "random", rng)
        assert 0 <= left <= 512 and 0 <= top <= 88 and right - left == 512 and bottom - top == 512
        lefts.add(left)
    assert len(lefts) > 10
    with pytest.raises(SdloraError, match="data.crop"):
        crop_box((10, 10), (8, 8), "middle")
