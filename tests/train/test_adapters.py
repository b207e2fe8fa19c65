"""LoRA injection for training: presets, conv, text encoder, per-module overrides (src/sdlora/train/adapters.py)."""
import pytest
import torch

from sdlora.config import RankOverride, RunConfig
from sdlora.errors import SdloraError
from sdlora.lora import lora_modules
from sdlora.models import tiny_components
from sdlora.train.adapters import attach_lora, trainable_models


def _cfg(**lora):
    cfg = RunConfig()
    for key, value in lora.items():
        setattr(cfg.lora, key, value)
    return cfg


def test_attach_presets_conv_and_text_encoder():
    c = tiny_components(0)
    cfg = _cfg(rank=4, unet_preset="unet-transformer", conv=True, conv_rank=2, conv_alpha=1.0,
               train_text_encoder=True, text_encoder_rank=3)
    counts = attach_lora(c, cfg)
    unet = lora_modules(c.unet)
    conv = unet["down_blocks.0.resnets.0.conv1"].adapters["default"]
    attn = unet["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"].adapters["default"]
    assert (conv.rank, conv.alpha, attn.rank, attn.alpha) == (2, 1.0, 4, 4.0)
    te = lora_modules(c.text_encoder)
    assert counts == {"unet": len(unet), "text_encoder": len(te)} and len(te) == 2 * 6  # 2 layers x 6 Linears
    assert all(w.adapters["default"].rank == 3 for w in te.values())
    models = trainable_models(c, cfg)
    trainable = [p for m in models.values() for p in m.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    names = [n for m in models.values() for n, p in m.named_parameters() if p.requires_grad]
    assert all(".adapters.default." in n for n in names)


def test_overrides_match_file_names_with_component_prefix():
    c = tiny_components(0)
    cfg = _cfg(rank=4, unet_preset="unet-attn", train_text_encoder=True, overrides=[
        RankOverride(pattern=r"unet\.up_blocks\..*", rank=2, alpha=1.0),
        RankOverride(pattern=r"text_encoder\.text_model\.encoder\.layers\.1\..*", rank=1),
        RankOverride(pattern=r"unet\.mid_block\..*attn2.*", rank=0),  # rank 0 leaves modules out
    ])
    attach_lora(c, cfg)
    unet = lora_modules(c.unet)
    assert {w.adapters["default"].rank for p, w in unet.items() if p.startswith("up_blocks.")} == {2}
    assert {w.adapters["default"].rank for p, w in unet.items() if p.startswith("down_blocks.")} == {4}
    assert not any(p.startswith("mid_block.") and ".attn2." in p for p in unet)
    te = lora_modules(c.text_encoder)
    assert {w.adapters["default"].rank for p, w in te.items() if ".layers.1." in p} == {1}


def test_override_matching_nothing_names_it():
    c = tiny_components(0)
    with pytest.raises(SdloraError, match=r"lora.overrides pattern .*up_blocks.* matches no trained module.*unet\.up_blocks"):
        attach_lora(c, _cfg(overrides=[RankOverride(pattern=r"up_blocks\..*", rank=2)]))
    assert not lora_modules(c.unet)  # nothing was injected
    with pytest.raises(SdloraError, match=r"lora.overrides\[0\].pattern is not a valid regular expression"):
        attach_lora(c, _cfg(overrides=[RankOverride(pattern="(", rank=2)]))
