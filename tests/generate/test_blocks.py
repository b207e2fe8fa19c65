"""LoRA block weights: the SD 1.x block table, presets, parsing, and applying them per module."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.formats import apply
from sdlora.formats.modules import sd14_paths
from sdlora.generate import blocks as B
from sdlora.generate.loras import LoraSpec, attach_loras, parse_lora_arg, set_weights
from sdlora.lora import lora_modules
from sdlora.models import tiny_components


def test_block_lists_and_presets_have_the_extensions_shape():
    assert len(B.BLOCKS26) == 26 and len(B.BLOCKS17) == 17 and set(B.BLOCKS17) < set(B.BLOCKS26)
    assert {"NONE", "ALL", "INS", "IND", "INALL", "MIDD", "OUTD", "OUTS", "OUTALL"} <= set(B.PRESETS)
    assert all(len(v) == 17 for v in B.PRESETS.values())
    outall = dict(zip(B.BLOCKS26, B.parse_lbw("OUTALL")))
    assert outall["BASE"] == 1 and outall["M00"] == 0 and outall["IN01"] == 0
    assert all(outall[f"OUT{i:02d}"] == 1 for i in range(3, 12)) and outall["OUT00"] == 0  # not in the 17 form


def test_every_lora_able_sd14_module_maps_to_one_block():
    paths = sd14_paths()
    blocks = {p: B.block_of("unet", p) for p in paths["unet"]}
    outside = sorted(p for p, b in blocks.items() if b is None)
    assert outside == ["conv_out", "time_embedding.linear_1", "time_embedding.linear_2"]
    assert {B.block_of("text_encoder", p) for p in paths["text_encoder"]} == {"BASE"}
    assert set(blocks.values()) - {None} == set(B.BLOCKS26) - {"BASE"}  # every UNet block holds modules
    attention = [p for p in paths["unet"] if ".attentions." in p]
    assert len(attention) > 128 and {blocks[p] for p in attention} <= set(B.BLOCKS17)  # why the 17 form exists
    # round trip: every table entry's block comes back from a module under it
    for prefix, block in B.UNET_BLOCKS.items():
        under = [p for p in paths["unet"] if p == prefix or p.startswith(prefix + ".")]
        assert under and {blocks[p] for p in under} == {block}


def test_unknown_unet_module_is_an_error():
    with pytest.raises(SdloraError, match="unet.add_embedding.linear_1: not a module of an SD 1.x UNet"):
        B.block_of("unet", "add_embedding.linear_1")


@pytest.mark.parametrize("name", list(B.PRESETS))
def test_presets_and_vectors_round_trip_through_their_labels(name):
    vector = B.parse_lbw(name.lower())
    assert B.label(vector) == name and B.parse_lbw(B.label(vector)) == vector
    custom = tuple(float(i) / 10 for i in range(26))
    assert B.parse_lbw(B.label(custom)) == custom and len(B.label(custom).split(",")) == 26


def test_a_17_value_vector_leaves_the_other_blocks_at_zero():
    vector = dict(zip(B.BLOCKS26, B.parse_lbw(",".join(str(i + 1) for i in range(17)))))
    assert [vector[b] for b in B.BLOCKS17] == [float(i + 1) for i in range(17)]
    assert all(vector[b] == 0 for b in B.BLOCKS26 if b not in B.BLOCKS17)


@pytest.mark.parametrize("text, message", [
    ("OUTSIDE", "unknown block-weight preset 'OUTSIDE'"),
    ("1,0,1", "17 values .* or 26 .*got 3"),
    (",".join(["1"] * 16 + ["nan"]), "finite"),
    (",".join(["1"] * 16 + ["inf"]), "finite"),
    (",".join(["1"] * 16 + ["x"]), "'x' is not a number"),
])
def test_bad_block_weights_are_one_line_errors(text, message):
    with pytest.raises(SdloraError, match=message) as err:
        B.parse_lbw(text)
    assert "\n" not in str(err.value)


def test_lora_argument_takes_lbw_after_the_weight():
    assert parse_lora_arg("a/x.safetensors:0.8:lbw=OUTALL") == LoraSpec(Path("a/x.safetensors"), 0.8,
                                                                          B.parse_lbw("OUTALL"))
    spec = parse_lora_arg("x.safetensors:lbw=" + ",".join(["0.5"] * 26))
    assert spec.weight == 1.0 and spec.lbw == (0.5,) * 26
    assert B.parse_lbw(" ".join(["0.5"] * 26)) == spec.lbw  # as PNG parameters write a vector
    assert parse_lora_arg("x.safetensors:0.8") == LoraSpec(Path("x.safetensors"), 0.8)
    with pytest.raises(SdloraError, match="x.safetensors:lbw=NOPE: lbw: unknown block-weight preset"):
        parse_lora_arg("x.safetensors:lbw=NOPE")


def unet_inputs():
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([10]), torch.randn(1, 77, 32, generator=gen))


def changed_modules(components, adapter: str) -> dict[str, bool]:
    """UNet LoRA module path -> whether its output differs from its base layer's on one forward pass."""
    seen: dict[str, bool] = {}
    hooks = [wrapper.register_forward_hook(
        lambda mod, args, out, path=path: seen.__setitem__(path, seen.get(path, False)
                                                           or not torch.equal(out, mod.base(*args))))
        for path, wrapper in lora_modules(components.unet).items() if adapter in wrapper.adapters]
    with torch.no_grad():
        components.unet(*unet_inputs())
    for hook in hooks:
        hook.remove()
    return seen


