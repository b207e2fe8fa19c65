"""Merge several LoRA files into one: `sum_i weight_i * delta_i` per module.

Two ways, both from the canonical form (sdlora.formats.canonical):

    concat  exact: the parts' downs stacked, their ups stacked side by side with each part's
            weight * alpha / rank folded in, alpha = the summed rank (scale 1). Ranks add.
    svd     the summed change cut to `rank` or by a rank rule (sdlora.formats.ranks, e.g. energy
            0.99), reporting the retained energy per module (fp32 factors, alpha = new rank).

A module present in only some files is the sum of those. LoHa / LoKr modules enter the SVD mode
through their weight change (canonical.delta); concatenation needs plain LoRA factors. DoRA
magnitudes cannot be added, so a DoRA LoRA is refused (merge-into-model folds it into a model).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats import networks, ranks
from sdlora.formats.io import load_lora_file_with_embeddings, save_lora_file, warn_dropped_embeddings
from sdlora.formats.resize import ModuleResize, ResizeReport, check_rank, lora_factors, module_kernel

Part = tuple[Mapping[str, torch.Tensor], float]  # (canonical params of one module, weight)


def _check_shapes(name: str, shapes: Sequence[tuple[int, ...]]) -> None:
    """Every file's weight change of the module must have one shape (out, in[, kh, kw])."""
    shapes = set(shapes)
    if len(shapes) > 1:
        raise SdloraError(f"LoRA module {name}: the files disagree on its shape ({sorted(shapes)}); "
                          "they were made for different base models")


def concat_module(parts: Sequence[Part]) -> dict[str, torch.Tensor]:
    """The exact merge of one module: delta = sum of weight * delta of each part."""
    downs = [p[C.DOWN].float() for p, _ in parts]  # (r_i, in[, kh, kw])
    ups = [p[C.UP].float() * (w * C.alpha(p) / C.rank(p)) for p, w in parts]  # (out, r_i[, 1, 1])
    down, up = torch.cat(downs, 0), torch.cat(ups, 1)
    return {C.DOWN: down, C.UP: up, C.ALPHA: C.alpha_tensor(down.shape[0])}


def svd_module(parts: Sequence[Part], module: C.Module, rank: int | None, rule: str | None,
               threshold: float | None) -> tuple[dict[str, torch.Tensor], ModuleResize]:
    """The merged change  sum of weight * delta  cut by SVD to `rank` (a maximum when `rule` is given)."""
    name = f"{module[0]}.{module[1]}"
    deltas = [w * C.delta(p) for p, w in parts]  # each (out, in*kh*kw), fp32
    _check_shapes(name, [tuple(d.shape) for d in deltas])
    delta = torch.stack(deltas).sum(0)
    cap = min(delta.shape) if rank is None else min(rank, *delta.shape)
    out, kept, total = lora_factors(delta, cap, module_kernel(*module, parts[0][0]), rule, threshold)
    old = sum(C.rank(p) for p, _ in parts)
    return out, ModuleResize(name, old, C.rank(out), kept, total)


def gather(loras: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> dict[C.Module, list[Part]]:
    """{module: [(params, weight) for each LoRA that has it]} in first-seen order."""
    modules: dict[C.Module, list[Part]] = {}
    for i, (lora, weight) in enumerate(loras):
        for module, params in C.group(C.normalize(lora)).items():
            if C.DORA in params:
                raise SdloraError(f"LoRA {i + 1} uses DoRA ({module[0]}.{module[1]}): DoRA magnitudes cannot be "
                                  "added; fold it into a model with `sdlora merge-into-model` instead")
            modules.setdefault(module, []).append(({k: v.float() for k, v in params.items()}, float(weight)))
    return modules


def merge_loras(loras: Sequence[tuple[Mapping[str, torch.Tensor], float]], *, rank: int | None = None,
                rule: str | None = None, threshold: float | None = None):
    """(merged canonical dict (fp32), ResizeReport | None). Concatenation unless `rank` or `rule` is given."""
    if len(loras) < 2:
        raise SdloraError("give at least two LoRA files to merge")
    check_rank("--rank", rank)
    if rule is not None:
        ranks.check_rule(rule, threshold)
    svd = rank is not None or rule is not None
    report = ResizeReport() if svd else None
    merged = {}
    for module, parts in gather(loras).items():
        if svd:
            merged[module], line = svd_module(parts, module, rank, rule, threshold)
            report.modules.append(line)
            continue
        name = f"{module[0]}.{module[1]}"
        if any(networks.is_factored(p) for p, _ in parts):
            raise SdloraError(f"module {name} is LoHa/LoKr: concatenation joins plain LoRA factors only; "
                              "merge by SVD with --rank or --energy")
        _check_shapes(name, [(p[C.UP].shape[0], *p[C.DOWN].shape[1:]) for p, _ in parts])
        merged[module] = concat_module(parts)
    return C.ungroup(merged), report


def merged_embeddings(files: Sequence[tuple[Mapping[str, torch.Tensor], Path]]) -> dict[str, torch.Tensor]:
    """The bundled embeddings of several files as one {token: (n, D)}; a token two files give different
    vectors is refused (which one the merged file should teach is the user's choice)."""
    out: dict[str, torch.Tensor] = {}
    source: dict[str, Path] = {}
    for embeddings, path in files:
        for token, tensor in embeddings.items():
            if token in out and not (out[token].shape == tensor.shape
                                     and torch.equal(out[token].float(), tensor.float())):
                raise SdloraError(f"{path}: its embedding of token {token!r} differs from the one bundled in "
                                  f"{source[token]}; merge LoRA files that bundle one version of each token")
            out.setdefault(token, tensor)
            source.setdefault(token, path)
    return out


def merge_lora_files(specs: Sequence[tuple[str | Path, float]], dst: str | Path, *, rank: int | None = None,
                     rule: str | None = None, threshold: float | None = None, fmt: str | None = None,
                     dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], ResizeReport | None]:
    """Merge LoRA files (path, weight) into `dst` (format: `fmt`, default the first file's; dtype: fp32
    for an exact concatenation, else the first file's). Returns (merged dict, report).
    Token embeddings bundled in the files go into `dst` unchanged (they do not scale with a weight); two
    files with different vectors for one token are refused."""
    loaded = [(load_lora_file_with_embeddings(path), float(weight), Path(path)) for path, weight in specs]
    files = [(parts[:3], weight, path) for parts, weight, path in loaded]  # ((lora, metadata, format), ...)
    embeddings = merged_embeddings([(parts[3], path) for parts, _, path in loaded])
    merged, report = merge_loras([(lora, w) for (lora, _, _), w, _ in files], rank=rank, rule=rule,
                                 threshold=threshold)
    (first, _, first_fmt), _, _ = files[0]
    if dtype is None:
        dtype = torch.float32 if report is None else next(t.dtype for k, t in first.items() if not k.endswith("alpha"))
    metadata = {"sdlora_merged_from": [f"{p.name}:{w:g}" for _, w, p in files],
                "sdlora_merge_mode": "concat" if report is None else "svd"}
    if report is not None:
        metadata["sdlora_merge_energy"] = f"{report.energy:.6f}"
    warn_dropped_embeddings(", ".join(str(p) for _, _, p in files), embeddings, fmt or first_fmt)
    save_lora_file(dst, merged, metadata, fmt or first_fmt, dtype, embeddings=embeddings)
    if report is not None:
        report.size = Path(dst).stat().st_size
    return merged, report
