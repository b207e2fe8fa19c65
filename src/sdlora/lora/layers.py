"""The wrappers that attach adapters to a frozen `nn.Linear` / `nn.Conv2d`.

    y = base(x) + sum over adapters of  multiplier * scale * path(dropout(x))

`path` is LoRA's `up(down(x))` (sdlora.lora.adapter), or for LoHa / LoKr (sdlora.lora.loha, .lokr)
the base operation applied with their factored weight change  op(x, delta W).

`scale` is alpha / rank (alpha / sqrt(rank) with rank-stabilised scaling). With DoRA an adapter
instead turns the layer into  (m / ||W + scale * up @ down||_row) * (W + scale * up @ down) x + b,
the row norm detached from the graph as in the DoRA paper (and PEFT).

Every weight-space formula (delta weight, DoRA ratio, merge, unmerge) goes through
`LoRAModule._terms`, which writes an adapter's weight change as  c * W + d  (c a per-output-row
vector or None, d a full weight-shaped tensor), so merging several adapters is
W' = W * (1 + sum c) + sum d  and unmerging is its exact algebraic inverse.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora.adapter import ADAPTER_OPTIONS, INITS, LoRAAdapter, check_options  # noqa: F401 (re-exported)
from sdlora.lora.adapter_dict import AdapterDict
from sdlora.lora.factored import FactoredAdapter
from sdlora.lora.loha import LoHaAdapter
from sdlora.lora.lokr import LoKrAdapter

FACTORED: dict[str, type[FactoredAdapter]] = {"loha": LoHaAdapter, "lokr": LoKrAdapter}


class LoRAModule(nn.Module):
    """Wraps a frozen base layer (kept as `.base`, never subclassed or patched) with named adapters."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters = AdapterDict()  # any adapter name, even `train` or `to`
        self.merged = False
        self._merge_record: dict[str, tuple[float, torch.Tensor | None]] = {}
        # Remembered so that remove() can restore the base exactly as it was handed to us.
        self.base_requires_grad = {n: p.requires_grad for n, p in base.named_parameters()}
        base.requires_grad_(False)

    # Subclass hooks ---------------------------------------------------------------------------
    def _make_pair(self, rank: int, **factory) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The base operation with `weight` and no bias."""
        raise NotImplementedError

    def _channel(self, v: torch.Tensor) -> torch.Tensor:
        """View a per-output-channel vector (out,) so it broadcasts over this layer's output."""
        raise NotImplementedError

    @staticmethod
    def max_rank(base: nn.Module) -> int:
        raise NotImplementedError

    # Adapters -----------------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def add_adapter(self, name: str, rank: int, alpha: float | None = None, **opts) -> LoRAAdapter:
        """Add adapter `name`; options: see ADAPTER_OPTIONS. Adapter weights default to fp32."""
        check_options(rank, alpha, **opts)
        if not isinstance(name, str) or not name or "." in name:
            raise SdloraError(f"adapter name must be a non-empty string without '.', got {name!r}")
        if name in self.adapters:
            raise SdloraError(f"adapter {name!r} already exists on this layer; remove it first or pick another name")
        if self.merged:
            raise SdloraError(f"cannot add adapter {name!r} to a merged layer; unmerge first")
        factory = {"device": self.base.weight.device, "dtype": opts.pop("dtype", None) or torch.float32}
        dora = opts.pop("dora", False)
        adapter = self._build(opts.pop("algorithm", "lora"), rank, alpha, factory, opts)
        if dora:  # m starts at ||W + scale * up @ down||_row = ||W||_row, so DoRA starts as the base
            adapter.magnitude = nn.Parameter(self._row_norm(adapter).to(factory["dtype"]))
        self.adapters[name] = adapter
        return adapter

    def _build(self, algorithm: str, rank: int, alpha, factory: dict, opts: dict):
        if algorithm != "lora":
            return FACTORED[algorithm](tuple(self.base.weight.shape), rank, alpha, **factory, **opts)
        if rank > self.max_rank(self.base):
            raise SdloraError(f"rank {rank} is larger than this layer allows ({self.max_rank(self.base)}) "
                              f"for {self.base}; use a smaller rank")
        return LoRAAdapter(*self._make_pair(rank, **factory), rank, alpha, **opts)

    def remove_adapter(self, name: str) -> None:
        if self.merged:
            raise SdloraError(f"cannot remove adapter {name!r} from a merged layer; unmerge first")
        del self.adapters[name]

    # Weight-space math (the one place) ----------------------------------------------------------
    def _rows(self, v: torch.Tensor) -> torch.Tensor:
        """(out,) -> (out, 1) or (out, 1, 1, 1): broadcast a per-row vector over the base weight."""
        return v.view(-1, *[1] * (self.base.weight.dim() - 1))

    def _row_norm(self, ad: LoRAAdapter) -> torch.Tensor:
        """||W + scale * up @ down|| per output row, (out,), fp32, detached (DoRA paper, sec. 4.3)."""
        w = self.base.weight.detach().float().flatten(1)
        return (w + ad.scale * ad.lora_weight().detach().float()).norm(dim=1)

    def _dora_ratio(self, ad: LoRAAdapter) -> torch.Tensor:
        """m / ||W + scale * up @ down||_row, (out,); gradient reaches m only."""
        return ad.magnitude / self._row_norm(ad)

    def _terms(self, ad: LoRAAdapter, multiplier: float, ratio: torch.Tensor | None):
        """This adapter's weight change as (c, d) with  delta W = c * W + d  (fp32, weight shape).

        LoRA: c = None, d = mult * scale * up @ down.
        DoRA: W_dora = ratio * (W + scale * up @ down), so c = mult * (ratio - 1), d = mult * ratio * scale * up @ down.
        """
        shape = self.base.weight.shape
        d = (ad.scale * multiplier) * ad.lora_weight().float().view(shape)
        if ratio is None:
            return None, d
        ratio = ratio.detach().to(d.device, torch.float32)  # recorded ratios may predate a .to(device)
        return multiplier * (ratio - 1), self._rows(ratio) * d

    def _sum_terms(self, record: dict[str, tuple[float, torch.Tensor | None]]):
        """(row factor 1 + sum c, (out, 1, ...); sum d) over the adapters in `record`."""
        weight = self.base.weight
        factor = torch.ones(weight.shape[0], device=weight.device)
        total = torch.zeros(weight.shape, device=weight.device)
        for name, (multiplier, ratio) in record.items():
            c, d = self._terms(self.adapters[name], multiplier, ratio)
            factor = factor if c is None else factor + c
            total = total + d
        return self._rows(factor), total

    def delta_weight(self, name: str) -> torch.Tensor:
        """The effective weight change of adapter `name` (times its multiplier), fp32, base weight shape."""
        if self.merged:
            raise SdloraError("delta_weight needs the unmerged base weight; unmerge first")
        ad = self.adapters[name]
        c, d = self._terms(ad, ad.multiplier, self._dora_ratio(ad) if ad.dora else None)
        if c is None:
            return d
        return self._rows(c) * self.base.weight.detach().float() + d

    @torch.no_grad()
    def merge(self) -> None:
        """Fold every adapter with a non-zero multiplier into the base weight (in place, same Parameter)."""
        if self.merged:
            raise SdloraError("layer is already merged; unmerge first")
        record = {name: (ad.multiplier, self._dora_ratio(ad) if ad.dora else None)
                  for name, ad in self.adapters.items() if ad.multiplier != 0}
        factor, total = self._sum_terms(record)
        weight = self.base.weight
        weight.copy_((weight.float() * factor + total).to(weight.dtype))
        self._merge_record, self.merged = record, True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Exact inverse of merge(), using the multipliers and DoRA norms recorded at merge time."""
        if not self.merged:
            raise SdloraError("layer is not merged")
        factor, total = self._sum_terms(self._merge_record)
        weight = self.base.weight
        weight.copy_(((weight.float() - total) / factor).to(weight.dtype))
        self._merge_record, self.merged = {}, False

    # Forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        plain = None if args or kwargs or self.merged else self._plain_adapter(x)
        if plain is not None:
            return self._plain_out(plain, x)
        base_out = out = self.base(x, *args, **kwargs)
        if self.merged:
            return base_out
        for adapter in self.adapters.values():
            if adapter.multiplier != 0:
                out = out + self._adapter_out(adapter, x, base_out).to(base_out.dtype)
        return out

    def _plain_adapter(self, x: torch.Tensor) -> LoRAAdapter | None:
        """The one active adapter if the fast path computes it (plain LoRA in x's dtype, no autocast), else None."""
        active = [ad for ad in self.adapters.values() if ad.multiplier != 0]
        ad = active[0] if len(active) == 1 and isinstance(active[0], LoRAAdapter) else None
        dropped = ad is not None and self.training and max(ad.dropout, ad.rank_dropout, ad.module_dropout) > 0
        if ad is None or ad.dora or dropped or torch.is_autocast_enabled(x.device.type):
            return None
        return ad if ad.dtype == x.dtype == self.base.weight.dtype else None

    def _plain_out(self, ad: LoRAAdapter, x: torch.Tensor) -> torch.Tensor:
        """base(x) + scale * multiplier * up(down(x)) for _plain_adapter's case (what _adapter_out computes)."""
        return self.base(x) + ad(x) * (ad.scale * ad.multiplier)

    def _adapter_out(self, ad: LoRAAdapter, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):  # under autocast the matmuls pick their own dtype
            x = x.to(ad.dtype)
        drop_input = self.training and ad.dropout > 0
        if drop_input:
            x = F.dropout(x, ad.dropout, training=True)
        if ad.dora:
            y = self._dora_out(ad, x, base_out, drop_input) * ad.multiplier
        else:  # one scalar multiply for scale and multiplier
            y = self._path(ad, x) * (ad.scale * ad.multiplier)
        if self.training and ad.module_dropout > 0:  # skip the whole adapter for this step
            y = y * (torch.rand((), device=y.device) >= ad.module_dropout).to(y.dtype)
        return y

    def _dora_out(self, ad: LoRAAdapter, x: torch.Tensor, base_out: torch.Tensor, drop_input: bool) -> torch.Tensor:
        """DoRA's change of the output: (m / |W + dW| - 1) W x + m / |W + dW| * dW x."""
        ratio = self._channel(self._dora_ratio(ad))
        # W x without bias: recomputed when the input was dropped, else read off the base output.
        if drop_input:
            plain = self._apply_weight(x, self.base.weight.to(x.dtype))
        else:
            plain = base_out if self.base.bias is None else base_out - self._channel(self.base.bias)
        return (ratio - 1) * plain + ratio * (self._path(ad, x) * ad.scale)

    def _path(self, ad, x: torch.Tensor) -> torch.Tensor:
        """The adapter's unscaled output: LoRA's up(down(x)), or op(x, delta W) for LoHa / LoKr."""
        if isinstance(ad, FactoredAdapter):
            return self._apply_weight(x, ad.train_weight())
        return ad(x)


class LoRALinear(LoRAModule):
    """LoRA around an `nn.Linear`: down Linear(in, rank), up Linear(rank, out), no biases."""

    in_features = property(lambda self: self.base.in_features)
    out_features = property(lambda self: self.base.out_features)

    def _make_pair(self, rank, **factory):
        return (nn.Linear(self.base.in_features, rank, bias=False, **factory),
                nn.Linear(rank, self.base.out_features, bias=False, **factory))

    def _apply_weight(self, x, weight):
        return F.linear(x, weight)

    def _plain_out(self, ad, x):
        # Fewer module calls and kernels than the generic path (on a small model a step is mostly
        # per-operation overhead): down as one F.linear (..., rank), then up, scale and the sum with the
        # base output in one addmm over the flattened tokens (N, out).
        base_out = self.base(x)
        h = F.linear(x, ad.down.weight)
        flat = torch.addmm(base_out.reshape(-1, base_out.shape[-1]), h.reshape(-1, ad.rank), ad.up.weight.t(),
                           alpha=ad.scale * ad.multiplier)
        return flat.view(base_out.shape)

    def _channel(self, v):
        return v  # output (..., out): a vector broadcasts over the last axis

    @staticmethod
    def max_rank(base):
        return min(base.in_features, base.out_features)


class LoRAConv2d(LoRAModule):
    """LoRA around an `nn.Conv2d`: down has the base kernel/stride/padding/dilation (3x3 "LoCon"), up is 1x1."""

    in_channels, out_channels, kernel_size, stride, padding, dilation, groups = (
        property(lambda self, name=name: getattr(self.base, name))
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"))

    def __init__(self, base: nn.Conv2d):
        if base.groups != 1:
            raise SdloraError(f"LoRA on grouped convolutions is not supported ({base}); exclude this layer")
        super().__init__(base)

    def _make_pair(self, rank, **factory):
        b = self.base
        down = nn.Conv2d(b.in_channels, rank, b.kernel_size, b.stride, b.padding, b.dilation, bias=False,
                         padding_mode=b.padding_mode, **factory)
        return down, nn.Conv2d(rank, b.out_channels, 1, bias=False, **factory)

    def _apply_weight(self, x, weight):
        return self.base._conv_forward(x, weight, None)  # honours padding_mode

    def _channel(self, v):
        return v.view(-1, 1, 1)  # output (B, out, H, W) or (out, H, W)

    @staticmethod
    def max_rank(base):
        kh, kw = base.kernel_size
        return min(base.out_channels, base.in_channels // base.groups * kh * kw)


# isinstance dispatch: base layer type -> wrapper. Order matters only for subclasses.
WRAPPERS: tuple[tuple[type[nn.Module], type[LoRAModule]], ...] = (
    (nn.Linear, LoRALinear),
    (nn.Conv2d, LoRAConv2d),
)


def wrapper_for(module: nn.Module) -> type[LoRAModule] | None:
    """The wrapper class for a base layer, or None when LoRA does not support it."""
    for base_type, wrapper in WRAPPERS:
        if isinstance(module, base_type):
            return wrapper
    return None
