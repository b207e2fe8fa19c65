"""Key names of original (CompVis/LDM) SD 1.x checkpoints <-> diffusers/transformers names, as data.

A checkpoint file holds one flat state dict with three component prefixes (`LDM_PREFIX`). Within a
component, a *block table* maps an LDM module prefix to a `Block`: the module path on the diffusers
side plus, for resnets and VAE attention, a table of sub-module renames. Tables are generated from the
model configs (block counts) and inverted for the reverse direction, so both directions use the same
pure lookup: longest matching dotted prefix, then the sub-module rename, then the unchanged rest.
One shape rule: the VAE mid-block attention q/k/v/out are 1x1 convs in LDM, (C, C, 1, 1), and Linear
layers in diffusers, (C, C).
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import torch

from sdlora.models.names import canonical_te_path

LDM_PREFIX = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.transformer.",
}

# Sub-module renames inside one block, LDM -> diffusers.
UNET_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
VAE_ATTENTION_1X1 = frozenset({"q", "k", "v", "proj_out"})  # LDM names of the 1x1 convs that are Linear in diffusers

UNET_FIXED = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
VAE_FIXED = {
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
    **{f"{part}.{name}": f"{part}.{name}" for part in ("encoder", "decoder") for name in ("conv_in", "conv_out")},
    **{f"{part}.norm_out": f"{part}.conv_norm_out" for part in ("encoder", "decoder")},
}


class Block(NamedTuple):
    """Where one source module prefix goes. `inner`: sub-module renames (None: names are unchanged);
    `reshape`: source-side sub-module names whose weight is a 1x1 conv on the LDM side, Linear on diffusers'."""

    target: str
    inner: Mapping[str, str] | None = None
    reshape: frozenset = frozenset()


Table = Mapping[str, Block]


def unet_table(config: Mapping) -> dict[str, Block]:
    """LDM -> diffusers block table of a UNet2DConditionModel config (SD 1.x layout)."""
    n, per = len(config["block_out_channels"]), config["layers_per_block"]
    table = {ldm: Block(dif) for ldm, dif in UNET_FIXED.items()}
    for i, kind in enumerate(config["down_block_types"]):
        for j in range(per):
            idx = 1 + i * (per + 1) + j  # input_blocks.0 is conv_in; each level adds a downsampler slot
            table[f"input_blocks.{idx}.0"] = Block(f"down_blocks.{i}.resnets.{j}", UNET_RESNET)
            if "CrossAttn" in kind:
                table[f"input_blocks.{idx}.1"] = Block(f"down_blocks.{i}.attentions.{j}")
        if i < n - 1:
            table[f"input_blocks.{(i + 1) * (per + 1)}.0.op"] = Block(f"down_blocks.{i}.downsamplers.0.conv")
    table["middle_block.0"] = Block("mid_block.resnets.0", UNET_RESNET)
    table["middle_block.1"] = Block("mid_block.attentions.0")
    table["middle_block.2"] = Block("mid_block.resnets.1", UNET_RESNET)
    for i, kind in enumerate(config["up_block_types"]):
        attn = "CrossAttn" in kind
        for j in range(per + 1):
            table[f"output_blocks.{i * (per + 1) + j}.0"] = Block(f"up_blocks.{i}.resnets.{j}", UNET_RESNET)
            if attn:
                table[f"output_blocks.{i * (per + 1) + j}.1"] = Block(f"up_blocks.{i}.attentions.{j}")
        if i < n - 1:  # the upsampler follows the last resnet (and its attention, if any)
            slot = f"output_blocks.{i * (per + 1) + per}.{2 if attn else 1}.conv"
            table[slot] = Block(f"up_blocks.{i}.upsamplers.0.conv")
    return table


def vae_table(config: Mapping) -> dict[str, Block]:
    """LDM -> diffusers block table of an AutoencoderKL config. LDM numbers decoder levels bottom-up."""
    n, per = len(config["block_out_channels"]), config["layers_per_block"]
    table = {ldm: Block(dif) for ldm, dif in VAE_FIXED.items()}
    for part in ("encoder", "decoder"):
        table[f"{part}.mid.block_1"] = Block(f"{part}.mid_block.resnets.0", VAE_RESNET)
        table[f"{part}.mid.attn_1"] = Block(f"{part}.mid_block.attentions.0", VAE_ATTENTION, VAE_ATTENTION_1X1)
        table[f"{part}.mid.block_2"] = Block(f"{part}.mid_block.resnets.1", VAE_RESNET)
    for i in range(n):
        for j in range(per):
            table[f"encoder.down.{i}.block.{j}"] = Block(f"encoder.down_blocks.{i}.resnets.{j}", VAE_RESNET)
        if i < n - 1:
            table[f"encoder.down.{i}.downsample.conv"] = Block(f"encoder.down_blocks.{i}.downsamplers.0.conv")
        level = n - 1 - i
        for j in range(per + 1):
            table[f"decoder.up.{level}.block.{j}"] = Block(f"decoder.up_blocks.{i}.resnets.{j}", VAE_RESNET)
        if i < n - 1:
            table[f"decoder.up.{level}.upsample.conv"] = Block(f"decoder.up_blocks.{i}.upsamplers.0.conv")
    return table


