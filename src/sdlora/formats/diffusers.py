"""diffusers / PEFT LoRA files (`pytorch_lora_weights.safetensors`), to and from the canonical dict.

    unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight    (rank, in)
    text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight         (out, rank)
    unet.<path>.lora_magnitude_vector.weight                                        DoRA (PEFT shape)

These files hold no alphas: diffusers keeps the PEFT LoraConfig as JSON under the metadata key
`lora_adapter_metadata` ({"unet.r", "unet.lora_alpha", "unet.alpha_pattern", ...}); without it
alpha = rank. Older diffusers spellings (`.lora.down.weight`, attention-processor `to_q_lora`) are
read through the tables below too.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping

import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats import networks
from sdlora.formats.modules import ModulePaths, resolve_paths
from sdlora.formats.peft_config import METADATA_KEY, config_alpha, parse_config
from sdlora.models.names import PREFIX as TE_PREFIX

# DoRA magnitudes are written with `.weight`: PEFT's loader accepts both spellings, transformers 5's
# text-encoder loader only this one (PEFT's own state dicts drop it).
WRITE_PARAMS = {C.DOWN: "lora_A.weight", C.UP: "lora_B.weight", C.DORA: "lora_magnitude_vector.weight"}
READ_PARAMS = {  # file suffix -> canonical parameter; the longest matching suffix wins
    "lora_A.weight": C.DOWN, "lora_B.weight": C.UP,
    "lora.down.weight": C.DOWN, "lora.up.weight": C.UP,
    "lora_linear_layer.down.weight": C.DOWN, "lora_linear_layer.up.weight": C.UP,
    "lora_magnitude_vector": C.DORA, "lora_magnitude_vector.weight": C.DORA,
    "down.weight": C.DOWN, "up.weight": C.UP,  # only after a legacy attention-processor name
    "alpha": C.ALPHA,
}
LONGEST_FIRST = tuple(sorted(READ_PARAMS, key=len, reverse=True))
LEGACY_ONLY = ("down.weight", "up.weight")
# Trailing path segments of diffusers' old attention-processor LoRAs -> the module they adapt.
LEGACY_MODULES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("processor", "to_q_lora"): ("to_q",), ("processor", "to_k_lora"): ("to_k",),
    ("processor", "to_v_lora"): ("to_v",), ("processor", "to_out_lora"): ("to_out", "0"),
    ("self_attn", "to_q_lora"): ("self_attn", "q_proj"), ("self_attn", "to_k_lora"): ("self_attn", "k_proj"),
    ("self_attn", "to_v_lora"): ("self_attn", "v_proj"), ("self_attn", "to_out_lora"): ("self_attn", "out_proj"),
}


def _pattern_path(component: str, path: str) -> str:
    """The path as written into PEFT patterns: text-encoder paths without `text_model.`, so that they
    suffix-match the model under both transformers 4 (`text_model.encoder...`) and 5 (`encoder...`)."""
    if component == "text_encoder" and path.startswith(TE_PREFIX + "."):
        return path[len(TE_PREFIX) + 1:]
    return path


def _peft_dora(magnitude: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    # canonical (out, 1[, 1, 1]) -> PEFT's (out,) for Linear, (1, out, 1, 1) for Conv2d
    return magnitude.reshape(1, -1, 1, 1) if down.dim() == 4 else magnitude.reshape(-1)


def to_diffusers(lora: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None):
    """Canonical dict -> (diffusers state dict, metadata with `lora_adapter_metadata`).

    diffusers' loader has no LoHa / LoKr: such modules are refused with the two ways that work."""
    modules = C.group(lora)
    refuse_factored(modules)
    state: dict[str, torch.Tensor] = {}
    for (component, path), params in modules.items():
        for param, tensor in params.items():
            if param in WRITE_PARAMS:
                tensor = _peft_dora(tensor, params[C.DOWN]) if param == C.DORA else tensor
                state[f"{component}.{path}.{WRITE_PARAMS[param]}"] = tensor
    config: dict[str, object] = {}
    for component in C.COMPONENTS:
        mine = {path: params for (c, path), params in modules.items() if c == component}
        if mine:
            config.update({f"{component}.{k}": v for k, v in peft_config(component, mine).items()})
    return state, {**dict(metadata or {}), METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)}


