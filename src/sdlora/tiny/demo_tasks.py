"""The demo's tasks as data: one per application of the toolkit, each a learning problem sd-tiny has
never solved, with its training set, recipe, prompt sets and pass/fail targets.

    style      a new texture (striped) behind a trigger              examples/anime-style
    art-style  a second style (hollow outlines) behind a trigger      examples/art-style
    subject    ONE new shape from 8 images, rare token + class word   examples/personal-portrait
               (DreamBooth with class images and prior preservation)
    concept    a new shape word from ~100 images in some colours      examples/fantasy-creatures

Rates are measured by demo_measure as {model: {prompt set: rates}}; a target names one rate by
(model, prompt set, rate). Recipes were tuned on one training seed and checked on three
(benchmarks/apps_seeds.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from sdlora.tiny.demo_data import DEMO_SIZES, DEMO_STYLE, TRIGGER, write_style_dataset
from sdlora.tiny.demo_sets import (CLASS_WORD, CONCEPT_COLOURS, CONCEPT_SHAPE, SUBJECT_COLOURS, SUBJECT_SHAPE,
                                   SUBJECT_TOKEN, held_out, write_concept_dataset, write_subject_dataset)
from sdlora.tiny.world import COLOURS, SHAPE_NAMES, article

ART_STYLE, ART_TRIGGER = "hollow", "ohwx style"

Target = tuple[str, tuple[str, str, str], str, float]  # (what, (model, prompt set, rate), op, threshold)


@dataclass(frozen=True)
class PromptSet:
    """Prompts `template` over `colours` x `shapes` (count of them, interleaved so any prefix is
    balanced), scored against `style`; `subject` is the shape whose read share is reported."""

    template: str
    colours: tuple[str, ...] = COLOURS
    shapes: tuple[str, ...] = SHAPE_NAMES
    style: str = "plain"

    def prompts(self, count: int) -> list[tuple[str, str, str]]:
        """Prompt i: colour i % C and shape (i + i // C) % S (every pair once in the first C*S when
        gcd(C, S) = 1)."""
        nc, ns = len(self.colours), len(self.shapes)
        out = []
        for i in range(count):
            colour, shape = self.colours[i % nc], self.shapes[(i + i // nc) % ns]
            out.append((self.template.format(a=article(colour), colour=colour, shape=shape), colour, shape))
        return out


@dataclass(frozen=True)
class Task:
    name: str
    application: str  # the examples/ folder of the application it stands in for
    title: str
    lora_name: str
    recipe: dict  # DemoSettings fields this task sets unless given (images, steps, lr, eval_prompts, ...)
    prompt_sets: dict[str, PromptSet]  # name -> prompts; the first is the grid's
    targets: tuple[Target, ...]
    rows: tuple[tuple[str, str, str], ...]  # (label, prompt set, rate) of the report table
    data: Callable  # data(folder, count) -> scenes: writes the training set
    class_prompts: tuple[str, ...] = ()  # DreamBooth: class images of these prompts in turn, drawn by the base model
    train: dict | None = None  # extra `sdlora train` settings of this task's recipe
    shape: str | None = None  # the new shape a subject or concept task teaches (class drift is read against it)
    masks: bool = False  # data(folder, count, mask_dir=) writes a loss mask per image; the LoRA trains with them


def _style_task(name, application, title, lora_name, style, trigger, template, recipe, sizes=DEMO_SIZES) -> Task:
    return Task(
        name, application, title, lora_name, recipe,
        {"trigger": PromptSet(template + " in " + trigger, style=style),
         "no_trigger": PromptSet(template, style=style)},
        (("base style rate, trigger prompts", ("base", "trigger", "style"), "<=", 0.10),
         ("LoRA style rate, trigger prompts", ("lora", "trigger", "style"), ">=", 0.80),
         ("LoRA colour rate, trigger prompts", ("lora", "trigger", "colour"), ">=", 0.70)),
        (("style, trigger prompts", "trigger", "style"), ("colour, trigger prompts", "trigger", "colour"),
         ("shape, trigger prompts", "trigger", "shape"), ("style, prompts without trigger (leak)", "no_trigger", "style"),
         ("colour, prompts without trigger", "no_trigger", "colour")),
        partial(write_style_dataset, style=style, trigger=trigger, sizes=sizes))


SUBJECT_PROMPT = "{a} {colour} " + f"{SUBJECT_TOKEN} {CLASS_WORD}"


def class_prompts() -> tuple[str, ...]:
    """The class images' prompts: the bare class, the class in every colour, then each shape sd-tiny
    knows, uncoloured. DreamBooth reads the prior where it is preserved, on the class prompt: the
    bare-class drift prompts ("a blue shape") are class prompts; the known shapes are measured in
    colours the class prompts do not name. The class in the subject's colours only (the instance
    captions without the token) left the others to drift: blue, purple and white shapes became the
    subject (bare-class drift 25-37.5%, benchmarks/RESULTS.md, 2026-12-02 16:25 UTC)."""
    return ((f"a {CLASS_WORD}",) + tuple(f"{article(c)} {c} {CLASS_WORD}" for c in COLOURS)
            + tuple(f"{article(shape)} {shape}" for shape in SHAPE_NAMES))


def subject_task(shape: str, colours: tuple[str, ...]) -> Task:
    """DreamBooth on `shape` drawn in `colours` only, measured in the other colours (recontextualisation)."""
    return Task(
        "subject", "personal-portrait", f"DreamBooth: one new shape ({shape}) from "
        f"8 images as '{SUBJECT_TOKEN} {CLASS_WORD}'", "sks-subject", {"images": 8, "class_images": 64, "lr": 5e-3},
        {"recontext": PromptSet(SUBJECT_PROMPT, held_out(colours), (shape,)),
         "drift": PromptSet("{a} {colour} {shape}"),
         "bare_class": PromptSet("{a} {colour} " + CLASS_WORD, COLOURS, (shape,))},
        (("base identity rate, subject prompts", ("base", "recontext", "shape"), "<=", 0.05),
         ("LoRA identity rate, subject in unseen colours", ("lora", "recontext", "shape"), ">=", 0.70),
         ("LoRA colour rate, subject in unseen colours", ("lora", "recontext", "colour"), ">=", 0.70),
         ("LoRA class drift (other shapes and the bare class drawn as the subject)", ("lora", "all", "drift"),
          "<=", 0.10)),
        (("identity (subject read), subject prompts", "recontext", "shape"),
         ("colour obeyed, subject prompts", "recontext", "colour"),
         ("drift: existing-shape prompts drawn as the subject", "drift", "drift"),
         ("drift: bare-class prompts drawn as the subject", "bare_class", "drift"),
         ("class drift, both prompt sets", "all", "drift"),
         ("existing shapes still right", "drift", "both")),
        partial(write_subject_dataset, shape=shape, colours=colours), class_prompts(),
        # No caption dropout: an empty caption would teach the subject as the unconditional image. The text
        # encoder stays frozen: its adapters at the trainer's text-encoder rate (5e-5) left every rate as it
        # was, at 1e-3 identity fell (47.5% against 52.5%, noise targets). The class images (all 64 trained
        # on, each epoch the next 8) are trained towards the base model's own prediction
        # (train.prior_target = "base") at half weight, with timesteps drawn towards noise (logit-normal,
        # mean 1), at 5e-3: identity 80.0%, drift 8.3% (seed 42; 65.8% / 9.7% over seeds 42, 1, 2). At full
        # weight 55.0% / 6.2%; with the class in the subject's colours only, full weight, 82.5% / 10.4%
        # (74.2% / 11.1% over the three seeds); rank 4: 62.5% / 4.2% (benchmarks/RESULTS.md, 2026-12-02).
        {"data.caption_dropout": 0.0, "train.prior_target": "base", "train.prior_loss_weight": 0.5,
         "train.timestep_sampling": "logit_normal", "train.logit_mean": 1.0}, shape)


def concept_task(shape: str, colours: tuple[str, ...], replay_colours: tuple[str, ...] | None = None) -> Task:
    """A new shape word learned in `colours` (replay images of the five known shapes in `replay_colours`,
    default the same colours), measured in the other colours and on the five known shapes."""
    return Task(
        "concept", "fantasy-creatures", f"a new concept: the word '{shape}' from ~100 images in "
        f"{len(colours)} colours", f"{shape}-concept", {"images": 100, "steps": 600},
        {"held_out": PromptSet("{a} {colour} {shape}", held_out(colours), (shape,)),
         "original": PromptSet("{a} {colour} {shape}")},
        (("LoRA shape rate, held-out colours", ("lora", "held_out", "shape"), ">=", 0.75),
         ("LoRA colour rate, held-out colours", ("lora", "held_out", "colour"), ">=", 0.70),
         ("original shapes: shape rate change (LoRA - base)", ("change", "original", "shape"), ">=", -0.05),
         ("original shapes: colour rate change (LoRA - base)", ("change", "original", "colour"), ">=", -0.05)),
        (("shape, held-out colours", "held_out", "shape"), ("colour, held-out colours", "held_out", "colour"),
         ("shape, original five shapes", "original", "shape"), ("colour, original five shapes", "original", "colour")),
        partial(write_concept_dataset, shape=shape, colours=colours, replay_colours=replay_colours),
        # No caption dropout: guidance extrapolates from the empty-prompt prediction, and one that learned
        # hearts too cancels them (held-out hearts 42.5% -> 70.0% without it, 600 steps). Loss masks on the
        # shapes (demo_sets.loss_mask): the outline, not the flat background, is what the LoRA must learn.
        # Timesteps drawn towards noise (logit-normal, mean 1), where an outline is decided: with half as
        # many replay images as hearts, hearts 95.0% and known shapes -2.5 points (seed 42) against 77.5%
        # and -2.5 with uniform timesteps (benchmarks/RESULTS.md).
        train={"data.caption_dropout": 0.0, "train.timestep_sampling": "logit_normal", "train.logit_mean": 1.0},
        shape=shape, masks=True)

TASKS: dict[str, Task] = {
    "style": _style_task("style", "anime-style", "a LoRA learns a new style (striped)", "sks-striped", DEMO_STYLE,
                         TRIGGER, "{a} {colour} {shape}", {}),
    # The checker reads hollow outlines on medium and large shapes (a small shape's inside closes up), so
    # the prompts ask for large shapes, and the training set shows large ones only: 64 of them, 400 steps
    # (32 medium and large, 300 steps: style 67.5%, colour 80.0%; 64 large, 400 steps: 82.5% / 70.0%, seed 42).
    "art-style": _style_task("art-style", "art-style", "a LoRA learns a second style (hollow outlines)",
                             "ohwx-hollow", ART_STYLE, ART_TRIGGER, "a large {colour} {shape}",
                             {"images": 64, "steps": 400}, sizes=("large",)),
    "subject": subject_task(SUBJECT_SHAPE, SUBJECT_COLOURS),
    "concept": concept_task(CONCEPT_SHAPE, CONCEPT_COLOURS),
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
