"""The SD 1.x block table against kohya's own block index, and kohya's lr-weight presets (src/sdlora/lora/blocks.py)."""
import math
import re

import pytest

from sdlora.config import LR_WEIGHT_PRESET
from sdlora.errors import SdloraError
from sdlora.formats.modules import flat_name, sd14_paths
from sdlora.lora import blocks as B

KOHYA_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")


def kohya_index(path: str) -> int:
    """kohya's get_block_index for SD 1.x, re-derived from its description (-1: no block)."""
    name = "lora_unet_" + flat_name(path)
    m = KOHYA_UPDOWN.search(name)
    if m:
        side, i, kind, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        idx = 3 * i + (2 if kind in ("upsamplers", "downsamplers") else j)
        return 1 + idx if side == "down" else 12 + 1 + idx
    return 12 if "mid_block_" in name else -1


def test_every_sd14_unet_module_gets_kohyas_block_index():
    paths = sd14_paths()["unet"]
    checked = 0
    for path in paths:
        block = B.block_of("unet", path)
        expected = kohya_index(path)
        if path.startswith("conv_in"):  # kohya never adapts conv_in; the LBW table calls it IN00 = index 0
            assert block == "IN00" and expected == -1
            continue
        assert (B.UNET_BLOCKS25.index(block) if block is not None else -1) == expected, path
        checked += 1
    assert checked > 250
    used = {B.block_of("unet", p) for p in paths} - {None}
    assert used == set(B.UNET_BLOCKS25)  # every one of the 25 entries holds modules
    assert B.UNET_BLOCKS25 == B.BLOCKS26[1:] and len(B.UNET_BLOCKS25) == 25


def test_by_block_needs_25_values():
    table = B.by_block(list(range(25)), "lora.block_dims")
    assert table["IN00"] == 0 and table["M00"] == 12 and table["OUT11"] == 24
    with pytest.raises(SdloraError, match=r"lora.block_dims must have 25 values"):
        B.by_block([1] * 24, "lora.block_dims")


def _kohya_list(name: str, base: float = 0.0) -> list[float]:
    """kohya's get_list for 12 blocks, written from its formulas."""
    n = 12
    return {"cosine": [math.sin(math.pi * (i / (n - 1)) / 2) + base for i in reversed(range(n))],
            "sine": [math.sin(math.pi * (i / (n - 1)) / 2) + base for i in range(n)],
            "linear": [i / (n - 1) + base for i in range(n)],
            "reverse_linear": [i / (n - 1) + base for i in reversed(range(n))],
            "zeros": [0.0 + base] * n}[name]


@pytest.mark.parametrize("name", ["cosine", "sine", "linear", "reverse_linear", "zeros"])
def test_presets_are_kohyas(name):
    assert B.lr_weight_side(name, "x") == pytest.approx(_kohya_list(name), abs=1e-12)
    assert B.lr_weight_side(f"{name}+0.25", "x") == pytest.approx(_kohya_list(name, 0.25), abs=1e-12)
    assert re.fullmatch(LR_WEIGHT_PRESET, name) and re.fullmatch(LR_WEIGHT_PRESET, f"{name}+0.25")


def test_ramps_and_the_config_pattern_name_the_same_presets():
    assert B.lr_weight_side("ramp_up", "x") == B.lr_weight_side("linear", "x")
    assert B.lr_weight_side("ramp_down", "x") == B.lr_weight_side("reverse_linear", "x")
    for name in B.LR_PRESETS:
        assert re.fullmatch(LR_WEIGHT_PRESET, name), name
    assert not re.fullmatch(LR_WEIGHT_PRESET, "triangle")
    with pytest.raises(SdloraError, match=r"lora.up_lr_weight: unknown preset 'triangle'"):
        B.lr_weight_side("triangle", "lora.up_lr_weight")
    with pytest.raises(SdloraError, match=r"lora.down_lr_weight must have 12 values"):
        B.lr_weight_side([1.0] * 11, "lora.down_lr_weight")


def test_block_lr_weights_fill_unset_sides_and_zero_below_the_threshold():
    assert B.block_lr_weights(None, None, None) is None
    down = [0.05 * i for i in range(12)]
    weights = B.block_lr_weights(down, 0.5, None, zero_threshold=0.1)
    assert list(weights) == list(B.UNET_BLOCKS25)
    expected = [0.0, 0.0, 0.0] + [pytest.approx(0.05 * i) for i in range(3, 12)]  # 0.05 and 0.1: at the threshold
    assert [weights[f"IN{i:02d}"] for i in range(12)] == expected
    assert weights["M00"] == 0.5 and all(weights[f"OUT{i:02d}"] == 1.0 for i in range(12))
    up = B.block_lr_weights(None, None, "sine")
    assert up["OUT00"] == 0.0 and up["OUT11"] == pytest.approx(1.0) and up["IN05"] == 1.0