def refuse_factored(modules: Mapping[C.Module, Mapping[str, torch.Tensor]]) -> None:
    factored = [(c, p, networks.algorithm(ps)) for (c, p), ps in modules.items() if networks.is_factored(ps)]
    if factored:
        kinds = "/".join(sorted({networks.LABELS[a] for _, _, a in factored}))
        component, path, _ = factored[0]
        raise SdloraError(f"the diffusers format cannot hold {kinds} modules ({len(factored)} here, e.g. "
                          f"{component}.{path}): diffusers' LoRA loader reads only lora_down/lora_up pairs. Either "
                          "merge the file into the model (`sdlora merge-into-model BASE FILE OUT`), or make it a "
                          "plain LoRA first (`sdlora resize FILE OUT --rank R`: SVD of each module's weight change, "
                          "the retained energy is printed) and convert that")


def peft_config(component: str, modules: Mapping[str, Mapping[str, torch.Tensor]]) -> dict:
    """LoraConfig fields: the most common rank/alpha, exceptions in rank_pattern/alpha_pattern."""
    ranks = {path: C.rank(p) for path, p in modules.items()}
    alphas = {path: C.alpha(p) for path, p in modules.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]

    def pattern(values, default):  # escaped: PEFT treats these keys as regexes
        return {re.escape(_pattern_path(component, p)): v for p, v in values.items() if v != default}

    return {
        "r": r, "lora_alpha": alpha,
        "rank_pattern": pattern(ranks, r), "alpha_pattern": pattern(alphas, alpha),
        "target_modules": sorted(_pattern_path(component, p) for p in modules),
        "use_dora": any(C.DORA in p for p in modules.values()),
        "use_rslora": False, "lora_dropout": 0.0, "bias": "none", "init_lora_weights": True,
    }


def _read_key(key: str) -> tuple[str, str, str] | None:
    """"unet.a.b.lora_A.weight" -> ("unet", "a.b", lora_down.weight), legacy names resolved; else None."""
    component, _, rest = key.partition(".")
    for suffix in LONGEST_FIRST:
        if rest.endswith("." + suffix):
            parts = tuple(rest[: -len(suffix) - 1].split("."))
            for tail, module in LEGACY_MODULES.items():
                if parts[-len(tail):] == tail:
                    return component, ".".join(parts[: -len(tail)] + module), READ_PARAMS[suffix]
            return None if suffix in LEGACY_ONLY else (component, ".".join(parts), READ_PARAMS[suffix])
    return None


def from_diffusers(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None, *,
                   module_paths: ModulePaths | None = None, source: str = "diffusers LoRA"):
    """diffusers state dict -> (canonical dict, metadata). Unknown keys are an error listing them."""
    metadata = dict(metadata or {})
    known = {c: set(paths) for c, paths in resolve_paths(module_paths).items()}
    modules: dict[C.Module, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in state.items():
        parsed = _read_key(key)
        if parsed is None or parsed[1] not in known.get(parsed[0], ()):
            unknown.append(key)
            continue
        modules.setdefault(parsed[:2], {})[parsed[2]] = tensor
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5])
        raise SdloraError(f"{source}: {len(unknown)} key(s) name no SD 1.x module or LoRA parameter, e.g. {shown}")
    config = parse_config(metadata, source)
    for (component, path), params in modules.items():
        if C.DORA in params and C.UP in params and params[C.DORA].numel() == params[C.UP].shape[0]:
            params[C.DORA] = params[C.DORA].reshape(C.dora_shape(params))
        if C.ALPHA not in params and C.DOWN in params:
            alpha = config_alpha(config, component, [path, _pattern_path(component, path)], C.rank(params))
            if alpha is not None:
                params[C.ALPHA] = C.alpha_tensor(alpha)
    return C.normalize(C.ungroup(modules)), metadata
