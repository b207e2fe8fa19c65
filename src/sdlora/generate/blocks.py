"""LoRA block weights (LBW): one multiplier per SD 1.x block, as A1111's LoRA Block Weight extension
(hako-mikan/sd-webui-lora-block-weight) defines them, applied per module or folded into a file.

The 26 blocks are the LDM UNet's: BASE (the whole text encoder), IN00..IN11 (input_blocks), M00
(middle_block), OUT00..OUT11 (output_blocks). The 17-value form leaves out the blocks that hold no
attention LoRA (IN00 conv_in, IN03/IN06/IN09 downsamplers, IN10/IN11, OUT00..OUT02); as in the
extension, a 17-value vector gives those blocks 0. Modules outside every block (time_embedding,
conv_out: rare in LoRA files) keep the LoRA's own weight. The block table itself is
`sdlora.lora.blocks` (shared with the trainer's per-block ranks and learning rates).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from sdlora.errors import SdloraError
from sdlora.lora.adapter import MAX_MULTIPLIER
from sdlora.lora.blocks import BLOCKS26, OUTSIDE, UNET_BLOCKS, block_of  # noqa: F401 (the one table; re-exported)

BLOCKS17: tuple[str, ...] = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00",
                             *(f"OUT{i:02d}" for i in range(3, 12)))

# The extension's built-in presets (its DEF_WEIGHT_PRESET), 17-value form.
PRESETS: dict[str, tuple[float, ...]] = {name: tuple(float(v) for v in values.split(",")) for name, values in {
    "NONE": "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "IND": "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "INALL": "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
    "OUTD": "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "OUTS": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
    "OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "ALL0.5": "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
}.items()}


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SdloraError(f"{where}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > MAX_MULTIPLIER:
        raise SdloraError(f"{where}: block weights must be finite numbers of size at most {MAX_MULTIPLIER:g}, "
                          f"got {text.strip()}")
    return value


def parse_lbw(text: str, where: str = "lbw") -> tuple[float, ...]:
    """A preset name (`OUTALL`, any case) or 17 / 26 numbers separated by commas (or by spaces, as PNG
    parameters write them) -> the 26-value vector."""
    name = text.strip().upper()
    if name in PRESETS:
        return expand(PRESETS[name])
    parts = text.split(",") if "," in text else text.split()
    if len(parts) == 1:
        raise SdloraError(f"{where}: unknown block-weight preset {text.strip()!r}; "
                          f"presets: {', '.join(PRESETS)}, or 17 or 26 numbers")
    values = tuple(_number(part, where) for part in parts)
    if len(values) not in (17, 26):
        raise SdloraError(f"{where}: a block-weight vector has 17 values ({','.join(BLOCKS17)}) or 26 "
                          f"(BASE,IN00..IN11,M00,OUT00..OUT11), got {len(values)}")
    return expand(values)


def expand(values: tuple[float, ...]) -> tuple[float, ...]:
    """A 17-value vector -> 26 values (the blocks it leaves out get 0); a 26-value one unchanged."""
    if len(values) == 26:
        return tuple(values)
    given = dict(zip(BLOCKS17, values))
    return tuple(given.get(block, 0.0) for block in BLOCKS26)


def label(vector: tuple[float, ...]) -> str:
    """The preset's name when `vector` is one, else the 17- or 26-value list (17 when that says all)."""
    for name, values in PRESETS.items():
        if expand(values) == tuple(vector):
            return name
    by_block = dict(zip(BLOCKS26, vector))
    short = all(by_block[b] == 0 for b in BLOCKS26 if b not in BLOCKS17)
    return ",".join(f"{by_block[b]:g}" for b in (BLOCKS17 if short else BLOCKS26))


def ratio(vector: tuple[float, ...], component: str, path: str) -> float:
    """The block weight of one module (1.0 for modules outside every block)."""
    block = block_of(component, path)
    return 1.0 if block is None else vector[BLOCKS26.index(block)]


def module_ratios(vector: tuple[float, ...], modules: Iterable[str]) -> dict[str, float]:
    """Canonical module names ("unet.<path>", "text_encoder.<path>") -> their block weight."""
    out = {}
    for name in modules:
        component, _, path = name.partition(".")
        out[name] = ratio(vector, component, path)
    return out


def blocks_used(modules: Iterable[str]) -> dict[str, int]:
    """How many of `modules` each block holds (None: outside every block), in block order."""
    counts: dict[str, int] = {}
    for name in modules:
        component, _, path = name.partition(".")
        block = block_of(component, path) or "none"
        counts[block] = counts.get(block, 0) + 1
    return {b: counts[b] for b in (*BLOCKS26, "none") if b in counts}



# The factor a block weight scales, per algorithm: the LoRA up weight, LoHa's first Hadamard factor,
# LoKr's first Kronecker factor (the weight change is linear in each).
SCALED = ("lora_up.weight", "hada_w1_a", "lokr_w1", "lokr_w1_a")


def bake(lora: Mapping, vector: tuple[float, ...]) -> tuple[dict, dict[str, float]]:
    """A canonical LoRA dict with the block weights folded in: each module's scaled factor times its
    block weight; modules at weight 0 dropped. Returns (baked dict, module -> block weight kept)."""
    from sdlora.formats import canonical as C

    baked, kept = {}, {}
    for (component, path), params in C.group(lora).items():
        r = ratio(vector, component, path)
        if r == 0:
            continue
        name = f"{component}.{path}"
        if "dora_scale" in params and r != 1:
            raise SdloraError(f"{name}: a DoRA module's block weight can only be 0 or 1 when baked (got {r:g}); "
                              "apply it at generation time with --lora FILE:lbw=... instead")
        scaled = next(p for p in SCALED if p in params)
        for param, tensor in params.items():
            baked[f"{name}.{param}"] = tensor * r if param == scaled and r != 1 else tensor
        kept[name] = r
    if not baked:
        raise SdloraError("these block weights are 0 for every module of the LoRA: nothing would be left")
    return baked, kept


def bake_file(src, dst, lbw: str, fmt: str | None = None) -> dict:
    """`sdlora bake-block-weights`: read `src`, fold block weights `lbw` (preset or numbers) in, write
    `dst` (as the input's format unless `fmt`, tensors in the input's dtype). Returns a report."""
    from sdlora.formats import canonical as C
    from sdlora.formats.io import load_lora_file, save_lora_file

    vector = parse_lbw(lbw, "--lbw")
    lora, metadata, src_fmt = load_lora_file(src)
    baked, kept = bake(lora, vector)
    total = len(C.group(lora))
    save_lora_file(dst, baked, {**metadata, "sdlora_lbw": label(vector)}, fmt or src_fmt, dtype=None)
    return {"lbw": label(vector), "modules": total, "kept": len(kept), "dropped": total - len(kept),
            "blocks": blocks_used(kept), "format": fmt or src_fmt}
