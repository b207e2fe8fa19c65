"""Re-rank a LoRA by SVD: each module's weight change  scale * up @ down  is cut to its best rank-r
approximation (Eckart-Young), reporting how much of its energy (squared singular values) is kept.
LoHa / LoKr modules become plain LoRA modules the same way (alpha = r), which is how their files
reach tools that read only LoRA (diffusers).

The scale alpha / rank is kept per module (new alpha = alpha * r' / r, as kohya's resize_lora does),
so a resized LoRA behaves like the original under the same multiplier and trains on the same way.
DoRA magnitudes are carried over unchanged. Modules whose rank is already <= r are copied as they are.
With `dynamic` (kohya's sv_ratio / sv_fro / sv_cumulative, see sdlora.formats.ranks) each module
gets its own rank from its singular values, capped by `rank` (default: the module's rank).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats import networks, ranks
from sdlora.formats.modules import sd14_kernels
from sdlora.formats.io import load_lora_file_with_embeddings, save_lora_file, warn_dropped_embeddings


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
    size: int | None = None  # bytes of the written file

    @property
    def energy(self) -> float:
        """Retained fraction of the total energy over all modules (each module weighted by its energy)."""
        total = sum(m.total for m in self.modules) if self.modules else 0.0
        return 1.0 if total == 0 else sum(m.kept for m in self.modules) / total

    @property
    def min_energy(self) -> float:
        return min((m.energy for m in self.modules), default=1.0)


def svd_factors(delta: torch.Tensor, rank: int, svd=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(up (out, r), down (r, in), sigma (all singular values)) with up @ down the best rank-r fit.

    sqrt(sigma) goes to both factors so that neither is tiny (fp16-safe). `svd`: (u, s, vh) if known.
    """
    u, s, vh = svd if svd is not None else torch.linalg.svd(delta.double(), full_matrices=False)  # float64
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float(), s


def lora_factors(delta: torch.Tensor, cap: int, kernel: tuple[int, int] | None, dynamic: str | None = None,
                 threshold: float | None = None) -> tuple[dict[str, torch.Tensor], float, float]:
    """({down, up, alpha = r}: the best plain-LoRA fit of `delta` (out, in*kh*kw), scale 1), kept, total).

    The rank is `cap`, or by the rule `dynamic` at most `cap`; `kernel`: the conv kernel (None: Linear),
    as LoRA files store convs (down has the kernel, up is 1x1)."""
    svd = torch.linalg.svd(delta.double(), full_matrices=False)  # float64: stable on small values
    new = ranks.pick_rank(svd[1], cap, dynamic, threshold)
    up, down, sigma = svd_factors(delta, new, svd)
    if kernel is not None:
        down, up = down.reshape(new, -1, *kernel), up.reshape(up.shape[0], new, 1, 1)
    kept, total = ranks.retained(sigma, new)
    return {C.DOWN: down, C.UP: up, C.ALPHA: C.alpha_tensor(new)}, kept, total


def factored_to_lora(params: Mapping[str, torch.Tensor], rank: int | None, name: str,
                     kernel: tuple[int, int] | None, dynamic: str | None = None,
                     threshold: float | None = None) -> tuple[dict, ModuleResize]:
    """A LoHa / LoKr module as the best rank-r plain LoRA of its weight change (alpha = r: scale 1)."""
    delta = C.delta(params)  # (out, in*kh*kw), fp32, scaled
    cap = min(delta.shape) if rank is None else min(rank, *delta.shape)
    out, kept, total = lora_factors(delta, cap, kernel, dynamic, threshold)
    if C.DORA in params:
        out[C.DORA] = params[C.DORA].reshape(C.dora_shape(out))
    return out, ModuleResize(name, C.rank(params), C.rank(out), kept, total)


