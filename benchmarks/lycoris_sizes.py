"""Parameters and file sizes of LoRA, LoHa and LoKr on the full-size SD 1.4 architecture.

The UNet and text encoder are built on the meta device (real shapes, no memory), adapters are
injected with sdlora's own core, and the fp16 kohya/LyCORIS safetensors size is computed exactly
from the key names and tensor sizes (8-byte length + JSON header + data), without writing a file.

    PYTHONPATH=src python benchmarks/lycoris_sizes.py            # the table in the guide
"""
from __future__ import annotations

import json

import torch

from sdlora.lora import inject, lora_modules
from sdlora.models.names import canonical_te_path
from sdlora.models.skeleton import sd14_text_encoder, sd14_unet

# (label, algorithm options, rank, alpha) at settings people use
SETTINGS = [
    ("LoRA rank 4", {"algorithm": "lora"}, 4),
    ("LoRA rank 16", {"algorithm": "lora"}, 16),
    ("LoRA rank 32", {"algorithm": "lora"}, 32),
    ("LoHa rank 4", {"algorithm": "loha"}, 4),
    ("LoHa rank 8", {"algorithm": "loha"}, 8),
    ("LoHa rank 16", {"algorithm": "loha"}, 16),
    ("LoKr factor -1, rank 8", {"algorithm": "lokr"}, 8),
    ("LoKr factor 8, rank 8", {"algorithm": "lokr", "factor": 8}, 8),
    ("LoKr factor 4, rank 8", {"algorithm": "lokr", "factor": 4}, 8),
    ("LoKr factor 8, full matrix", {"algorithm": "lokr", "factor": 8, "full_matrix": True}, 8),
    ("LoKr factor 16, full matrix", {"algorithm": "lokr", "factor": 16, "full_matrix": True}, 16),
]
TARGETS = {"unet": "unet-transformer", "text_encoder": "text-encoder"}  # kohya's default set: 192 + 72


def models():
    with torch.device("meta"):
        return {"unet": sd14_unet(), "text_encoder": sd14_text_encoder()}


def file_keys(component: str, path: str, adapter) -> dict[str, tuple[int, ...]]:
    """kohya/LyCORIS key -> shape for one module's adapter (alpha included)."""
    prefix = "lora_unet_" if component == "unet" else "lora_te_"
    name = prefix + (canonical_te_path(path) if component == "text_encoder" else path).replace(".", "_")
    if hasattr(adapter, "factors"):
        tensors = {k: tuple(v.shape) for k, v in adapter.factors().items()}
    else:
        tensors = {"lora_down.weight": tuple(adapter.down.weight.shape), "lora_up.weight": tuple(adapter.up.weight.shape)}
    tensors["alpha"] = ()
    return {f"{name}.{k}": shape for k, shape in tensors.items()}


def safetensors_size(shapes: dict[str, tuple[int, ...]], bytes_per_value: int = 2) -> int:
    """Exact size of a safetensors file holding these tensors in fp16 (no metadata)."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        n = bytes_per_value * int(torch.Size(shape).numel())
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)  # safetensors pads the header to 8 bytes
    return 8 + len(text) + offset


def measure(label: str, opts: dict, rank: int) -> dict:
    shapes, params, count = {}, 0, 0
    for component, model in models().items():
        inject(model, TARGETS[component], rank, None, **opts)
        for path, wrapper in lora_modules(model).items():
            ad = wrapper.adapters["default"]
            params += sum(p.numel() for p in ad.parameters())
            shapes.update(file_keys(component, path, ad))
            count += 1
    return {"setting": label, "modules": count, "params": params, "file_mb": safetensors_size(shapes) / 1e6}


def main() -> None:
    torch.set_num_threads(1)
    rows = [measure(*setting) for setting in SETTINGS]
    print("| setting (UNet transformer blocks + text encoder) | modules | parameters | fp16 file |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['modules']} | {r['params']:,} | {r['file_mb']:.2f} MB |")


if __name__ == "__main__":
    main()
