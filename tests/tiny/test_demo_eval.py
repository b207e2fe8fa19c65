from collections import Counter
from itertools import product

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler

from sdlora.lora import inject, lora_modules
from sdlora.models import SDComponents, load_tokenizer
from sdlora.models.skeleton import sd14_config
from sdlora.tiny.arch import build_models
from sdlora.tiny.demo_data import DATA_SEED
from sdlora.tiny.demo_eval import EVAL_SEED, RATES, SEED_STRIDE, eval_prompts, eval_seeds, rates, style_metrics
from sdlora.tiny.render import render_image
from sdlora.tiny.world import Scene
from sdlora.tiny.world import COLOURS, SHAPE_NAMES


def test_forty_prompts_are_every_colour_and_shape_once():
    prompts = eval_prompts("{a} {colour} {shape} in sks style")
    assert len(prompts) == 40
    assert {(c, s) for _, c, s in prompts} == set(product(COLOURS, SHAPE_NAMES))
    assert prompts[1] == ("an orange square in sks style", "orange", "square")


@pytest.mark.parametrize("count", [8, 16, 24])
def test_fewer_prompts_use_every_colour_equally_and_spread_shapes(count):
    prompts = eval_prompts("{colour} {shape}", count)
    colours, shapes = Counter(c for _, c, _ in prompts), Counter(s for _, _, s in prompts)
    assert set(colours.values()) == {count // 8}
    assert len(shapes) == 5 and max(shapes.values()) - min(shapes.values()) <= 2


def test_seeds_are_distinct_and_held_out():
    seeds = eval_seeds(40, rounds=3)
    assert len(set(seeds)) == 120 and seeds[:2] == [EVAL_SEED, EVAL_SEED + 1]
    assert seeds[40] == EVAL_SEED + SEED_STRIDE
    # the data's scene stream (DATA_SEED) and the trainer's default seed (42) are outside the range
    assert DATA_SEED not in seeds and 42 not in seeds and min(seeds) > 1000
    with pytest.raises(ValueError):
        eval_seeds(SEED_STRIDE + 1)


@pytest.fixture(scope="module")
def micro_with_lora():
    torch.manual_seed(0)
    unet, vae, text_encoder = build_models("micro", seed=1)
    scheduler = PNDMScheduler.from_config(sd14_config("scheduler"))
    components = SDComponents(load_tokenizer(), text_encoder.eval(), vae.eval(), unet.eval(), scheduler, "micro")
    inject(components.unet, [r".*attn2\.to_v"], rank=2, adapter="style")
    for wrapper in lora_modules(components.unet).values():
        torch.nn.init.normal_(wrapper.adapters["style"].up.weight, std=0.5)
    return components


def test_style_metrics_reports_base_and_lora_rates_and_leaves_the_lora_on(micro_with_lora):
    out = style_metrics(micro_with_lora, "style", trigger_template="{a} {colour} {shape} in sks style",
                        plain_template="{a} {colour} {shape}", style="striped", prompts=8, rounds=1,
                        guidance=2.0, steps=2, batch_size=8)
    assert set(out) == {"base", "lora"} and set(out["base"]) == {"trigger"}
    assert set(out["lora"]) == {"trigger", "no_trigger"}
    for group in (out["base"]["trigger"], out["lora"]["trigger"], out["lora"]["no_trigger"]):
        assert group["n"] == 8 and all(0.0 <= group[k] <= 1.0 for k in RATES)
        assert group["both"] <= min(group["colour"], group["shape"])
    assert all(w.adapters["style"].multiplier == 1.0 for w in lora_modules(micro_with_lora.unet).values())


def test_rates_score_known_images_instead_of_drawing_them(micro_with_lora):
    """The micro model draws no shapes; ground-truth images given as `known` for some (prompt, seed)
    pairs are scored in their place, the rest are drawn."""
    prompts = eval_prompts("{a} {colour} {shape}", 8)
    seeds = eval_seeds(8)
    truth = {(p, seed): np.asarray(render_image(Scene(shape, colour, "white" if colour != "white" else "black",
                                                      "large", 32.0, 32.0, 21.0)), dtype=np.float32) / 255.0
             for (p, colour, shape), seed in list(zip(prompts, seeds))[:6]}
    settings = dict(expected_style="plain", seeds=seeds, guidance=2.0, steps=2, batch_size=4)
    drawn = rates(micro_with_lora, prompts, **settings)
    mixed = rates(micro_with_lora, prompts, known=truth, **settings)
    assert drawn["n"] == mixed["n"] == 8 and drawn["both"] == 0.0
    assert mixed["both"] == pytest.approx(6 / 8) and mixed["shape"] >= 6 / 8
