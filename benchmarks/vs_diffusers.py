"""`sdlora train` against diffusers' official train_text_to_image_lora.py, both run unmodified, side by side.

    python benchmarks/vs_diffusers.py --script /tmp/train_text_to_image_lora.py            # both cases
    python benchmarks/vs_diffusers.py --script ... --case small --repeats 5
    python benchmarks/vs_diffusers.py --script ... --case full --steps 5 15 --repeats 2

The script is not part of this repository: take it from the diffusers repository
(examples/text_to_image/train_text_to_image_lora.py) and pass its path. Run this file with a Python
that has both tools on the SAME torch: the script needs torchvision and `datasets`, e.g. a separate
venv with torch, torchvision, diffusers, transformers, accelerate, datasets, peft, tensorboard and
`pip install -e .` of this repository (never torchvision in the project's own venv).

Cases (random weights, built with sdlora's own builders and saved as diffusers folders + tokenizer;
the data is an imagefolder of 32 captioned PNGs with metadata.jsonl):
  small  the small SD-architecture model of issue 19 at 64 px (8x8 latents), batch 4
  full   the full-size SD 1.4 architecture at 256 px, batch 1
Both tools: rank 4 (alpha = rank), attention-only LoRA (the script's own targets to_q/to_k/to_v/
to_out.0 = sdlora's `unet-attn`), lr 1e-4, constant schedule, fp32 (the script's
`--mixed_precision no`; sdlora's default `auto` is fp32 on the CPU, also run as `--mixed-precision no`
unless --no-fp32-twin), each tool's other settings at their defaults.

Steady seconds per step = (wall time of the long run - wall time of the short run) / (long - short):
start-up, model loading, caching and the final save cancel out. Runs alternate A/B/A/B so machine
load hits both tools alike; the figure is the median over --repeats. Peak RSS is ru_maxrss of each
child process (wait4), the maximum over its runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {"small": {"resolution": 64, "batch_size": 4}, "full": {"resolution": 256, "batch_size": 1}}
N_IMAGES = 32
# issue 19's small model: two UNet levels, two layers each; an 8x-downsampling four-level VAE; a 2-layer CLIP
SMALL_UNET = {"block_out_channels": [32, 64], "layers_per_block": 2,
              "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 8,
              "cross_attention_dim": 32, "sample_size": 8, "in_channels": 4, "out_channels": 4}
SMALL_VAE = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "latent_channels": 4,
             "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
             "sample_size": 64, "scaling_factor": 0.18215}
SMALL_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
              "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu",
              "projection_dim": 32}
COMMON = {"rank": 4, "lr": 1e-4}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--script", required=True, type=Path, help="diffusers' train_text_to_image_lora.py")
    p.add_argument("--case", choices=[*CASES, "both"], default="both")
    p.add_argument("--work", type=Path, default=Path("/tmp/sdlora-vs-diffusers"),
                   help="model folders, data and run outputs (models are built once and reused)")
    p.add_argument("--steps", type=int, nargs=2, default=(10, 50), metavar=("SHORT", "LONG"))
    p.add_argument("--repeats", type=int, default=3, help="A/B rounds; the median is reported")
    p.add_argument("--no-fp32-twin", action="store_true",
                   help="skip the extra `sdlora train --mixed-precision no` run when `auto` is fp32 anyway")
    p.add_argument("--baseline-src", type=Path, help="also run `sdlora train` from this older src/ folder "
                   "(e.g. `git archive COMMIT src | tar x -C DIR`): before/after figures in the same A/B rounds")
    p.add_argument("--sdlora-arg", action="append", default=[], help="extra argument for `sdlora train`")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both tools (default: torch's own choice); "
                   "on a loaded shared machine 1 avoids OpenMP spin-waiting swamping the figures")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed 1-step run of the script")
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- inputs

def build_model(case: str, folder: Path) -> Path:
    """A diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), built in
    a separate process: a child's ru_maxrss counts the pages it shares with this process when forked
    (Linux keeps the high-water mark across exec), so this process must stay small. Building the
    full-size model here once raised every later child's peak to this process's 5.35 GB."""
    if not (folder / "model_index.json").is_file():
        import multiprocessing

        child = multiprocessing.get_context("spawn").Process(target=_build_model, args=(case, folder))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"building the {case} model into {folder} failed (exit code {child.exitcode})")
    return folder


def _build_model(case: str, folder: Path) -> None:
    import torch

    from sdlora.models import SDComponents, load_tokenizer
    from sdlora.models import skeleton as sk
    from sdlora.models.pipeline import build_pipeline

    torch.manual_seed(0)
    if case == "small":
        parts = (sk.build_text_encoder(SMALL_TEXT), sk.build_vae(SMALL_VAE), sk.build_unet(SMALL_UNET))
    else:
        parts = (sk.sd14_text_encoder(0), sk.sd14_vae(1), sk.sd14_unet(2))
    components = SDComponents(load_tokenizer(), *parts, sk.sd14_scheduler(), f"random:{case}")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_pipeline(components).save_pretrained(tmp, safe_serialization=True)
    tmp.rename(folder)


def build_data(folder: Path, size: int) -> Path:
    """N_IMAGES PNGs (a coloured square on noise) and metadata.jsonl captions."""
    if (folder / "metadata.jsonl").is_file():
        return folder
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rs = np.random.default_rng(0)
    colors = ["red", "green", "blue", "yellow"]
    lines = []
    for i in range(N_IMAGES):
        a = rs.integers(0, 256, (size, size, 3), dtype=np.uint8)
        a[size // 4:3 * size // 4, size // 4:3 * size // 4] = rs.integers(0, 256, 3)
        name = f"{i:04d}.png"
        Image.fromarray(a).save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": f"a {colors[i % 4]} square, photo number {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# ----------------------------------------------------------------------------- commands

def script_cmd(args, case: str, model: Path, data: Path, out: Path, steps: int) -> list[str]:
    c = CASES[case]
    return [sys.executable, str(args.script), "--pretrained_model_name_or_path", str(model),
            "--train_data_dir", str(data), "--resolution", str(c["resolution"]),
            "--train_batch_size", str(c["batch_size"]), "--rank", str(COMMON["rank"]),
            "--learning_rate", str(COMMON["lr"]), "--max_train_steps", str(steps), "--seed", "0",
            "--mixed_precision", "no", "--output_dir", str(out)]


def sdlora_cmd(args, case: str, model: Path, data: Path, out: Path, steps: int, precision: str | None) -> list[str]:
    c = CASES[case]
    cmd = [sys.executable, "-m", "sdlora", "train", "--model", str(model), "--data", str(data),
           "--resolution", str(c["resolution"]), "--batch-size", str(c["batch_size"]),
           "--rank", str(COMMON["rank"]), "--lr", str(COMMON["lr"]), "--preset", "unet-attn",
           "--steps", str(steps), "--seed", "0", "--output", str(out)]
    return cmd + (["--mixed-precision", precision] if precision else []) + list(args.sdlora_arg)


def timed(cmd: list[str], out: Path, threads: int | None, env: dict | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS GB) of one child process (CPU time and RSS as wait4 reports
    them: the child and the children it waited for); its output goes to out/../<name>.log."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_CACHE": str(out.parent / "hf-datasets-cache")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = out.with_suffix(".log")
    with open(log, "w") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed (rc {proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss: KiB on Linux


# ----------------------------------------------------------------------------- measuring

def tools(args) -> dict[str, tuple[callable, dict]]:
    """name -> (function(case, model, data, out, steps) -> command, extra environment)."""
    from sdlora.train.precision import choose

    found = {"diffusers script": (lambda *a: script_cmd(args, *a), {}),
             "sdlora default": (lambda *a: sdlora_cmd(args, *a, None), {})}
    if choose("auto", "cpu").mode != "no" or not args.no_fp32_twin:
        found["sdlora fp32"] = (lambda *a: sdlora_cmd(args, *a, "no"), {})
    if args.baseline_src:
        found["sdlora baseline"] = (lambda *a: sdlora_cmd(args, *a, None),
                                    {"PYTHONPATH": str(args.baseline_src.resolve())})
    return found


def measure_case(args, case: str) -> dict[str, dict]:
    work = args.work
    model = build_model(case, work / f"model-{case}")
    data = build_data(work / f"data-{CASES[case]['resolution']}", CASES[case]["resolution"])
    short, long = args.steps
    runs: dict[str, dict] = {name: {"per_step": [], "cpu_per_step": [], "rss": [], "walls": []}
                             for name in tools(args)}
    if not args.no_warmup:  # an untimed 1-step run builds the script's `datasets` cache of the images
        make, env = tools(args)["diffusers script"]
        timed(make(case, model, data, work / "runs" / f"{case}-warmup", 1), work / "runs" / f"{case}-warmup",
              args.threads, env)
    for r in range(args.repeats):  # A/B/A/B: the tools alternate, short and long runs adjacent
        for name, (make, env) in tools(args).items():
            out = work / "runs" / f"{case}-{name.replace(' ', '_')}"
            t_short, c_short, rss_s = timed(make(case, model, data, out, short), out, args.threads, env)
            t_long, c_long, rss_l = timed(make(case, model, data, out, long), out, args.threads, env)
            per_step, cpu_per_step = (t_long - t_short) / (long - short), (c_long - c_short) / (long - short)
            runs[name]["per_step"].append(per_step)
            runs[name]["cpu_per_step"].append(cpu_per_step)
            runs[name]["rss"] += [rss_s, rss_l]
            runs[name]["walls"].append((t_short, t_long))
            print(f"  {case} round {r + 1} {name:17} {short} steps {t_short:7.1f} s, {long} steps {t_long:7.1f} s "
                  f"-> {per_step:.4f} s/step (CPU {cpu_per_step:.4f} s), peak RSS {max(rss_s, rss_l):.2f} GB  "
                  f"(load {load():.2f})", flush=True)
    return runs


def load() -> float:
    return os.getloadavg()[0]


def report(case: str, runs: dict[str, dict]) -> None:
    ref = runs["diffusers script"]
    ref_step, ref_cpu, ref_rss = (statistics.median(ref["per_step"]), statistics.median(ref["cpu_per_step"]),
                                  max(ref["rss"]))
    print(f"{case}: median of {len(ref['per_step'])} rounds (wall; CPU time, the steadier figure on a loaded "
          f"machine with --threads 1)")
    for name, r in runs.items():
        step, cpu, rss = statistics.median(r["per_step"]), statistics.median(r["cpu_per_step"]), max(r["rss"])
        print(f"  {name:17} wall {step:8.4f} s/step x{step / ref_step:.2f}   CPU {cpu:8.4f} s/step "
              f"x{cpu / ref_cpu:.2f}   peak RSS {rss:5.2f} GB x{rss / ref_rss:.2f}   (x: of the script's)", flush=True)


def header(args) -> None:
    import torch

    import diffusers
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {cpu}, {os.cpu_count()} CPUs  "
          f"python {platform.python_version()}  torch {torch.__version__} "
          f"({args.threads or torch.get_num_threads()} threads)  "
          f"diffusers {diffusers.__version__}  sdlora commit {commit}  load {load():.2f}", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.script.is_file():
        raise SystemExit(f"{args.script}: not found; take examples/text_to_image/train_text_to_image_lora.py "
                         "from the diffusers repository")
    header(args)
    results = {}
    for case in (CASES if args.case == "both" else [args.case]):
        results[case] = measure_case(args, case)
        report(case, results[case])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
