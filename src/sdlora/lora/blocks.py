"""The SD 1.x UNet blocks as data: which block a module is in, and kohya's per-block value lists.

One table serves both block features: A1111's LoRA Block Weight at generation time
(`sdlora.generate.blocks`, 26 blocks: BASE = the text encoder, then the UNet's) and kohya's per-block
ranks and learning rates at training time (25 blocks, the UNet's only: `block_dims`, `block_alphas`,
`conv_block_dims`, `conv_block_alphas` and the lr weights `down` (12) + `mid` (1) + `up` (12)).

    diffusers path                          block       kohya index
    conv_in                                 IN00        0   (kohya never adapts it)
    down_blocks.i.{resnets,attentions}.j    IN{1+3i+j}  1 + 3i + j
    down_blocks.i.downsamplers.0            IN{3+3i}    3 + 3i
    mid_block                               M00         12
    up_blocks.i.{resnets,attentions}.j      OUT{3i+j}   13 + 3i + j
    up_blocks.i.upsamplers.0                OUT{3i+2}   15 + 3i

kohya's lr-weight presets (networks/lora.py, `get_block_lr_weight`) give 12 values over i = 0..11,
x = i / 11: `linear` x, `reverse_linear` 1 - x, `sine` sin(pi x / 2), `cosine` the sine reversed
(cos(pi x / 2)), `zeros` 0; `NAME+B` adds B to every value. `ramp_up` / `ramp_down` are our names for
`linear` / `reverse_linear`. A down list runs shallow -> deep (IN00..IN11), an up list deep ->
shallow (OUT00..OUT11), as kohya reads them.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from sdlora.errors import SdloraError

BLOCKS26: tuple[str, ...] = ("BASE", *(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
UNET_BLOCKS25: tuple[str, ...] = BLOCKS26[1:]  # kohya's block_dims order: IN00..IN11, M00 (kohya: MID), OUT00..OUT11
DEPTH = 12  # blocks per side (down / up)


def _unet_layout() -> dict[str, str]:
    """SD 1.x UNet: diffusers block prefix -> block id. 4 down blocks of 2 layers (attention in the
    first 3), 4 up blocks of 3 layers (attention in the last 3)."""
    table = {"conv_in": "IN00", "mid_block": "M00"}
    for i in range(4):
        kinds_down = ("resnets", "attentions") if i < 3 else ("resnets",)
        kinds_up = ("resnets", "attentions") if i > 0 else ("resnets",)
        for j in range(3):
            for kind in kinds_down if j < 2 else ():
                table[f"down_blocks.{i}.{kind}.{j}"] = f"IN{1 + 3 * i + j:02d}"
            for kind in kinds_up:
                table[f"up_blocks.{i}.{kind}.{j}"] = f"OUT{3 * i + j:02d}"
        if i < 3:
            table[f"down_blocks.{i}.downsamplers.0"] = f"IN{3 + 3 * i:02d}"
            table[f"up_blocks.{i}.upsamplers.0"] = f"OUT{3 * i + 2:02d}"
    return table


UNET_BLOCKS: dict[str, str] = _unet_layout()
OUTSIDE = ("time_embedding", "conv_out")  # UNet modules in no block


def block_of(component: str, path: str) -> str | None:
    """The block id of a module ("unet" + diffusers path, or "text_encoder"); None outside every block."""
    if component == "text_encoder":
        return "BASE"
    parts = path.split(".")
    for size in (4, 1):  # down_blocks.i.resnets.j / conv_in, mid_block
        block = UNET_BLOCKS.get(".".join(parts[:size]))
        if block is not None:
            return block
    if parts[0] in OUTSIDE:
        return None
    raise SdloraError(f"unet.{path}: not a module of an SD 1.x UNet, so it has no LoRA block")


# ----------------------------------------------------------------------------- kohya's 25-value lists

def by_block(values: Sequence, where: str) -> dict[str, object]:
    """A 25-value list (kohya order) -> {block id: value}."""
    if len(values) != len(UNET_BLOCKS25):
        raise SdloraError(f"{where} must have 25 values (IN00..IN11, MID, OUT00..OUT11), got {len(values)}")
    return dict(zip(UNET_BLOCKS25, values))


LR_PRESETS: dict[str, Callable[[float], float]] = {  # x = i / 11 over the 12 blocks of one side
    "linear": lambda x: x,
    "reverse_linear": lambda x: 1.0 - x,
    "sine": lambda x: math.sin(math.pi * x / 2),
    "cosine": lambda x: math.sin(math.pi * (1.0 - x) / 2),
    "zeros": lambda x: 0.0,
    "ramp_up": lambda x: x,
    "ramp_down": lambda x: 1.0 - x,
}
_PRESET = re.compile(r"([a-z_]+)(?:\+(\d+(?:\.\d*)?))?")


def lr_weight_side(spec: str | Sequence[float], where: str) -> tuple[float, ...]:
    """One side's 12 lr weights from a preset (`sine`, `cosine+0.5`, ...) or 12 numbers."""
    if isinstance(spec, str):
        m = _PRESET.fullmatch(spec.strip())
        if m is None or m.group(1) not in LR_PRESETS:
            raise SdloraError(f"{where}: unknown preset {spec!r}; presets: {', '.join(LR_PRESETS)} "
                              "(optionally `+BASE`, e.g. `sine+0.5`), or 12 numbers")
        base = float(m.group(2) or 0.0)
        return tuple(LR_PRESETS[m.group(1)](i / (DEPTH - 1)) + base for i in range(DEPTH))
    if len(spec) != DEPTH:
        raise SdloraError(f"{where} must have {DEPTH} values (one per block of that side), got {len(spec)}")
    return tuple(float(v) for v in spec)


def block_lr_weights(down, mid: float | None, up, zero_threshold: float = 0.0) -> dict[str, float] | None:
    """{block: lr multiplier} for the 25 UNet blocks, or None when no lr weight is set.

    An unset side is all 1. A weight at or below `zero_threshold` becomes 0: the block is not trained
    (its modules are left out of the LoRA), as in kohya.
    """
    if down is None and mid is None and up is None:
        return None
    ones = (1.0,) * DEPTH
    values = (*(ones if down is None else lr_weight_side(down, "lora.down_lr_weight")),
              1.0 if mid is None else float(mid),
              *(ones if up is None else lr_weight_side(up, "lora.up_lr_weight")))
    return {block: (w if w > zero_threshold else 0.0) for block, w in zip(UNET_BLOCKS25, values)}