def one_block(block: str) -> tuple[float, ...]:
    return tuple(1.0 if b == block else 0.0 for b in B.BLOCKS26)


def test_only_the_one_weighted_block_changes_the_unet(tiny_model):
    components = tiny_components(0)
    [loaded] = attach_loras(components, [LoraSpec(tiny_model["style"], 0.9, one_block("IN01"))])
    for block in ("IN01", "M00", "OUT04"):
        set_weights(components, {loaded.adapter: 0.9}, {loaded.adapter: one_block(block)})
        changed = changed_modules(components, loaded.adapter)
        inside = {p for p in changed if B.block_of("unet", p) == block}
        assert inside and {p for p, c in changed.items() if c} == inside
    # the text encoder is BASE (0 here): its LoRA is off
    assert all(w.adapters[loaded.adapter].multiplier == 0 for w in lora_modules(components.text_encoder).values())


def test_all_ones_is_the_plain_lora_and_set_weights_keeps_the_blocks(tiny_model):
    plain, weighted = tiny_components(0), tiny_components(0)
    attach_loras(plain, [LoraSpec(tiny_model["style"], 0.7)])
    [item] = attach_loras(weighted, [LoraSpec(tiny_model["style"], 0.7, B.parse_lbw("ALL"))])
    with torch.no_grad():
        assert torch.equal(plain.unet(*unet_inputs()).sample, weighted.unet(*unet_inputs()).sample)
    vector = B.parse_lbw("OUTALL")
    set_weights(weighted, {item.adapter: 0.5}, {item.adapter: vector})
    multipliers = {p: w.adapters[item.adapter].multiplier for p, w in lora_modules(weighted.unet).items()}
    assert all(math.isclose(m, 0.5 * B.ratio(vector, "unet", p)) for p, m in multipliers.items())
    assert {m for m in multipliers.values()} == {0.0, 0.5}
    # generate --merge folds the per-module multipliers in: the same output
    with torch.no_grad():
        runtime = weighted.unet(*unet_inputs()).sample
        apply.merge(weighted)
        assert torch.allclose(weighted.unet(*unet_inputs()).sample, runtime, atol=1e-5)


