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


def _c(task: str, name: str, demo: dict | None = None, sets: tuple = (), world: dict | None = None) -> dict:
    return {"task": task, "name": name, "demo": demo or {}, "sets": list(sets), "world": world or {}}


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


def score(metrics: dict) -> float:
    """Targets passed, then the mean margin (clipped to +-0.3) to break ties."""
    t = metrics["targets"]
    margin = []
    for x in t:
        op, threshold = x["target"].split()
        gap = (x["value"] or 0.0) - float(threshold)
        margin.append(max(-0.3, min(0.3, gap if op == ">=" else -gap)))
    return sum(x["passed"] for x in t) + sum(margin) / len(margin)


def one(cfg: dict, out: Path, seed: int, quick: bool) -> None:
    """Run one config in this process (the --one worker)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from sdlora.tiny import demo_sets
    from sdlora.tiny.demo import DemoSettings, run_demo

    for key, value in cfg["world"].items():
        setattr(demo_sets, key, value)
    demo = dict(cfg["demo"])
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
                          + (["--quick"] if quick else []), capture_output=True, text=True)
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
    p.add_argument("--best", type=int, default=2, help="recipes per task run again on seeds 1 2 3")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(json.loads(args.one), args.out, args.seed, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60 * args.minutes
    cfgs = [c for c in configs() if (args.only is None or c["task"] in args.only)
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
        first = [x for x in pool.map(lambda c: launch(c, 42, args.out, args.quick, deadline, log), cfgs) if x]
        again = []
        for task in dict.fromkeys(c["task"] for c in cfgs):
            ranked = sorted((x for x in first if x["task"] == task), key=lambda x: -x["score"])[:args.best]
            again += [(x, seed) for x in ranked for seed in (1, 2, 3)]
        strip = ("task", "name", "demo", "sets", "world")
        list(pool.map(lambda xs: launch({k: xs[0][k] for k in strip}, xs[1], args.out, args.quick, deadline, log), again))
    sink.close()


if __name__ == "__main__":
    main()
