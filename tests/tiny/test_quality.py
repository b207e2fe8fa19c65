import numpy as np
import pytest
from diffusers import DPMSolverMultistepScheduler, PNDMScheduler

from sdlora.models import SDComponents, load_tokenizer
from sdlora.models.skeleton import sd14_config
from sdlora.tiny.arch import build_models
from sdlora.tiny.quality import as_pipeline, evaluate_quality, generate, prompt_grid, score
from sdlora.tiny.render import render
from sdlora.tiny.world import COLOURS, SHAPE_NAMES, Scene


@pytest.fixture(scope="module")
def micro_components():
    unet, vae, text_encoder = build_models("micro", seed=1)
    scheduler = PNDMScheduler.from_config(sd14_config("scheduler"))
    return SDComponents(load_tokenizer(), text_encoder.eval(), vae.eval(), unet.eval(), scheduler, "micro")


def test_prompt_grid_covers_every_colour_and_shape():
    grid = prompt_grid()
    assert len(grid) == len(COLOURS) * len(SHAPE_NAMES)
    assert ("an orange star", "orange", "star") in grid
    assert prompt_grid("{a} {colour} {shape} in sks style", ["red", "orange"], ["cross"]) == \
        [("a red cross in sks style", "red", "cross"), ("an orange cross in sks style", "orange", "cross")]


def test_score_of_ground_truth_is_perfect_and_of_wrong_labels_is_zero():
    expected = [(f"a {c} {s}", c, s) for c, s in [("red", "star"), ("blue", "circle"), ("white", "cross")]]
    images = [render(Scene(s, c, "green" if c != "green" else "red", "large", 32.0, 32.0, 21.0))
              for _, c, s in expected]
    report = score(images, expected)
    assert (report["colour"], report["shape"], report["both"], report["style"], report["n"]) == (1, 1, 1, 1, 3)
    wrong = score(images, [(p, "yellow", "square") for p, _, _ in expected], expected_style="striped")
    assert (wrong["colour"], wrong["shape"], wrong["style"]) == (0, 0, 0)
    assert wrong["per_prompt"]["a red star"] == {"colour": 0.0, "shape": 0.0}


def test_evaluate_quality_runs_on_a_tiny_random_model(micro_components):
    report = evaluate_quality(micro_components, seeds=1, steps=2, batch_size=40)
    assert report["n"] == len(prompt_grid()) and len(report["per_prompt"]) == report["n"]
    for key in ("colour", "shape", "both", "style"):
        assert 0.0 <= report[key] <= 1.0
    assert report["both"] <= min(report["colour"], report["shape"])


def test_generation_is_seeded(micro_components):
    pipe = as_pipeline(micro_components)
    a = generate(pipe, ["a red star", "a red star"], [3, 4], steps=2)
    b = generate(pipe, ["a red star"], [3], steps=2)
    assert a.shape == (2, 64, 64, 3) and np.allclose(a[0], b[0], atol=1e-5)
    assert not np.allclose(a[0], a[1])


def test_as_pipeline_swaps_the_scheduler_without_touching_the_given_pipeline(micro_components):
    pipe = as_pipeline(micro_components)
    dpm = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    swapped = as_pipeline(pipe, dpm)
    assert swapped.scheduler is dpm and isinstance(pipe.scheduler, PNDMScheduler)
    assert swapped.unet is pipe.unet is micro_components.unet


def test_as_pipeline_rejects_other_types():
    with pytest.raises(TypeError, match="SDComponents"):
        as_pipeline(object())
