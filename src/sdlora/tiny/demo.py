"""`sdlora demo`, the main job end to end on the bundled sd-tiny, on a CPU in a few minutes:

    dataset   32 striped shapes-world images captioned "... in sks style"      (demo_data)
    train     a LoRA through `sdlora train`'s own entry point (kohya + diffusers files)
    compare   base vs LoRA grid and HTML report, same prompts and seeds      (sdlora.evaluate.compare)
    measure   checker rates with and without the trigger, LoRA off and on     (demo_eval)
    report    metrics.json, the report's metrics table, a summary table      (demo_report)

Everything lands in one output folder; nothing is downloaded, no GPU is needed (one is used when
present). sd-tiny is sampled at guidance 2.0: it was trained without caption dropout long enough for
high guidance to pay off, and its checker rates fall from ~99% at 2.0 to ~40-60% at 5.0-7.5.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tiny import demo_report
from sdlora.tiny.demo_data import DEMO_STYLE, TRIGGER, write_style_dataset
from sdlora.tiny.demo_eval import eval_prompts, eval_seeds, style_metrics

SD_TINY_GUIDANCE = 2.0  # sd-tiny's guidance scale (see the module docstring)
SAMPLE_STEPS = 20  # PNDM steps, SD 1.4's scheduler
LORA_NAME = "sks-striped"
TRIGGER_TEMPLATE = "{a} {colour} {shape} in " + TRIGGER
PLAIN_TEMPLATE = "{a} {colour} {shape}"


@dataclass
class DemoSettings:
    """What the demo does; the defaults are the tuned recipe (about 2 minutes on 2 CPU cores)."""

    output: Path = Path("runs/demo")
    images: int = 32  # training images
    steps: int = 300  # optimizer steps
    batch_size: int = 8
    rank: int = 8
    lr: float = 3e-3
    conv: bool = True  # also adapt the resnet convolutions (LoCon): stripes are a texture
    caption_dropout: float = 0.2  # share of steps on an empty caption: the unconditional branch learns the style too
    eval_prompts: int = 40  # trigger prompts scored per model (40: every colour x shape once)
    eval_rounds: int = 1  # seeds per prompt
    grid_prompts: int = 8  # trigger prompts in the before/after grid (plus 2 without the trigger)
    guidance: float = SD_TINY_GUIDANCE
    sample_steps: int = SAMPLE_STEPS
    seed: int = 42  # trainer seed
    threads: int | None = None  # torch CPU threads (None: torch's default)
    sets: list[str] = field(default_factory=list)  # extra `sdlora train --set KEY=VALUE` overrides

    def check(self) -> "DemoSettings":
        for name in ("images", "steps", "batch_size", "rank", "eval_prompts", "eval_rounds", "grid_prompts",
                     "sample_steps"):
            if getattr(self, name) < 1:
                raise SdloraError(f"demo: --{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.caption_dropout < 1:
            raise SdloraError(f"demo: --caption-dropout must be in [0, 1), got {self.caption_dropout:g}")
        if self.lr <= 0 or self.guidance < 1:
            raise SdloraError(f"demo: --lr must be > 0 and --guidance >= 1, got {self.lr:g} and {self.guidance:g}")
        return self


@dataclass
class DemoResult:
    output: Path
    metrics: dict
    paths: dict[str, Path]  # what was written, by name
    passed: bool


def train_flags(s: DemoSettings, run_dir: Path) -> dict:
    """The `sdlora train` settings of the demo run, as {dotted key: value} (what its flags set).

    Latents and caption embeddings are cached once (the VAE and text encoder are frozen), so a
    step is one UNet forward/backward on (batch, 4, 16, 16) latents. A cosine schedule: with a
    constant rate the LoRA's style rate swings by +-15 points from one checkpoint to the next.
    Caption dropout: sampling with guidance extrapolates from the empty-prompt prediction, so a LoRA
    that never saw an empty caption has its style partly cancelled (0.2 raised the style rate by
    ~10 points on 120 held-out images, two training seeds).
    fp32 on every CPU (not `auto`, which picks bf16 on some), so results match across machines."""
    return {
        "model.name": "tiny", "save.output_dir": str(run_dir), "save.name": LORA_NAME,
        "save.formats": ["kohya", "diffusers"], "save.every_n_epochs": 0, "save.save_state": False,
        "data.resolution": 64, "data.buckets": False, "data.num_workers": 0,
        "data.cache_latents": "memory", "data.cache_text": True, "data.caption_dropout": s.caption_dropout,
        "lora.rank": s.rank, "lora.unet_preset": "unet-transformer", "lora.conv": s.conv,
        "train.steps": s.steps, "train.batch_size": s.batch_size, "train.lr": s.lr, "train.seed": s.seed,
        "train.lr_scheduler": "cosine", "train.mixed_precision": "no", "log.tensorboard": False, "log.every_n_steps": 50,
    }


def grid_specs(s: DemoSettings) -> list:
    """The grid's prompts: the first evaluation prompts (same seeds as their evaluation images) and
    two without the trigger, to show how much the style leaks."""
    from sdlora.generate.prompts import PromptSpec

    specs = []
    for template, count in ((TRIGGER_TEMPLATE, s.grid_prompts), (PLAIN_TEMPLATE, 2)):
        for (prompt, _, _), seed in zip(eval_prompts(template, count), eval_seeds(count)):
            specs.append(PromptSpec(prompt, seed=seed, steps=s.sample_steps, cfg=s.guidance, width=64, height=64,
                                    scheduler="pndm"))
    return specs


def run_demo(s: DemoSettings, *, say=print) -> DemoResult:
    """Run the whole demo into s.output; `say` prints progress lines and the final summary.
    s.threads applies for the duration (torch's thread count is restored after)."""
    import torch

    s.check()
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        return _run(s, say)
    finally:
        torch.set_num_threads(threads)


def _run(s: DemoSettings, say) -> DemoResult:
    import torch

    out, clock, timing = Path(s.output), time.perf_counter(), {}
    load_before = os.getloadavg()
    say(f"sdlora demo -> {out}  (torch threads: {torch.get_num_threads()}, load average {load_before[0]:.2f})")

    def lap(name: str, started: float) -> None:
        timing[name] = round(time.perf_counter() - started, 1)

    t = time.perf_counter()
    scenes = write_style_dataset(out / "data", s.images)
    lap("dataset", t)
    say(f"[1/4] dataset: {len(scenes)} {DEMO_STYLE} images captioned '... in {TRIGGER}' in {out / 'data'}")
    t = time.perf_counter()
    trained = train_lora(s, out, say)
    lap("train", t)
    say(f"[3/4] before/after grid: {s.grid_prompts + 2} prompts, base and LoRA")
    t = time.perf_counter()
    compare_result, components = compare_grid(s, out, trained.lora_files[0])
    lap("compare", t)
    say(f"[4/4] measuring: {s.eval_prompts * s.eval_rounds} images per model and prompt set, read by the checker")
    t = time.perf_counter()
    adapter = compare_result.loras[0].adapter
    rates = style_metrics(components, adapter, trigger_template=TRIGGER_TEMPLATE, plain_template=PLAIN_TEMPLATE,
                          style=DEMO_STYLE, prompts=s.eval_prompts, rounds=s.eval_rounds, guidance=s.guidance,
                          steps=s.sample_steps)
    norms = file_delta_norms(components, adapter, trained)
    lap("measure", t)
    timing["total"] = round(time.perf_counter() - clock, 1)
    machine = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    return write_outputs(s, out, rates, trained, norms, compare_result, timing, machine, say)


def train_lora(s: DemoSettings, out: Path, say=print):
    """Train through `sdlora train`'s entry point (config resolution, validation, the loop, export)."""
    from sdlora.train.entry import run

    flags = train_flags(s, out / "train")
    say_steps = f"{s.steps} steps of {s.batch_size} images, rank {s.rank}, lr {s.lr:g}"
    say(f"[2/4] training a LoRA on sd-tiny: {say_steps} (sdlora train --config {out / 'train' / 'config.toml'})")
    result = run(None, list(s.sets), flags, [str(out / "data")])
    if result.status != "done":
        raise KeyboardInterrupt
    if not result.lora_files:
        raise SdloraError(f"demo: training wrote no LoRA file into {out / 'train'}")
    return result


def compare_grid(s: DemoSettings, out: Path, lora_file: Path):
    """The before/after grid (compare's own sweep: base column = LoRA at weight 0); returns the
    result and the loaded model with the LoRA attached, reused for the measurements."""
    from sdlora.evaluate.compare import CompareJob, run_compare
    from sdlora.generate.job import load_model
    from sdlora.generate.loras import LoraSpec

    components = load_model("tiny", "fp32")
    job = CompareJob(prompts=grid_specs(s), loras=[LoraSpec(Path(lora_file))], out_dir=out, model="tiny", dtype="fp32")
    return run_compare(job, components), components


def file_delta_norms(components, adapter: str, trained) -> dict:
    """|delta W| of the trained LoRA, as the trainer measured it in memory and as each written file
    gives it back once loaded (equal up to fp16 rounding when the files keep the LoRA's scale)."""
    from sdlora.formats import apply
    from sdlora.generate.loras import LoraSpec, attach_loras
    from sdlora.train.export import delta_norm

    norms = {"trained": trained.delta_norm, trained.lora_files[0].name: delta_norm(components, adapter)}
    for path in trained.lora_files[1:]:
        loaded = attach_loras(components, [LoraSpec(Path(path))])[0]
        norms[Path(path).name] = delta_norm(components, loaded.adapter)
        apply.detach(components, loaded.adapter)
    return norms


def write_outputs(s: DemoSettings, out: Path, rates: dict, trained, norms: dict, compare_result, timing: dict,
                  machine: dict, say) -> DemoResult:
    """metrics.json, compare.json, report.html; print the summary and where everything is."""
    from sdlora.evaluate.compare import summary, write_json
    from sdlora.evaluate.report import write_report

    targets = demo_report.check_targets(rates)
    passed = all(t["passed"] for t in targets)
    lora_label = compare_result.columns[-1].label
    metrics = {
        "passed": passed, "targets": targets, "rates": rates,
        "leak": demo_report.rate(rates, "lora", "no_trigger", "style"),
        "style": DEMO_STYLE, "trigger": TRIGGER, "templates": [TRIGGER_TEMPLATE, PLAIN_TEMPLATE],
        "sampling": {"guidance": s.guidance, "steps": s.sample_steps, "scheduler": "pndm", "size": 64,
                     "seeds": eval_seeds(s.eval_prompts, s.eval_rounds)},
        "train": {"steps": trained.step, "delta_norm": norms, "lora_files": [str(p) for p in trained.lora_files],
                  "config": str(trained.run_dir / "config.toml")},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
        "seconds": timing, "machine": machine,
    }
    paths = {"dataset": out / "data", "LoRA (kohya)": trained.lora_files[0],
             **{f"LoRA ({p.name.split('.')[-2]})": p for p in trained.lora_files[1:]},
             "grid": compare_result.grid_path, "report": out / "report.html", "metrics": out / "metrics.json",
             "training run": trained.run_dir}
    write_json(out / "compare.json", summary(compare_result))
    write_report(out / "report.html", compare_result, title="sdlora demo: a LoRA learns a new style on sd-tiny",
                 metrics=demo_report.report_metrics(rates, "base", lora_label),
                 notes=demo_report.report_notes(targets, rates))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    say("\n" + demo_report.summary_table(rates, targets))
    say(f"\ndone in {timing['total']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items() if k != "total")
        + ")\n" + "\n".join(f"  {name:<16} {path}" for name, path in paths.items()))
    return DemoResult(out, metrics, paths, passed)
