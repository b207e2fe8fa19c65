import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.evaluate.features import (CLIP_MEAN, CLIP_STD, MissingWeights, load_clip, load_dino, local_folder,
                                      preprocess)
from sdlora.evaluate.metrics import cosine_matrix, paired_cosine


def pictures(n, size=(48, 40)):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def test_preprocess_shape_crop_and_normalisation():
    flat = Image.new("RGB", (64, 32), (255, 0, 128))
    pixels = preprocess([flat, flat.convert("L")], 16, CLIP_MEAN, CLIP_STD)
    assert pixels.shape == (2, 3, 16, 16) and pixels.dtype == torch.float32
    expected = (np.array([1.0, 0.0, 128 / 255]) - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    assert torch.allclose(pixels[0, :, 8, 8], torch.tensor(expected, dtype=torch.float32), atol=1e-5)


def test_preprocess_centre_crops_the_long_side():
    half = np.zeros((16, 48, 3), np.uint8)
    half[:, 16:32] = 255  # only the middle third is white: the centre crop of a 48x16 image
    pixels = preprocess([Image.fromarray(half)], 16, (0, 0, 0), (1, 1, 1))
    assert float(pixels[0, :, 2:-2, 2:-2].min()) > 0.95


def test_clip_features_shapes_and_self_similarity(encoder_dirs):
    clip = load_clip(str(encoder_dirs["clip"]))
    images = pictures(3)
    img = clip.images(images)
    txt = clip.texts(["a cat", "a dog", "a very long prompt " * 30])  # truncated to 77 tokens
    assert img.shape == (3, 16) and txt.shape == (3, 16)
    assert torch.allclose(paired_cosine(img, clip.images(images)), torch.ones(3, dtype=torch.float64))
    sims = cosine_matrix(img, txt)
    assert float(sims.abs().max()) <= 1.0 + 1e-9
    assert not torch.allclose(txt[0], txt[1])


def test_dino_features_are_the_cls_token(encoder_dirs):
    dino = load_dino(str(encoder_dirs["dino"]))
    images = pictures(2)
    feats = dino.images(images)
    assert feats.shape == (2, 32)
    pixels = preprocess(images, 32, dino.mean, dino.std)
    with torch.no_grad():
        cls = dino.model(pixel_values=pixels).last_hidden_state[:, 0]
    assert torch.allclose(feats, cls)


@pytest.mark.parametrize("loader, flag", [(load_clip, "--clip-model"), (load_dino, "--dino-model")])
def test_missing_weights_say_how_to_provide_them(tmp_path, loader, flag):
    with pytest.raises(MissingWeights, match=r"hf download nobody/no-such-model.*" + flag):
        loader("nobody/no-such-model")
    with pytest.raises(MissingWeights, match=f"{flag} {tmp_path}: no "):
        loader(str(tmp_path))  # a folder without a model


def test_local_folder_is_used_as_is(encoder_dirs):
    assert local_folder(str(encoder_dirs["dino"]), "DINO", "--dino-model") == encoder_dirs["dino"]
