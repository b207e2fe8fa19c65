"""Tiny randomly initialised CLIP and DINO (ViT) models of the real classes saved like hub folders, and a
tiny SD model with a random LoRA file (the same recipe as tests/generate/conftest.py)."""
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

from sdlora.formats import apply, save_lora_file
from sdlora.lora import inject
from sdlora.models import tiny_components
from sdlora.models.tokenizer import load_tokenizer

TOWER = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)


@pytest.fixture(scope="session")
def encoder_dirs(tmp_path_factory):
    """{"clip": folder, "dino": folder} with tiny random weights (seeded)."""
    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=dict(TOWER, vocab_size=49408, max_position_embeddings=77),
                                vision_config=dict(TOWER, image_size=32, patch_size=8), projection_dim=16))
    clip.save_pretrained(root / "clip")
    load_tokenizer().save_pretrained(root / "clip")
    ViTModel(ViTConfig(**TOWER, image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(root / "dino")
    return {"clip": root / "clip", "dino": root / "dino"}


@pytest.fixture(scope="session")
def lora_file(tmp_path_factory):
    """A kohya file with random rank-4 attention LoRA (UNet + text encoder) for tiny_components(0)."""
    components = tiny_components(0)
    inject(components.unet, "unet-attn", rank=4, adapter="tmp")
    inject(components.text_encoder, "text-encoder", rank=4, adapter="tmp")
    gen = torch.Generator().manual_seed(1)
    for net in (components.unet, components.text_encoder):
        for name, param in net.named_parameters():
            if ".adapters.tmp.up." in name:
                param.data = torch.randn(param.shape, generator=gen) * 0.2
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    return save_lora_file(path, apply.extract(components, "tmp"), {"ss_network_dim": "4", "ss_tag_frequency": "x" * 5000},
                          "kohya", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd") / "model"
    components = tiny_components(0)
    for name in ("unet", "vae", "text_encoder", "scheduler"):
        getattr(components, name).save_pretrained(root / name)
    return root