def resize_module(params: Mapping[str, torch.Tensor], rank: int | None, name: str,
                  dynamic: str | None = None, threshold: float | None = None) -> tuple[dict, ModuleResize]:
    """One module re-ranked to min(rank, its rank), or by the rule `dynamic`; returns (params, report line)."""
    old = C.rank(params)
    cap = old if rank is None else min(rank, old)
    delta = C.delta(params)  # (out, in*kh*kw), fp32
    if dynamic is None and cap == old:
        energy = float(delta.double().pow(2).sum())
        return dict(params), ModuleResize(name, old, old, energy, energy)
    svd = torch.linalg.svd(delta.double(), full_matrices=False)
    new = ranks.pick_rank(svd[1], cap, dynamic, threshold)
    kept, total = ranks.retained(svd[1], new)
    if new == old:
        return dict(params), ModuleResize(name, old, old, total, total)
    up, down, _ = svd_factors(delta, new, svd)
    scale = C.alpha(params) / old  # kept: alpha' / r' = alpha / r
    out = {
        C.DOWN: down.reshape((new,) + tuple(params[C.DOWN].shape[1:])),
        C.UP: (up / scale).reshape((params[C.UP].shape[0], new) + tuple(params[C.UP].shape[2:])),
        C.ALPHA: C.alpha_tensor(scale * new),
    }
    if C.DORA in params:
        out[C.DORA] = params[C.DORA]
    return out, ModuleResize(name, old, new, kept, total)


def check_rank(label: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise SdloraError(f"{label} must be a positive integer, got {value!r}")


def resize_lora(lora: Mapping[str, torch.Tensor], rank: int | None, *, conv_rank: int | None = None,
                dynamic: str | None = None, threshold: float | None = None):
    """(re-ranked canonical dict (fp32), ResizeReport). `conv_rank` applies to 3x3 convs (default: rank).

    With `dynamic` (a rule of sdlora.formats.ranks) `rank`/`conv_rank` are maxima and may be None."""
    for label, value in (("rank", rank), ("conv rank", conv_rank)):
        check_rank(label, value)
    if dynamic is None and rank is None:
        raise SdloraError("give a rank, or a dynamic method with a threshold")
    if dynamic is not None:
        ranks.check_rule(dynamic, threshold)
    report = ResizeReport()
    modules = {}
    for (component, path), params in C.group(C.normalize(lora)).items():
        params = {k: v.float() for k, v in params.items()}
        kernel = module_kernel(component, path, params)
        target = conv_rank if kernel not in (None, (1, 1)) and conv_rank is not None else rank
        name = f"{component}.{path}"
        if networks.is_factored(params):  # LoHa / LoKr -> plain LoRA
            modules[(component, path)], line = factored_to_lora(params, target, name, kernel, dynamic, threshold)
        else:
            modules[(component, path)], line = resize_module(params, target, name, dynamic, threshold)
        report.modules.append(line)
    return C.ungroup(modules), report


def module_kernel(component: str, path: str, params: Mapping[str, torch.Tensor]) -> tuple[int, int] | None:
    if not networks.is_factored(params):
        down = params[C.DOWN]
        return tuple(down.shape[2:]) if down.dim() == 4 else None
    kernels = sd14_kernels()[component]
    if path not in kernels:
        raise SdloraError(f"{component}.{path} is not a Linear/Conv2d module of SD 1.x; cannot make it a plain LoRA")
    return kernels[path]


def resize_lora_file(src: str | Path, dst: str | Path, rank: int | None, *, conv_rank: int | None = None,
                     fmt: str | None = None, dtype: torch.dtype | None = None, dynamic: str | None = None,
                     threshold: float | None = None) -> ResizeReport:
    """Re-rank the LoRA file `src` into `dst` (format: `fmt`, default the source's; dtype: default the source's).
    Token embeddings bundled in `src` are written into `dst` unchanged (kohya files; a warning otherwise)."""
    lora, metadata, src_fmt, bundled = load_lora_file_with_embeddings(src)
    if dtype is None:
        dtype = next(t.dtype for k, t in lora.items() if not k.endswith(".alpha"))
    resized, report = resize_lora(lora, rank, conv_rank=conv_rank, dynamic=dynamic, threshold=threshold)
    metadata = {**metadata, "sdlora_resized_from": Path(src).name, "sdlora_resize_energy": f"{report.energy:.6f}"}
    if dynamic is not None:
        metadata.update(sdlora_resize_dynamic=dynamic, sdlora_resize_threshold=f"{threshold:g}")
    warn_dropped_embeddings(src, bundled, fmt or src_fmt)
    save_lora_file(dst, resized, metadata, fmt or src_fmt, dtype, embeddings=bundled)
    report.size = Path(dst).stat().st_size
    return report
