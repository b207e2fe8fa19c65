"""Extract a LoRA from two models: per module, the best low-rank fit (SVD) of  W_tuned - W_base.

The modules are kohya's: the UNet's transformer Linears and 1x1 projections, the text encoder's
attention and MLP, and with `conv` the LoCon set (ResNet convs, shortcuts, resamplers). Each module's
change is cut to `rank` (`conv_rank` for kxk convs) or by a rank rule (sdlora.formats.ranks); the
scale is 1 (alpha = rank). A module whose change is within the storage precision of the two
models (within the epsilon of the narrower dtype, e.g. an fp16 copy of the base) is left out, and the
text encoder as a whole when none of its modules changed.

Memory is bounded: the models are read one module at a time (sdlora.models.model_weights: single
.safetensors files and diffusers folders lazily, other forms loaded whole), and one module's two
weights, its change and its SVD are held at a time.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats import ranks
from sdlora.formats.io import save_lora_file
from sdlora.formats.modules import lora_paths
from sdlora.formats.resize import ModuleResize, ResizeReport, check_rank, svd_factors
from sdlora.lora import resolve_targets
from sdlora.models.components import SDComponents
from sdlora.models.model_weights import ModelWeights, open_weights
from sdlora.models.names import canonical_te_path

log = logging.getLogger(__name__)


@dataclass
class ExtractReport(ResizeReport):
    unchanged: list[str] = field(default_factory=list)  # modules left out: no change beyond rounding
    text_encoder_skipped: bool = False

    @property
    def max_error(self) -> float:
        """The largest relative error ||fit - delta||_F / ||delta||_F over the extracted modules."""
        return max(((1 - min(m.energy, 1.0)) ** 0.5 for m in self.modules), default=0.0)


def sites(model: SDComponents | ModelWeights, conv: bool) -> Iterator[tuple[str, str, str]]:
    """(component, model path, canonical path) of every module to extract, UNet first."""
    presets = ["unet-transformer", "unet-conv"] if conv else ["unet-transformer"]
    for path in resolve_targets(presets, lora_paths(model.unet)):
        yield "unet", path, path
    for path in resolve_targets("text-encoder", lora_paths(model.text_encoder)):
        yield "text_encoder", path, canonical_te_path(path)


def _missing(path: str, which: str) -> SdloraError:
    return SdloraError(f"{which} has no module {path}: BASE and TUNED are different architectures")


def _weight(model: nn.Module, path: str, which: str) -> torch.Tensor:
    try:
        return model.get_submodule(path).weight
    except AttributeError:
        raise _missing(path, which) from None


def module_change(base: nn.Module, tuned: nn.Module, path: str) -> torch.Tensor | None:
    """W_tuned - W_base of module `path` of two loaded networks (see weight_change)."""
    return weight_change(_weight(base, path, "BASE"), _weight(tuned, path, "TUNED"), path)


def weight_change(wb: torch.Tensor, wt: torch.Tensor, path: str) -> torch.Tensor | None:
    """wt - wb in fp32 (None when within rounding); SdloraError when the shapes differ."""
    if wb.shape != wt.shape:
        raise SdloraError(f"module {path}: BASE has shape {tuple(wb.shape)}, TUNED {tuple(wt.shape)}; "
                          "the two models are different architectures")
    wb, wt = wb.detach().float(), wt.detach().float()
    delta = wt - wb
    info = max(stored_precision(wb), stored_precision(wt), key=lambda f: f.eps)
    # one rounding step, relative for normal numbers, absolute in the subnormal range
    if bool((delta.abs() <= info.eps * (torch.maximum(wb.abs(), wt.abs()) + info.tiny)).all()):
        return None
    return delta


def _read(model: ModelWeights, component: str, path: str, which: str) -> torch.Tensor:
    weight = model.weight(component, path)
    if weight is None:
        raise _missing(path, which)
    return weight


def stored_precision(weight: torch.Tensor) -> torch.finfo:
    """finfo of the narrowest float type that holds `weight` exactly (its file's precision:
    an fp16 model loads as fp32 values that round-trip through fp16)."""
    for dtype in (torch.bfloat16, torch.float16):
        if torch.equal(weight, weight.to(dtype).float()):
            return torch.finfo(dtype)
    return torch.finfo(torch.float32)


def fit_module(delta: torch.Tensor, rank: int | None, rule: str | None, threshold: float | None,
               name: str) -> tuple[dict[str, torch.Tensor], ModuleResize]:
    """The LoRA factors of one change (scale 1) and its report line."""
    flat = delta.flatten(1)  # (out, in*kh*kw)
    svd = torch.linalg.svd(flat.double(), full_matrices=False)
    cap = rank if rank is not None else svd[1].numel()
    new = ranks.pick_rank(svd[1], cap, rule, threshold)
    up, down, sigma = svd_factors(flat, new, svd)
    kept, total = ranks.retained(sigma, new)
    params = {C.DOWN: down.reshape((new,) + tuple(delta.shape[1:])),
              C.UP: up.reshape((delta.shape[0], new) + (1,) * (delta.dim() - 2)),
              C.ALPHA: C.alpha_tensor(new)}
    return params, ModuleResize(name, min(flat.shape), new, kept, total)


def extract_lora(base: SDComponents | ModelWeights, tuned: SDComponents | ModelWeights, *, rank: int | None = 4,
                 conv_rank: int | None = None, conv: bool = False, rule: str | None = None,
                 threshold: float | None = None):
    """(canonical LoRA (fp32), ExtractReport) of tuned - base. With `rule`, rank/conv_rank are maxima.
    Loaded models (SDComponents) are read in place; ModelWeights one module at a time."""
    check_rank("--rank", rank)
    check_rank("--conv-rank", conv_rank)
    if rule is not None:
        ranks.check_rule(rule, threshold)
    elif rank is None:
        raise SdloraError("give a rank, or a dynamic method with a threshold")
    base, tuned = (m if isinstance(m, ModelWeights) else ModelWeights.loaded(m) for m in (base, tuned))
    report, modules = ExtractReport(), {}
    for component, path, name in sites(base, conv):
        delta = weight_change(_read(base, component, path, "BASE"), _read(tuned, component, path, "TUNED"), path)
        if delta is None:
            report.unchanged.append(f"{component}.{name}")
            continue
        kxk = delta.dim() == 4 and tuple(delta.shape[2:]) != (1, 1)
        target = conv_rank if kxk and conv_rank is not None else rank
        modules[(component, name)], line = fit_module(delta, target, rule, threshold, f"{component}.{name}")
        report.modules.append(line)
        del delta
    if not modules:
        raise SdloraError("BASE and TUNED have the same weights in every LoRA module; there is nothing to extract")
    report.text_encoder_skipped = not any(c == "text_encoder" for c, _ in modules)
    if report.text_encoder_skipped:
        log.info("the text encoder is unchanged; the LoRA holds the UNet only")
    return C.ungroup(modules), report


def extract_lora_file(base: str | Path, tuned: str | Path, out: str | Path, *, fmt: str = "kohya",
                      dtype: torch.dtype | None = torch.float16, **options) -> ExtractReport:
    """Open BASE and TUNED (any form sdlora loads: `tiny`, folder, single file; read one module at a
    time where the files allow), extract, write `out`."""
    from sdlora.models.loader import resolve_model

    for model in (base, tuned):  # a missing model is named before the slow loading starts
        resolve_model(model)
    lora, report = extract_lora(open_weights(base), open_weights(tuned), **options)
    metadata = {"sdlora_extracted_from": f"{Path(str(tuned)).name} - {Path(str(base)).name}",
                "sdlora_extract_energy": f"{report.energy:.6f}", "ss_network_module": "networks.lora"}
    save_lora_file(out, lora, metadata, fmt, dtype)
    report.size = Path(out).stat().st_size
    return report

