"""What a LoRA file holds, for `sdlora info`: format, base model, modules, ranks, alphas, size, metadata."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from sdlora.formats import canonical as C
from sdlora.formats import networks
from sdlora.formats.io import load_lora_file
from sdlora.formats.modules import ModulePaths

# Metadata fields naming the model a LoRA was trained on, most specific first.
BASE_FIELDS = ("base_model", "ss_sd_model_name")


def _kind(params) -> str:
    if networks.is_factored(params):  # the factors may hold a conv kernel flattened: name the algorithm
        return networks.algorithm(params)
    down = params[C.DOWN]
    if down.dim() == 4:
        return "conv1x1" if tuple(down.shape[2:]) == (1, 1) else f"conv{down.shape[2]}x{down.shape[3]}"
    return "linear"


def _histogram(values) -> dict[str, int]:
    return {f"{k:g}" if isinstance(k, float) else str(k): n for k, n in sorted(Counter(values).items())}


def describe(path: str | Path, *, module_paths: ModulePaths | None = None) -> dict:
    """A JSON-able summary of the LoRA file at `path` (raises SdloraError for unusable files)."""
    path = Path(path)
    lora, metadata, fmt = load_lora_file(path, module_paths=module_paths)
    modules = C.group(lora)
    components = {}
    for component in C.COMPONENTS:
        mine = [p for (c, _), p in modules.items() if c == component]
        if mine:
            components[component] = {
                "modules": len(mine),
                "ranks": _histogram(C.rank(p) for p in mine),
                "alphas": _histogram(C.alpha(p) for p in mine),
                "kinds": _histogram(_kind(p) for p in mine),
                "algorithms": _histogram(networks.algorithm(p) for p in mine),
                "dora": sum(C.DORA in p for p in mine),
                "parameters": sum(t.numel() for p in mine for k, t in p.items() if k != C.ALPHA),
            }
    trained_on = next((metadata[f] for f in BASE_FIELDS if metadata.get(f)), None)
    return {
        "file": str(path),
        "format": fmt,
        "base": "SD 1.x" + (f" (trained on {trained_on})" if trained_on else ""),
        "modules": len(modules),
        "parameters": C.parameter_count(lora),
        "size_bytes": path.stat().st_size,
        "dtypes": _histogram(str(t.dtype).removeprefix("torch.") for k, t in lora.items() if not k.endswith(".alpha")),
        "components": components,
        "metadata": dict(sorted(metadata.items())),
    }


def _clip(text: str, width: int = 100) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def render(info: dict) -> str:
    """The summary as aligned text lines (long metadata values are shortened; --json shows them whole)."""
    lines = [
        f"file:        {info['file']}",
        f"format:      {info['format']}",
        f"base model:  {info['base']}",
        f"modules:     {info['modules']}",
        f"parameters:  {info['parameters']:,}",
        f"size:        {info['size_bytes'] / 1e6:.2f} MB ({', '.join(f'{k} x{n}' for k, n in info['dtypes'].items())})",
    ]
    for component, part in info["components"].items():
        lines.append(f"{component}: {part['modules']} modules, {part['parameters']:,} parameters")
        for field in ("ranks", "alphas", "kinds") + (("algorithms",) if set(part["algorithms"]) != {"lora"} else ()):
            lines.append(f"  {field + ':':8} " + ", ".join(f"{k} x{n}" for k, n in part[field].items()))
        if part["dora"]:
            lines.append(f"  dora:    {part['dora']} modules")
    if info["metadata"]:
        lines.append(f"metadata ({len(info['metadata'])} fields):")
        lines += [f"  {k}: {_clip(v)}" for k, v in info["metadata"].items()]
    return "\n".join(lines)
