"""Tiny randomly initialised CLIP and DINO (ViT) models of the real classes, saved like hub folders."""
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

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
