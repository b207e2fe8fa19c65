"""A tiny SD-architecture model saved as a diffusers folder, and random LoRA files for it."""
import pytest
import torch

from sdlora.formats import apply, save_lora_file
from sdlora.lora import inject
from sdlora.models import tiny_components

SIZE, STEPS = 32, 2  # 32 px images (16x16 latents with the tiny VAE), 2 sampling steps


def random_lora(components, seed: int, text_encoder: bool = True, std: float = 0.2) -> dict:
    """A canonical LoRA dict with random up/down weights (rank 4, attention modules)."""
    inject(components.unet, "unet-attn", rank=4, adapter="tmp")
    if text_encoder:
        inject(components.text_encoder, "text-encoder", rank=4, adapter="tmp")
    gen = torch.Generator().manual_seed(seed)
    for net in (components.unet, components.text_encoder):
        for name, param in net.named_parameters():
            if ".adapters.tmp.up." in name:
                param.data = torch.randn(param.shape, generator=gen) * std
    lora = apply.extract(components, "tmp")
    apply.detach(components, "tmp")
    return lora


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """{"model": diffusers folder of tiny_components(0), "style"/"subject": LoRA files}."""
    root = tmp_path_factory.mktemp("tiny")
    components = tiny_components(0)
    for name in ("unet", "vae", "text_encoder", "scheduler"):
        getattr(components, name).save_pretrained(root / "model" / name)
    files = {"model": root / "model"}
    # style: UNet + text encoder, kohya file; subject: UNet only, sdlora's native file.
    files["style"] = save_lora_file(root / "style.safetensors", random_lora(components, 1), {"ss_network_dim": "4"},
                                    "kohya", dtype=torch.float32)
    files["subject"] = save_lora_file(root / "subject.safetensors", random_lora(components, 2, text_encoder=False),
                                      {}, "native", dtype=torch.float32)
    return files


@pytest.fixture
def components():
    """A fresh tiny model (no LoRA), the same weights as the saved folder."""
    return tiny_components(0)


