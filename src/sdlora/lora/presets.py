"""SD 1.x LoRA target presets as data, and one pure function resolving targets to module paths.

A preset is a tuple of regular expressions, each `re.fullmatch`-ed against dotted module paths
(diffusers UNet2DConditionModel / transformers CLIPTextModel names). Counts on the full-size
SD 1.4 architecture: unet-attn 128 modules, unet-transformer 192 (the kohya default: every Linear
and 1x1 conv inside a Transformer2DModel), unet-conv 86, text-encoder 72.
The optional `(?:.+\\.)?` prefix lets a preset also match a model nested one level deeper
(e.g. `unet.down_blocks...`); the text-encoder patterns match both the transformers-5 path
`encoder.layers.N...` and the transformers-4 / file path `text_model.encoder.layers.N...`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from sdlora.errors import SdloraError

_ANY = r"(?:.+\.)?"
_ATTN = r"attn[12]\.(?:to_q|to_k|to_v|to_out\.0)"

PRESETS: dict[str, tuple[str, ...]] = {
    # to_q, to_k, to_v, to_out.0 of every self- and cross-attention
    "unet-attn": (rf"{_ANY}transformer_blocks\.\d+\.{_ATTN}",),
    # kohya's default: proj_in/out (1x1 conv in SD 1.x), attention and feed-forward Linears
    "unet-transformer": (
        rf"{_ANY}attentions\.\d+\.(?:proj_in|proj_out)",
        rf"{_ANY}transformer_blocks\.\d+\.(?:{_ATTN}|ff\.net\.0\.proj|ff\.net\.2)",
    ),
    # LoCon add-on: ResnetBlock2D convs (3x3 and 1x1 shortcut), time embedding Linear, resamplers
    "unet-conv": (
        rf"{_ANY}resnets\.\d+\.(?:conv1|conv2|conv_shortcut|time_emb_proj)",
        rf"{_ANY}(?:downsamplers|upsamplers)\.\d+\.conv",
    ),
    # CLIP attention projections and MLP
    "text-encoder": (
        rf"{_ANY}encoder\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc1|mlp\.fc2)",
    ),
}


def expand_targets(targets: str | Sequence[str]) -> list[tuple[str, str]]:
    """(label, regex) pairs for a preset name or a list of regexes and/or preset names."""
    if isinstance(targets, str):
        if targets not in PRESETS:
            raise SdloraError(f"unknown preset {targets!r}; known presets: {', '.join(PRESETS)} "
                              "(or pass a list of module-path regexes)")
        targets = [targets]
    if not targets:
        raise SdloraError("targets is empty; give a preset name or a list of module-path regexes")
    pairs = []
    for item in targets:
        if not isinstance(item, str):
            raise SdloraError(f"targets must be strings, got {item!r}")
        if item in PRESETS:
            pairs += [(f"preset {item!r}", regex) for regex in PRESETS[item]]
        else:
            pairs.append((f"pattern {item!r}", item))
    return pairs


def compile_pattern(label: str, regex: str) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as err:
        raise SdloraError(f"{label} is not a valid regular expression: {err}") from None


def resolve_targets(targets: str | Sequence[str], paths: Sequence[str]) -> list[str]:
    """The `paths` (in their order) that some target fullmatches.

    Raises SdloraError for an unknown preset, an invalid regex, or a preset/pattern that matches
    none of `paths` (a typo must never silently train nothing).
    """
    pairs = [(label, compile_pattern(label, regex)) for label, regex in expand_targets(targets)]
    hit_labels: set[str] = set()  # a preset counts as matching when any of its regexes does
    selected = []
    for path in paths:
        matched = {label for label, pattern in pairs if pattern.fullmatch(path)}
        hit_labels |= matched
        if matched:
            selected.append(path)
    for label, _ in pairs:
        if label not in hit_labels:
            example = f" (paths look like {paths[0]!r})" if paths else ""
            raise SdloraError(f"{label} matches no Linear/Conv2d module of this model{example}; "
                              f"known presets: {', '.join(PRESETS)}")
    return selected


def presets_for(path: str) -> set[str]:
    """Names of the presets that select module `path` (e.g. to explain what a preset covers)."""
    return {name for name, regexes in PRESETS.items() if any(re.fullmatch(r, path) for r in regexes)}
