"""Shared fixtures for the UI tests: a small captioned dataset (sd-tiny's demo renderer) and a LoRA
file for sd-tiny with random weights."""
import pytest
import torch

from sdlora.tiny.demo_data import write_style_dataset


@pytest.fixture
def shapes(tmp_path):
    """A folder of 4 rendered images with .txt captions."""
    write_style_dataset(tmp_path / "shapes", 4)
    return tmp_path / "shapes"


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory):
    """A kohya LoRA file (rank 4, UNet attention, random `up`) for the bundled sd-tiny."""
    from sdlora.formats import apply, save_lora_file
    from sdlora.lora import inject
    from sdlora.models import load_components

    components = load_components("tiny", dtype=torch.float32)
    inject(components.unet, "unet-attn", rank=4, adapter="tmp")
    gen = torch.Generator().manual_seed(1)
    for name, param in components.unet.named_parameters():
        if ".adapters.tmp.up." in name:
            param.data = torch.randn(param.shape, generator=gen) * 0.2
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    return save_lora_file(path, apply.extract(components, "tmp"), {"ss_network_dim": "4", "note": "<b>bold</b>"},
                          "kohya", dtype=torch.float32)
