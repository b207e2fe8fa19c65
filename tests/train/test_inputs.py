"""The data phase of a run: loss masks reach the trainer at the model's own latent resolution."""
from __future__ import annotations

import numpy as np
from PIL import Image
from safetensors.torch import load_file

from sdlora.train import train


def write_masks(folder, images, value_of):
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted(images.glob("*.png")):
        w, h = Image.open(image).size
        Image.fromarray(value_of(w, h), "L").save(folder / image.name)
    return folder


def test_black_masks_leave_the_lora_untouched_and_half_masks_train(make_cfg, tiny_data, tmp_path):
    """The tiny VAE downsamples by 2 (SD's by 8): masks made at any other factor would not fit the
    latents (uncached: the factor comes from the model; cached: from the VAE that encodes). With every
    mask black nothing is learnt (the `up` weights start at 0 and get no gradient); with half-white
    masks the same run learns."""
    black = write_masks(tmp_path / "black", tiny_data, lambda w, h: np.zeros((h, w), np.uint8))
    half = write_masks(tmp_path / "half", tiny_data,
                       lambda w, h: np.repeat([[0, 255]], w // 2, axis=1).repeat(h, axis=0).astype(np.uint8))
    ups = {}
    for name, folder, cache in (("black", black, "off"), ("half", half, "memory")):
        cfg = make_cfg(**{"data.masks": "folder", "data.mask_dir": str(folder), "data.cache_latents": cache,
                          "train.steps": 2, "save.output_dir": str(tmp_path / f"run-{name}")})
        state = load_file(str(train(cfg).lora_files[0]))
        ups[name] = [t for k, t in state.items() if k.endswith("lora_up.weight")]
    assert ups["black"] and all(t.abs().max() == 0 for t in ups["black"])
    assert any(t.abs().max() > 0 for t in ups["half"])
