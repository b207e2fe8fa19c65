"""LoRA injection for training: presets, conv, text encoder, per-module overrides, per-block ranks
(src/sdlora/train/adapters.py)."""
import copy
import dataclasses
import re

import pytest
import torch

from sdlora.config import RankOverride, RunConfig
from sdlora.errors import SdloraError
from sdlora.formats import apply
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.formats.modules import lora_paths
from sdlora.lora import lora_modules, resolve_targets
from sdlora.lora.blocks import UNET_BLOCKS25, block_of
from sdlora.models import build_pipeline, tiny_components
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


# ----------------------------------------------------------------------------- per-block ranks (kohya block_dims)

@pytest.fixture(scope="module")
def tiny_base():
    return tiny_components(0)


@pytest.fixture
def fresh(tiny_base):
    """fresh() -> tiny components with their own UNet and text encoder (the slow tokenizer is shared)."""
    return lambda: dataclasses.replace(tiny_base, unet=copy.deepcopy(tiny_base.unet),
                                       text_encoder=copy.deepcopy(tiny_base.text_encoder))


def _dims(default, **by_block):
    """A 25-value list (IN00..IN11, M00, OUT00..OUT11) with some blocks changed."""
    return [by_block.get(b, default) for b in UNET_BLOCKS25]


def _expected(path, cfg, is_conv, lr=None):
    """rank, alpha of a UNet module as the config documents it (None: left out)."""
    lora, i = cfg.lora, UNET_BLOCKS25.index(block_of("unet", path))
    if is_conv:
        rank = lora.conv_block_dims[i] if lora.conv_block_dims else lora.conv_rank or lora.block_dims[i]
    else:
        rank = lora.block_dims[i]
    alpha = lora.block_alphas[i] if lora.block_alphas else lora.alpha
    if is_conv and lora.conv_block_alphas:
        alpha = lora.conv_block_alphas[i]
    for o in lora.overrides:
        if re.fullmatch(o.pattern, f"unet.{path}"):
            rank = o.rank
    if lr is not None and lr[block_of("unet", path)] == 0:
        rank = 0
    return (rank, float(alpha or rank)) if rank else None


@pytest.mark.parametrize("conv_dims", [False, True])
def test_block_dims_give_each_block_its_rank_and_alpha(conv_dims, fresh):
    c = fresh()
    cfg = _cfg(rank=8, unet_preset="unet-transformer", conv=True,
               block_dims=_dims(4, IN01=2, M00=0, OUT03=6),
               block_alphas=_dims(1.0, OUT04=3.0, IN04=0.0),  # alpha 0: alpha = rank
               overrides=[RankOverride(pattern=r"unet\.up_blocks\.1\.attentions\.1\.proj_out", rank=5)])
    if conv_dims:
        cfg.lora.conv_block_dims, cfg.lora.conv_block_alphas = _dims(3, OUT00=0, IN04=7), _dims(2.0, IN04=5.0)
    every = resolve_targets(["unet-transformer", "unet-conv"], lora_paths(c.unet))
    conv_paths = set(resolve_targets("unet-conv", every))
    attach_lora(c, cfg)
    unet = lora_modules(c.unet)
    got = {p: (unet[p].adapters["default"].rank, unet[p].adapters["default"].alpha) if p in unet else None
           for p in every}
    want = {p: _expected(p, cfg, p in conv_paths) for p in every}
    assert got == want
    assert not any(p.startswith("mid_block.") and p not in conv_paths for p in unet)
    assert len({r for r, _ in filter(None, got.values())}) >= 4
    assert ("up_blocks.0.resnets.0.conv1" in unet) != conv_dims  # conv_block_dims' 0 for OUT00 leaves it out


def test_lr_weight_zero_leaves_the_block_out_even_under_an_override(fresh):
    c = fresh()
    cfg = _cfg(rank=4, unet_preset="unet-attn", up_lr_weight=[1.0] * 3 + [0.0] + [1.0] * 8,
               block_dims=_dims(4), overrides=[RankOverride(pattern=r"unet\.up_blocks\.1\.attentions\.0\..*", rank=2)])
    attach_lora(c, cfg)
    unet = lora_modules(c.unet)
    assert not any(p.startswith(("up_blocks.1.attentions.0.", "up_blocks.1.resnets.0.")) for p in unet)  # OUT03
    assert any(p.startswith("up_blocks.1.attentions.1.") for p in unet)  # OUT04 still trains
    assert any(p.startswith("down_blocks.0.attentions.0.") for p in unet)


def test_block_settings_on_a_non_sd_model_name_the_setting(fresh):
    c = fresh()
    c.unet.add_module("extra_block", torch.nn.Linear(2, 2))
    cfg = _cfg(unet_preset=r"extra_block", block_dims=_dims(4))
    with pytest.raises(SdloraError, match=r"lora.block_dims / \*_lr_weight: unet.extra_block: not a module of an SD"):
        attach_lora(c, cfg)


@torch.no_grad()
def _probe(unet):
    gen = torch.Generator().manual_seed(0)
    sample, context = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 32, generator=gen)
    return unet(sample, 10, encoder_hidden_states=context).sample


def test_block_dims_file_loads_with_its_ranks_in_diffusers_and_sdlora(tmp_path, fresh):
    c = fresh()
    cfg = _cfg(rank=4, alpha=2.0, unet_preset="unet-transformer", block_dims=_dims(4, IN01=2, M00=0, OUT04=6))
    attach_lora(c, cfg)
    gen = torch.Generator().manual_seed(1)
    for wrapper in lora_modules(c.unet).values():
        up = wrapper.adapters["default"].up.weight
        up.data = torch.randn(up.shape, generator=gen) * 0.2  # trained-looking: the LoRA changes the output
    ours, base = _probe(c.unet), _probe(fresh().unet)
    lora = apply.extract(c)
    path = save_lora_file(tmp_path / "blocks.safetensors", lora, {}, "kohya", torch.float32)
    pipe = build_pipeline(fresh())
    pipe.load_lora_weights(str(path))
    ranks = {name.removesuffix(".lora_A.default_0.weight"): p.shape[0] for name, p in pipe.unet.named_parameters()
             if name.endswith(".lora_A.default_0.weight")}
    assert ranks == {p: w.adapters["default"].rank for p, w in lora_modules(c.unet).items()}
    assert {2, 4, 6} <= set(ranks.values())
    assert (_probe(pipe.unet) - ours).abs().max() < 1e-4 and (ours - base).abs().max() > 1e-2
    again = fresh()
    apply.attach(again, load_lora_file(path)[0])  # kohya's reading (A1111, ComfyUI): per-module rank and alpha
    assert (_probe(again.unet) - ours).abs().max() < 1e-5
