"""The canonical in-memory LoRA: a flat dict with keys `"{component}.{module_path}.{param}"`.

    unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_down.weight   (rank, in)
    unet.down_blocks.0.resnets.0.conv1.lora_down.weight                      (rank, in, kh, kw)
    unet.down_blocks.0.resnets.0.conv1.lora_up.weight                        (out, rank, 1, 1)
    text_encoder.text_model.encoder.layers.0.self_attn.q_proj.alpha          0-d float32
    ....dora_scale                                         (out, 1) / (out, 1, 1, 1): DoRA magnitude

Every format converts to and from this form; `alpha` is always present and read by the one alpha
rule of sdlora.lora.keys (missing or 0 means alpha = rank). Text-encoder paths always carry `text_model.`, whatever transformers is installed.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from sdlora.errors import SdloraError
from sdlora.formats import networks
from sdlora.lora import keys
from sdlora.lora.keys import ALPHA, DORA, DOWN, UP  # noqa: F401 (re-exported)

COMPONENTS = ("unet", "text_encoder")
PARAMS = keys.SUFFIXES  # LoRA, LoHa and LoKr parameters (see formats.networks)

Module = tuple[str, str]  # (component, module_path)


def split_key(key: str) -> tuple[str, str, str]:
    """"unet.a.b.lora_up.weight" -> ("unet", "a.b", "lora_up.weight"); SdloraError when malformed."""
    component, _, rest = key.partition(".")
    if component in COMPONENTS:
        try:
            return (component, *keys.split_key(rest))
        except SdloraError:
            pass
    raise SdloraError(f"{key!r} is not a canonical LoRA key "
                      f"(expected '<{'|'.join(COMPONENTS)}>.<module path>.<{'|'.join(PARAMS)}>')")


def join_key(component: str, path: str, param: str) -> str:
    return f"{component}.{path}.{param}"


def group(lora: Mapping[str, torch.Tensor]) -> dict[Module, dict[str, torch.Tensor]]:
    """{(component, path): {param: tensor}} in key order; checks every module has down and up."""
    modules: dict[Module, dict[str, torch.Tensor]] = {}
    for key, tensor in lora.items():
        component, path, param = split_key(key)
        modules.setdefault((component, path), {})[param] = tensor
    for (component, path), params in modules.items():
        networks.check_complete(params, f"{component}.{path}")
    return modules


def ungroup(modules: Mapping[Module, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {join_key(c, p, param): t for (c, p), params in modules.items() for param, t in params.items()}


def rank(params: Mapping[str, torch.Tensor]) -> int:
    return networks.rank(params)


def alpha(params: Mapping[str, torch.Tensor], where: str = "LoRA module") -> float:
    """The module's alpha as a float, by the one alpha rule (absent or 0: alpha = rank)."""
    return keys.alpha_value(params.get(ALPHA), rank(params), where)


def dora_shape(params: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """The canonical DoRA magnitude shape: one norm per output row, (out, 1) or (out, 1, 1, 1)
    (as sdlora.lora.state and LyCORIS/ComfyUI hold it)."""
    up = params[UP]
    return (int(up.shape[0]),) + (1,) * (up.dim() - 1)


def alpha_tensor(value: float) -> torch.Tensor:
    return torch.tensor(float(value), dtype=torch.float32)


def with_alpha(params: Mapping[str, torch.Tensor], where: str = "LoRA module") -> dict[str, torch.Tensor]:
    """A copy of `params` whose alpha is an explicit 0-d float32 tensor (rank when it was missing or 0)."""
    return {**params, ALPHA: alpha_tensor(alpha(params, where))}


def check_shapes(component: str, path: str, params: Mapping[str, torch.Tensor]) -> None:
    """down (r, in[, kh, kw]) and up (out, r[, 1, 1]) must agree (LoHa / LoKr: the factors must build a
    weight change); alpha must be a scalar."""
    name = f"{component}.{path}"
    if networks.is_factored(params):
        networks.check_factored(params, name)
        if ALPHA in params and params[ALPHA].numel() != 1:
            raise SdloraError(f"module {name}: alpha must be a single number, got shape {tuple(params[ALPHA].shape)}")
        return
    down, up = params[DOWN], params[UP]
    if down.dim() not in (2, 4) or up.dim() != down.dim():
        raise SdloraError(f"LoRA module {name}: lora_down {tuple(down.shape)} / lora_up {tuple(up.shape)} "
                          "are neither Linear (2-D) nor Conv2d (4-D) weights")
    if up.shape[1] != down.shape[0]:
        raise SdloraError(f"LoRA module {name}: lora_up {tuple(up.shape)} does not match the rank of "
                          f"lora_down {tuple(down.shape)}")
    if ALPHA in params and params[ALPHA].numel() != 1:
        raise SdloraError(f"LoRA module {name}: alpha must be a single number, got shape {tuple(params[ALPHA].shape)}")
    if DORA in params and tuple(params[DORA].shape) != dora_shape(params):
        raise SdloraError(f"LoRA module {name}: dora_scale has shape {tuple(params[DORA].shape)}, expected "
                          f"{dora_shape(params)} (one magnitude per output channel)")


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first key whose tensor holds NaN or inf (None when all are finite): the one finiteness check."""
    return next((k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)


def normalize(lora: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validate a canonical dict (shapes, finite values) and make every module's alpha explicit (0-d float32)."""
    modules = group(lora)
    for (component, path), params in modules.items():
        check_shapes(component, path, params)
        bad = first_non_finite(params)
        if bad is not None:
            raise SdloraError(f"LoRA module {component}.{path}: {bad} holds NaN or infinite values; "
                              "the LoRA is broken (re-train or re-export it)")
    return ungroup({m: with_alpha(p, f"LoRA module {m[0]}.{m[1]}") for m, p in modules.items()})


def scale(params: Mapping[str, torch.Tensor]) -> float:
    """alpha / rank (a LoKr module with both halves full: 1)."""
    return 1.0 if networks.full_rank_lokr(params) else alpha(params) / rank(params)


def delta(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The module's weight change (LoRA:  (alpha / rank) * up @ down; LoHa / LoKr: scale times the
    factor product), fp32, flattened to (out, in*kh*kw); DoRA magnitudes are not applied."""
    if networks.is_factored(params):
        return scale(params) * networks.factored_delta(params)
    down = params[DOWN].float().flatten(1)  # (r, in*kh*kw)
    up = params[UP].float().flatten(1)  # (out, r)
    return (alpha(params) / rank(params)) * (up @ down)


def to_float32(lora: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached fp32 CPU copies (the form extract() returns and the converters expect)."""
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in lora.items()}


def parameter_count(lora: Mapping[str, torch.Tensor]) -> int:
    """Trainable numbers in the LoRA (down, up and DoRA magnitudes; alphas are settings)."""
    return sum(t.numel() for k, t in lora.items() if not k.endswith("." + ALPHA))