def invert_table(table: Table) -> dict[str, Block]:
    """The same table read the other way (diffusers -> LDM)."""
    inverted = {}
    for source, block in table.items():
        inner = None if block.inner is None else {v: k for k, v in block.inner.items()}
        reshape = frozenset(block.inner[name] for name in block.reshape) if block.inner else frozenset()
        inverted[block.target] = Block(source, inner, reshape)
    return inverted


def _longest_prefix(parts: list[str], names: Mapping) -> tuple[str, list[str]] | None:
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in names:
            return head, parts[n:]
    return None


def map_key(key: str, table: Table) -> tuple[str, bool] | None:
    """(renamed key, whether the 1x1-conv/Linear shape rule applies), or None if `table` has no entry."""
    hit = _longest_prefix(key.split("."), table)
    if hit is None:
        return None
    head, rest = hit
    block = table[head]
    if block.inner is None:
        return ".".join([block.target, *rest]), False
    sub = _longest_prefix(rest, block.inner)
    if sub is None:
        return None
    name, rest = sub
    reshape = name in block.reshape and rest == ["weight"]
    return ".".join([block.target, block.inner[name], *rest]), reshape


def _convert(sd: Mapping[str, torch.Tensor], table: Table, to_diffusers: bool, where: str) -> dict:
    out = {}
    for key, tensor in sd.items():
        hit = map_key(key, table)
        if hit is None:
            raise KeyError(f"{where}{key}")
        new_key, reshape = hit
        if reshape and to_diffusers and tensor.ndim == 4:
            tensor = tensor[:, :, 0, 0]  # (C, C, 1, 1) -> (C, C)
        elif reshape and not to_diffusers and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # (C, C) -> (C, C, 1, 1)
        out[new_key] = tensor
    return out


def split_ldm(ldm_sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, dict], list[str]]:
    """Split a flat LDM state dict into {component: {key without prefix: tensor}} and the other keys."""
    parts: dict[str, dict] = {name: {} for name in LDM_PREFIX}
    other = []
    for key, tensor in ldm_sd.items():
        for name, prefix in LDM_PREFIX.items():
            if key.startswith(prefix):
                parts[name][key[len(prefix) :]] = tensor
                break
        else:
            other.append(key)
    return parts, other


def ldm_to_diffusers(ldm_sd: Mapping[str, torch.Tensor], unet_config: Mapping, vae_config: Mapping) -> dict:
    """{"unet": ..., "vae": ..., "text_encoder": ...} state dicts in diffusers/canonical names.

    Text-encoder keys come out canonical (`text_model.`-prefixed; see sdlora.models.names), also from
    old checkpoints that lack `text_model.`. Keys outside the three components are dropped (EMA copies,
    the training noise schedule). Raises KeyError naming the first LDM key that has no mapping.
    """
    parts, _ = split_ldm(ldm_sd)
    return {
        "unet": _convert(parts["unet"], unet_table(unet_config), True, LDM_PREFIX["unet"]),
        "vae": _convert(parts["vae"], vae_table(vae_config), True, LDM_PREFIX["vae"]),
        "text_encoder": {canonical_te_path(k): v for k, v in parts["text_encoder"].items()},
    }


def diffusers_to_ldm(components: Mapping[str, Mapping], unet_config: Mapping, vae_config: Mapping) -> dict:
    """The inverse of `ldm_to_diffusers`: one flat LDM state dict (text-encoder keys in any form)."""
    converted = {
        "unet": _convert(components["unet"], invert_table(unet_table(unet_config)), False, ""),
        "vae": _convert(components["vae"], invert_table(vae_table(vae_config)), False, ""),
        "text_encoder": {canonical_te_path(k): v for k, v in components["text_encoder"].items()},
    }
    return {LDM_PREFIX[name] + key: t for name, sd in converted.items() for key, t in sd.items()}