def test_baking_gives_the_images_of_applying_at_runtime(tiny_model, tmp_path):
    from sdlora.formats.io import load_lora_file
    from sdlora.generate.job import GenerateJob, generate
    from sdlora.generate.pngmeta import read_parameters
    from sdlora.generate.prompts import PromptSpec
    from sdlora.generate.sampling import Sampler

    report = B.bake_file(tiny_model["style"], tmp_path / "baked.safetensors", "OUTALL")
    lora, meta, fmt = load_lora_file(tmp_path / "baked.safetensors")
    modules = {k.rsplit(".", 2)[0] for k in lora if k.endswith("lora_up.weight")}
    assert fmt == "kohya" and meta["sdlora_lbw"] == "OUTALL" and report["kept"] == len(modules)
    assert report["dropped"] > 0 and all(B.block_of(*m.split(".", 1)) in ("BASE", "OUT03", "OUT04") for m in modules)
    spec = PromptSpec("a red square", seed=3, steps=2, cfg=4.0, width=32, height=32)
    images = []
    for lora_spec in (LoraSpec(tiny_model["style"], 0.8, B.parse_lbw("OUTALL")),
                      LoraSpec(tmp_path / "baked.safetensors", 0.8)):
        components = tiny_components(0)
        attach_loras(components, [lora_spec])
        images.append(torch.from_numpy(np.array(Sampler(components).samples(spec)[0].image)).to(torch.int16))
    assert (images[0] - images[1]).abs().max() <= 1 and images[0].float().std() > 0
    # generate --merge with lbw: the same image again, its block weights in the PNG parameters
    job = GenerateJob([spec], tmp_path / "gen", loras=[LoraSpec(tiny_model["style"], 0.8, B.parse_lbw("OUTALL"))],
                      merge=True, contact_sheet=False)
    [png] = generate(job, tiny_components(0)).images
    with Image.open(png) as image:
        assert (torch.from_numpy(np.array(image.convert("RGB"))).to(torch.int16) - images[0]).abs().max() <= 1
    assert read_parameters(png).fields["Lora block weights"] == "style: OUTALL"


def test_baking_refuses_an_empty_result_and_scaled_dora():
    lora = {"unet.down_blocks.0.attentions.0.proj_in.lora_down.weight": torch.ones(2, 4),
            "unet.down_blocks.0.attentions.0.proj_in.lora_up.weight": torch.ones(4, 2),
            "unet.down_blocks.0.attentions.0.proj_in.alpha": torch.tensor(2.0)}
    with pytest.raises(SdloraError, match="0 for every module"):
        B.bake(lora, B.parse_lbw("OUTALL"))
    baked, kept = B.bake(lora, B.parse_lbw("ALL0.5"))
    assert torch.equal(baked["unet.down_blocks.0.attentions.0.proj_in.lora_up.weight"], torch.full((4, 2), 0.5))
    lora["unet.down_blocks.0.attentions.0.proj_in.dora_scale"] = torch.ones(4, 1)
    with pytest.raises(SdloraError, match="DoRA module's block weight can only be 0 or 1"):
        B.bake(lora, B.parse_lbw("ALL0.5"))


@pytest.mark.parametrize("params", [
    {"hada_w1_a": (8, 2), "hada_w1_b": (2, 6), "hada_w2_a": (8, 2), "hada_w2_b": (2, 6)},  # LoHa
    {"lokr_w1": (2, 3), "lokr_w2_a": (4, 2), "lokr_w2_b": (2, 2)},  # LoKr, out 8 = 2 x 4, in 6 = 3 x 2
    {"lokr_w1_a": (2, 1), "lokr_w1_b": (1, 3), "lokr_w2": (4, 2)},
])
def test_baking_scales_lycoris_modules_linearly(params):
    from sdlora.formats import canonical as C

    gen = torch.Generator().manual_seed(0)
    module = "unet.up_blocks.1.attentions.0.proj_in"
    lora = {f"{module}.{k}": torch.randn(shape, generator=gen) for k, shape in params.items()}
    lora[f"{module}.alpha"] = torch.tensor(1.0)
    baked, kept = B.bake(lora, B.parse_lbw("ALL0.5"))
    assert kept == {module: 0.5}
    before, after = (C.delta(C.group(d)[("unet", module[5:])]) for d in (lora, baked))
    assert torch.allclose(after, 0.5 * before, atol=1e-6) and before.abs().max() > 0
