"""What the adversarial training tests share: a tiny random SD model, saved once as a diffusers folder."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from sdlora.models import tiny_components

    folder = tmp_path_factory.mktemp("tiny-model")
    c = tiny_components(0)
    for name in ("unet", "vae", "text_encoder", "scheduler"):
        getattr(c, name).save_pretrained(folder / name)
    return folder
