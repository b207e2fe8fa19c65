import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.data.pixels import fit_to_bucket, load_pixels, to_tensor


@pytest.mark.parametrize("size, bucket", [((200, 100), (64, 64)), ((100, 200), (48, 80)), ((64, 64), (64, 64)),
                                          ((30, 20), (64, 48)), ((1000, 999), (128, 128))])
def test_fit_to_bucket_gives_exactly_the_bucket(size, bucket, mk):
    img = Image.fromarray(mk.noise(*size))
    assert fit_to_bucket(img, bucket, "center").size == bucket
    assert fit_to_bucket(img, bucket, "random", np.random.default_rng(0)).size == bucket


def test_center_crop_keeps_the_middle():
    arr = np.zeros((50, 150, 3), np.uint8)
    arr[:, 50:100] = 255
    out = np.asarray(fit_to_bucket(Image.fromarray(arr), (50, 50), "center"))
    assert out.min() == 255


def test_to_tensor_layout_and_range():
    arr = np.zeros((2, 3, 3), np.uint8)
    arr[0, 1] = (0, 255, 128)
    x = to_tensor(Image.fromarray(arr))
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    assert x[:, 0, 1].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    assert x[:, 1, 2].tolist() == [-1.0, -1.0, -1.0]


def test_load_pixels_flip_is_a_mirror(tmp_path, mk):
    path = mk.rgb(tmp_path / "a.png", 80, 64)
    plain = load_pixels(str(path), (80, 64), (64, 64), crop="center", flip=False, background=(0, 0, 0),
                        max_pixels=10**8)
    flipped = load_pixels(str(path), (80, 64), (64, 64), crop="center", flip=True, background=(0, 0, 0),
                          max_pixels=10**8)
    assert plain.shape == (3, 64, 64) and torch.equal(flipped, plain.flip(-1))
