import json

import torch

from sdlora.formats import canonical as C
from sdlora.formats.info import describe, render
from sdlora.formats.io import save_lora_file


def test_describe_counts_modules_ranks_alphas_and_size(tiny, tmp_path, lora_maker):
    lora = lora_maker(tiny, ("unet-transformer", "unet-conv"), ranks=(4, 2), alphas=(3.0,), dora=True)
    path = save_lora_file(tmp_path / "x.safetensors", lora, {"ss_sd_model_name": "sd-v1-4.ckpt"}, "kohya")
    info = describe(path)
    modules = C.group(lora)
    unet = [p for (c, _), p in modules.items() if c == "unet"]
    assert info["format"] == "kohya" and info["base"] == "SD 1.x (trained on sd-v1-4.ckpt)"
    assert info["modules"] == len(modules) and info["parameters"] == C.parameter_count(lora)
    assert info["size_bytes"] == path.stat().st_size and info["dtypes"] == {"float16": 3 * len(modules)}
    part = info["components"]["unet"]
    assert part["modules"] == len(unet) and part["dora"] == len(unet)
    assert sum(part["ranks"].values()) == len(unet) and set(part["ranks"]) == {"2", "4"}
    assert part["alphas"] == {"3": len(unet)}
    assert set(part["kinds"]) == {"linear", "conv1x1", "conv3x3"}
    assert info["metadata"]["ss_network_module"] == "networks.lora"
    json.dumps(info)  # JSON-able for --json
    text = render(info)
    assert "format:      kohya" in text and "ranks:" in text and "ss_network_dim" in text


def test_render_shortens_long_metadata(tiny, tmp_path, lora_maker):
    path = save_lora_file(tmp_path / "x.safetensors", lora_maker(tiny), {"ss_tag_frequency": "x" * 500}, "native",
                          torch.float32)
    line = next(l for l in render(describe(path)).splitlines() if "ss_tag_frequency" in l)
    assert line.endswith("...") and len(line) < 130
