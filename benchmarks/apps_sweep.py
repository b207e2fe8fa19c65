"""Recipe sweep for the demo tasks (issue 15): many `sdlora demo --task T` runs with changed settings,
run side by side as separate processes (made for a GPU machine with many cores; it runs on a CPU too),
then the best recipes of each task again on three more training seeds.

    python benchmarks/apps_sweep.py --out OUT [--jobs 12] [--minutes 7] [--only art-style ...] [--quick]

Each run is `run_demo(DemoSettings(task=..., **demo))` with `sets` added to `sdlora train`'s settings,
fp32 everywhere (TF32 off on a GPU), so its figures are the CPU demo's up to rounding. One JSON line per
run lands in OUT/sweep.jsonl as it finishes (config, targets, rates, seconds); a run that would start
after the deadline is skipped. `--quick` shrinks every run (steps, prompts) to check the script itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TE = "lora.train_text_encoder=true"
EVAL_PROMPTS: list[int] = []  # --eval-prompts, passed on to every run


def _c(task: str, name: str, demo: dict | None = None, sets: tuple = (), world: dict | None = None,
       seeds: tuple[int, ...] = (42,)) -> dict:
    return {"task": task, "name": name, "demo": demo or {}, "sets": list(sets), "world": world or {}, "seeds": list(seeds)}


def configs() -> list[dict]:
    """Stage 1: one training seed (the demo's, 42) per recipe."""
    a = [_c("art-style", "base"), _c("art-style", "lr6e-3", {"lr": 6e-3}), _c("art-style", "lr1e-2", {"lr": 1e-2}),
         _c("art-style", "steps500", {"steps": 500}), _c("art-style", "rank16", {"rank": 16}),
         _c("art-style", "cd0", {"caption_dropout": 0.0}), _c("art-style", "cd0.1", {"caption_dropout": 0.1}),
         _c("art-style", "img64", {"images": 64}), _c("art-style", "te1e-3", sets=(TE, "train.text_encoder_lr=1e-3")),
         _c("art-style", "lr6e-3-s200", {"lr": 6e-3, "steps": 200}), _c("art-style", "noconv", {"conv": False}),
         _c("art-style", "lr6e-3-r16", {"lr": 6e-3, "rank": 16}), _c("art-style", "lr6e-3-s150", {"lr": 6e-3, "steps": 150}),
         _c("art-style", "const", sets=("train.lr_scheduler=constant",)),
         _c("art-style", "minsnr5", sets=("train.min_snr_gamma=5.0",)),
         _c("art-style", "lr6e-3-cd0", {"lr": 6e-3, "caption_dropout": 0.0}),
         _c("art-style", "bs4-s600", {"batch_size": 4, "steps": 600})]
    c = [_c("concept", "base"), _c("concept", "te1e-3", sets=(TE, "train.text_encoder_lr=1e-3")),
         _c("concept", "te3e-3", sets=(TE, "train.text_encoder_lr=3e-3")), _c("concept", "lr6e-3", {"lr": 6e-3}),
         _c("concept", "steps500", {"steps": 500}), _c("concept", "replay0.25", world={"REPLAY_SHARE": 0.25}),
         _c("concept", "replay1", world={"REPLAY_SHARE": 1.0}),
         _c("concept", "te1e-3-lr6e-3", {"lr": 6e-3}, (TE, "train.text_encoder_lr=1e-3")),
         _c("concept", "cd0", {"caption_dropout": 0.0}), _c("concept", "rank16", {"rank": 16}),
         _c("concept", "te1e-3-s500", {"steps": 500}, (TE, "train.text_encoder_lr=1e-3")),
         _c("concept", "img200", {"images": 200}), _c("concept", "te3e-4", sets=(TE, "train.text_encoder_lr=3e-4")),
         _c("concept", "noconv", {"conv": False}), _c("concept", "te1e-3-cd0", {"caption_dropout": 0.0},
                                                      (TE, "train.text_encoder_lr=1e-3")),
         _c("concept", "lr1e-2", {"lr": 1e-2}), _c("concept", "te3e-3-lr6e-3", {"lr": 6e-3}, (TE, "train.text_encoder_lr=3e-3"))]
    s = [_c("subject", "base"), _c("subject", "te1e-3", sets=("train.text_encoder_lr=1e-3",)),
         _c("subject", "te3e-3", sets=("train.text_encoder_lr=3e-3",)),
         _c("subject", "te1e-3-pw0.5", sets=("train.text_encoder_lr=1e-3", "train.prior_loss_weight=0.5")),
         _c("subject", "te1e-3-pw0.25", sets=("train.text_encoder_lr=1e-3", "train.prior_loss_weight=0.25")),
         _c("subject", "te1e-3-s500", {"steps": 500}, ("train.text_encoder_lr=1e-3",)),
         _c("subject", "te1e-3-lr6e-3", {"lr": 6e-3}, ("train.text_encoder_lr=1e-3",)),
         _c("subject", "note", sets=("lora.train_text_encoder=false",)),
         _c("subject", "te1e-3-cls64", {"class_images": 64}, ("train.text_encoder_lr=1e-3",)),
         _c("subject", "te1e-3-r16", {"rank": 16}, ("train.text_encoder_lr=1e-3",)),
         _c("subject", "te1e-3-noconv", {"conv": False}, ("train.text_encoder_lr=1e-3",)),
         _c("subject", "te3e-3-pw0.5", sets=("train.text_encoder_lr=3e-3", "train.prior_loss_weight=0.5")),
         _c("subject", "te1e-3-s500-pw0.5", {"steps": 500}, ("train.text_encoder_lr=1e-3", "train.prior_loss_weight=0.5")),
         _c("subject", "te1e-3-cls16", {"class_images": 16}, ("train.text_encoder_lr=1e-3",)),
         _c("subject", "te1e-3-lr1e-2", {"lr": 1e-2}, ("train.text_encoder_lr=1e-3",)),
         _c("subject", "te1e-4", sets=("train.text_encoder_lr=1e-4",))]
    return s + c + a  # the subject runs train twice (with and without the prior): start them first


SHIFT3, MINSNR = "train.timestep_shift=3.0", "train.min_snr_gamma=5.0"


def configs_round2() -> list[dict]:
    """Round 2 (after round 1 found no recipe for the new shapes): which new shape a task teaches
    (`world.shape`), and timesteps drawn towards noise, where an outline (not a texture) is decided."""
    arrow, cres, heart = {"shape": "arrow"}, {"shape": "crescent"}, {"shape": "heart"}
    s = [_c("subject", "crescent"), _c("subject", "crescent-shift3", sets=(SHIFT3,)),
         _c("subject", "crescent-shift3-pw0.5", sets=(SHIFT3, "train.prior_loss_weight=0.5")),
         _c("subject", "crescent-minsnr", sets=(MINSNR,)), _c("subject", "arrow", world=arrow),
         _c("subject", "arrow-shift3", sets=(SHIFT3,), world=arrow),
         _c("subject", "crescent-shift3-te1e-3", sets=(SHIFT3, "train.text_encoder_lr=1e-3")),
         _c("subject", "heart-shift3", sets=(SHIFT3,), world=heart)]
    c = [_c("concept", "arrow", world=arrow), _c("concept", "arrow-shift3", sets=(SHIFT3,), world=arrow),
         _c("concept", "arrow-shift5", sets=("train.timestep_shift=5.0",), world=arrow),
         _c("concept", "arrow-logitn1", sets=("train.timestep_sampling=logit_normal", "train.logit_mean=1.0"), world=arrow),
         _c("concept", "arrow-tmin200", sets=("train.timestep_min=200",), world=arrow),
         _c("concept", "arrow-pyramid6", sets=("train.multires_noise_iterations=6",), world=arrow),
         _c("concept", "arrow-minsnr", sets=(MINSNR,), world=arrow),
         _c("concept", "arrow-shift3-lr6e-3", {"lr": 6e-3}, (SHIFT3,), world=arrow),
         _c("concept", "arrow-shift3-te", {"caption_dropout": 0.0}, (SHIFT3, TE, "train.text_encoder_lr=1e-3"), world=arrow),
         _c("concept", "arrow-shift3-img50", {"images": 50}, (SHIFT3,), world=arrow),
         _c("concept", "crescent-shift3", sets=(SHIFT3,), world=cres),
         _c("concept", "heart-shift3", sets=(SHIFT3,), world=heart),
         _c("concept", "arrow-shift3-r16", {"rank": 16}, (SHIFT3,), world=arrow)]
    a = [_c("art-style", "shift2", sets=("train.timestep_shift=2.0",)),
         _c("art-style", "shift0.5", sets=("train.timestep_shift=0.5",)),
         _c("art-style", "minsnr-lr4e-3", {"lr": 4e-3}, (MINSNR,)),
         _c("art-style", "minsnr-shift2", sets=(MINSNR, "train.timestep_shift=2.0"))]
    return s + c + a


def configs_round3() -> list[dict]:
    """Round 3: shorter style recipes on three training seeds (the demo must fit in 3 minutes on the CPU),
    and how far the new shapes get with 1000 steps (replay images in the concept's colours only)."""
    seeds, rc = (1, 2, 3), {"replay": "concept"}  # replay images in the concept's colours only
    long = [_c("concept", "arrow-rc-s1000", {"steps": 1000}, world={**rc, "shape": "arrow"}),
            _c("concept", "heart-rc-s1000", {"steps": 1000}, world={**rc, "shape": "heart"}),
            _c("concept", "arrow-rc-s1000-shift3", {"steps": 1000}, (SHIFT3,), world={**rc, "shape": "arrow"}),
            _c("concept", "arrow-rc-s1000-lr1e-3", {"steps": 1000, "lr": 1e-3}, world={**rc, "shape": "arrow"}),
            _c("subject", "crescent-s600", {"steps": 600}),
            _c("subject", "crescent-s600-pw0.5-shift3", {"steps": 600}, (SHIFT3, "train.prior_loss_weight=0.5"))]
    short = [_c("style", "s200-lr4.5e-3", {"steps": 200, "lr": 4.5e-3}, seeds=seeds),
             _c("style", "s240-lr3.75e-3", {"steps": 240, "lr": 3.75e-3}, seeds=seeds),
             _c("style", "recipe", seeds=seeds),
             _c("art-style", "s240-lr3.75e-3", {"steps": 240, "lr": 3.75e-3}, seeds=seeds)]
    return long + short


def configs_round4() -> list[dict]:
    """Round 4: each task's recipe on three training seeds (the concept with replay in its colours only)."""
    seeds = (1, 2, 3)
    return [_c("subject", "recipe", seeds=seeds), _c("concept", "recipe-replay-concept-colours", world={"replay": "concept"},
                                                     seeds=seeds),
            _c("art-style", "recipe", seeds=seeds)]


ROUNDS = {1: configs, 2: configs_round2, 3: configs_round3, 4: configs_round4}


def score(metrics: dict) -> float:
    """Targets passed, then the mean margin (clipped to +-0.3) to break ties."""
    t = metrics["targets"]
    margin = []
    for x in t:
        op, threshold = x["target"].split()
        gap = (x["value"] or 0.0) - float(threshold)
        margin.append(max(-0.3, min(0.3, gap if op == ">=" else -gap)))
    return sum(x["passed"] for x in t) + sum(margin) / len(margin)


def one(cfg: dict, out: Path, seed: int, quick: bool, eval_prompts: int | None = None) -> None:
    """Run one config in this process (the --one worker)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from sdlora.tiny import demo_sets
    from sdlora.tiny.demo import DemoSettings, run_demo

    from sdlora.tiny import demo_tasks

    world = dict(cfg["world"])
    shape, replay = world.pop("shape", None), world.pop("replay", None)
    for key, value in world.items():
        setattr(demo_sets, key, value)
    if shape and cfg["task"] == "subject":
        demo_tasks.TASKS["subject"] = demo_tasks.subject_task(shape, demo_sets.SUBJECT_COLOURS)
    elif shape or replay:
        colours = demo_sets.CONCEPT_COLOURS
        demo_tasks.TASKS["concept"] = demo_tasks.concept_task(shape or demo_sets.CONCEPT_SHAPE, colours,
                                                              demo_sets.COLOURS if replay == "all" else colours)
    demo = dict(cfg["demo"])
    if eval_prompts:
        demo.setdefault("eval_prompts", eval_prompts)
    if quick:
        demo.update(steps=2, eval_prompts=2, grid_prompts=1, sample_steps=2, class_images=2 if cfg["task"] == "subject" else 0)
    result = run_demo(DemoSettings(output=out, task=cfg["task"], seed=seed, threads=1, sets=cfg["sets"], **demo),
                      say=lambda line: None)
    m = result.metrics
    line = {**cfg, "seed": seed, "score": score(m), "passed": m["passed"],
            "targets": m["targets"],
            "rates": m["rates"], "seconds": m["seconds"], "device": "cuda" if torch.cuda.is_available() else "cpu"}
    (out / "line.json").write_text(json.dumps(line) + "\n", encoding="utf-8")


def launch(cfg: dict, seed: int, root: Path, quick: bool, deadline: float, log) -> dict | None:
    if time.time() > deadline:
        return None
    out = root / f"{cfg['task']}-{cfg['name']}-s{seed}"
    start = time.time()
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg), "--seed", str(seed), "--out", str(out)]
                          + (["--quick"] if quick else []) + (["--eval-prompts", str(EVAL_PROMPTS[0])] if EVAL_PROMPTS else []),
                          capture_output=True, text=True)
    if proc.returncode != 0 or not (out / "line.json").is_file():
        log({**cfg, "seed": seed, "error": (proc.stderr or proc.stdout)[-800:]})
        return None
    line = json.loads((out / "line.json").read_text(encoding="utf-8"))
    line["wall"] = round(time.time() - start, 1)
    log(line)
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--log", type=Path, default=None, help="the JSON lines file (default OUT/sweep.jsonl)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--names", nargs="*", default=None, help="only these config names (task-name)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--round", type=int, default=1, choices=sorted(ROUNDS), help="which list of recipes (configs, configs_round2, ...)")
    p.add_argument("--eval-prompts", type=int, default=None, help="prompts a cell (default: each task's recipe)")
    p.add_argument("--best", type=int, default=2, help="recipes per task run again on seeds 1 2 3")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(json.loads(args.one), args.out, args.seed, args.quick, args.eval_prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.eval_prompts:
        EVAL_PROMPTS.append(args.eval_prompts)
    deadline = time.time() + 60 * args.minutes
    cfgs = [c for c in ROUNDS[args.round]() if (args.only is None or c["task"] in args.only)
            and (args.names is None or f"{c['task']}-{c['name']}" in args.names)]
    sink = (args.log or args.out / "sweep.jsonl").open("a", encoding="utf-8")

    tally = {"ok": 0, "error": 0}

    def log(line: dict) -> None:
        tally["error" if "error" in line else "ok"] += 1
        sink.write(json.dumps(line) + "\n")
        sink.flush()
        brief = "ERROR " + line["error"][-300:] if "error" in line else f"score {line['score']:.2f} " + " ".join(
            f"{t['value'] or 0:.2f}{'+' if t['passed'] else '-'}" for t in line["targets"])
        print(f"{time.strftime('%H:%M:%S')} {line['task']:<9} {line['name']:<18} seed {line['seed']:<3} {brief}", flush=True)
        if tally["error"] >= 3 and not tally["ok"]:
            print("the first three runs failed: stopping", flush=True)
            os._exit(1)

    with ThreadPoolExecutor(args.jobs) as pool:
        runs = [(c, seed) for c in cfgs for seed in c["seeds"]]
        first = [x for x in pool.map(lambda cs: launch(cs[0], cs[1], args.out, args.quick, deadline, log), runs) if x]
        again = []
        for task in dict.fromkeys(c["task"] for c in cfgs):
            ranked = sorted((x for x in first if x["task"] == task), key=lambda x: -x["score"])[:args.best]
            again += [(x, seed) for x in ranked for seed in (1, 2, 3)]
        strip = ("task", "name", "demo", "sets", "world", "seeds")
        list(pool.map(lambda xs: launch({k: xs[0][k] for k in strip}, xs[1], args.out, args.quick, deadline, log), again))
    sink.close()


if __name__ == "__main__":
    main()
