"""Re-rank a LoRA by SVD: each module's weight change  scale * up @ down  is cut to its best rank-r
approximation (Eckart-Young), reporting how much of its energy (squared singular values) is kept.
LoHa / LoKr modules become plain LoRA modules the same way (alpha = r), which is how their files
reach tools that read only LoRA (diffusers).

The scale alpha / rank is kept per module (new alpha = alpha * r' / r, as kohya's resize_lora does),
so a resized LoRA behaves like the original under the same multiplier and trains on the same way.
DoRA magnitudes are carried over unchanged. Modules whose rank is already <= r are copied as they are.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats import networks
from sdlora.formats.modules import sd14_kernels
from sdlora.formats.io import load_lora_file, save_lora_file


@dataclass
class ModuleResize:
    name: str
    old_rank: int
    new_rank: int
    kept: float  # sum of the kept sigma^2
    total: float  # sum of all sigma^2 (the squared Frobenius norm of the weight change)

    @property
    def energy(self) -> float:
        """Retained fraction of the energy (1.0 when nothing was cut)."""
        return 1.0 if self.total == 0 else self.kept / self.total


@dataclass
class ResizeReport:
    modules: list[ModuleResize] = field(default_factory=list)

    @property
    def energy(self) -> float:
        """Retained fraction of the total energy over all modules (each module weighted by its energy)."""
        total = sum(m.total for m in self.modules) if self.modules else 0.0
        return 1.0 if total == 0 else sum(m.kept for m in self.modules) / total

    @property
    def min_energy(self) -> float:
        return min((m.energy for m in self.modules), default=1.0)


def svd_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(up (out, r), down (r, in), sigma (all singular values)) with up @ down the best rank-r fit.

    sqrt(sigma) goes to both factors so that neither is tiny (fp16-safe).
    """
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)  # float64: stable on small values
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float(), s


def factored_to_lora(params: Mapping[str, torch.Tensor], rank: int, name: str,
                     kernel: tuple[int, int] | None) -> tuple[dict, ModuleResize]:
    """A LoHa / LoKr module as the best rank-r plain LoRA of its weight change (alpha = r: scale 1).

    `kernel`: the conv kernel of the module (None for a Linear), as LoRA files store conv shapes."""
    delta = C.delta(params)  # (out, in*kh*kw), fp32, scaled
    new = min(rank, *delta.shape)
    up, down, sigma = svd_factors(delta, new)
    if kernel is not None:  # LoCon layout: down has the kernel, up is 1x1
        down = down.reshape(new, -1, *kernel)
        up = up.reshape(up.shape[0], new, 1, 1)
    out = {C.DOWN: down, C.UP: up, C.ALPHA: C.alpha_tensor(new)}
    if C.DORA in params:
        out[C.DORA] = params[C.DORA].reshape(C.dora_shape(out))
    energy = sigma.pow(2)
    return out, ModuleResize(name, C.rank(params), new, float(energy[:new].sum()), float(energy.sum()))


def resize_module(params: Mapping[str, torch.Tensor], rank: int, name: str) -> tuple[dict, ModuleResize]:
    """One module re-ranked to min(rank, its rank); returns (params, report line)."""
    old = C.rank(params)
    new = min(rank, old)
    delta = C.delta(params)  # (out, in*kh*kw), fp32
    if new == old:
        energy = float(delta.double().pow(2).sum())
        return dict(params), ModuleResize(name, old, old, energy, energy)
    up, down, sigma = svd_factors(delta, new)
    scale = C.alpha(params) / old  # kept: alpha' / r' = alpha / r
    out = {
        C.DOWN: down.reshape((new,) + tuple(params[C.DOWN].shape[1:])),
        C.UP: (up / scale).reshape((params[C.UP].shape[0], new) + tuple(params[C.UP].shape[2:])),
        C.ALPHA: C.alpha_tensor(scale * new),
    }
    if C.DORA in params:
        out[C.DORA] = params[C.DORA]
    energy = sigma.pow(2)
    kept, total = float(energy[:new].sum()), float(energy.sum())
    return out, ModuleResize(name, old, new, kept, total)


def resize_lora(lora: Mapping[str, torch.Tensor], rank: int, *, conv_rank: int | None = None):
    """(re-ranked canonical dict (fp32), ResizeReport). `conv_rank` applies to 3x3 convs (default: rank)."""
    for label, value in (("rank", rank), ("conv rank", conv_rank)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise SdloraError(f"{label} must be a positive integer, got {value!r}")
    report = ResizeReport()
    modules = {}
    for (component, path), params in C.group(C.normalize(lora)).items():
        params = {k: v.float() for k, v in params.items()}
        kernel = _kernel(component, path, params)
        target = conv_rank if kernel not in (None, (1, 1)) and conv_rank is not None else rank
        if networks.is_factored(params):  # LoHa / LoKr -> plain LoRA
            modules[(component, path)], line = factored_to_lora(params, target, f"{component}.{path}", kernel)
        else:
            modules[(component, path)], line = resize_module(params, target, f"{component}.{path}")
        report.modules.append(line)
    return C.ungroup(modules), report


def _kernel(component: str, path: str, params: Mapping[str, torch.Tensor]) -> tuple[int, int] | None:
    if not networks.is_factored(params):
        down = params[C.DOWN]
        return tuple(down.shape[2:]) if down.dim() == 4 else None
    kernels = sd14_kernels()[component]
    if path not in kernels:
        raise SdloraError(f"{component}.{path} is not a Linear/Conv2d module of SD 1.x; cannot make it a plain LoRA")
    return kernels[path]


def resize_lora_file(src: str | Path, dst: str | Path, rank: int, *, conv_rank: int | None = None,
                     fmt: str | None = None, dtype: torch.dtype | None = None) -> ResizeReport:
    """Re-rank the LoRA file `src` into `dst` (format: `fmt`, default the source's; dtype: default the source's)."""
    lora, metadata, src_fmt = load_lora_file(src)
    if dtype is None:
        dtype = next(t.dtype for k, t in lora.items() if not k.endswith(".alpha"))
    resized, report = resize_lora(lora, rank, conv_rank=conv_rank)
    metadata = {**metadata, "sdlora_resized_from": Path(src).name, "sdlora_resize_energy": f"{report.energy:.6f}"}
    save_lora_file(dst, resized, metadata, fmt or src_fmt, dtype)
    return report
