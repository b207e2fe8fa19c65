"""Steady-state seconds per training step and peak memory: sdlora's real step vs a diffusers-style step.

    python benchmarks/train_step.py                      # CPU: cases (a) tiny and (b) sd14, with reference
    python benchmarks/train_step.py --case tiny --no-reference
    python benchmarks/train_step.py --device cuda --resolution 512 --batch-size 8 \\
        --mixed-precision bf16 --gradient-checkpointing   # GPU: it/s, peak VRAM, MFU

Cases: (a) `tiny`: the tiny SD-architecture model (sdlora.models.skeleton) at 64 px, batch 4, rank 4,
attention preset; (b) `sd14`: full-size SD 1.4 with random weights at 256 px, batch 1, rank 4.

`sdlora` times sdlora.train.step.train_step, the function the training loop calls, set up by the
loop's own helpers: latents and text embeddings cached with sdlora.data's encoders, VAE and text
encoder then released, LoRA injected by sdlora.train.adapters.attach_lora, optimizer/schedule from
sdlora.train.optim, Accelerate for autocast and the optimizer step.
`reference` re-implements one step of diffusers' examples/text_to_image/train_text_to_image_lora.py
(PEFT LoRA on to_q/k/v/out, VAE encode and text encoder in every step, AdamW, clip, scheduler).
Each (case, implementation) runs in its own process so that peak RSS is its own. The first
--warmup steps are excluded; the figure is the median of the next --steps.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CASES = {"tiny": {"resolution": 64, "batch_size": 4}, "sd14": {"resolution": 256, "batch_size": 1}}
TFLOP_PER_512PX_SAMPLE = 1.79  # UNet fwd+bwd with attention LoRA, one 512x512 sample (docs/DESIGN.md)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=[*CASES, "both"], default=None,
                   help="tiny, sd14 or both (default: both on CPU, sd14 on CUDA)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--resolution", type=int, help="default: 64 (tiny) / 256 (sd14)")
    p.add_argument("--batch-size", type=int, help="default: 4 (tiny) / 1 (sd14)")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--preset", default="unet-attn")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "fp16", "bf16"],
                   help="sdlora's train.mixed_precision (auto: bf16 on GPUs that have it, fp32 on the CPU); "
                        "the reference runs `auto` as fp32, the diffusers script's default")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--channels-last", action="store_true", help="sdlora's train.channels_last")
    p.add_argument("--low-memory", choices=["auto", "on", "off"], default="auto", help="sdlora's train.low_memory")
    p.add_argument("--conv-backend", choices=["auto", "onednn", "native"], default="auto",
                   help="sdlora's train.conv_backend")
    p.add_argument("--compile", action="store_true", help="sdlora's train.compile (raise --warmup: compiling)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 tiny, 5 sd14 on CPU, 20 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="excluded first steps (default: 5 tiny, 2 sd14, 5 CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for MFU (H100/H200 bf16 dense: 989)")
    p.add_argument("--reference", dest="reference", action="store_true", default=None,
                   help="also time the diffusers-script step (default on CPU)")
    p.add_argument("--no-reference", dest="reference", action="store_false")
    p.add_argument("--impl", choices=["sdlora", "reference"], help=argparse.SUPPRESS)  # child mode
    p.add_argument("--json", action="store_true", help="print one JSON line per measurement")
    p.add_argument("--profile", action="store_true",
                   help="after the timed steps, profile one more (torch.profiler, CPU): top operations by self "
                        "time, and the share of the LoRA's own rank-sized matmuls")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- models and inputs

def build_components(case: str):
    from sdlora.models import SDComponents, load_tokenizer
    from sdlora.models import skeleton as sk

    if case == "tiny":
        return sk.tiny_components(0)
    return SDComponents(load_tokenizer(), sk.sd14_text_encoder(0), sk.sd14_vae(1), sk.sd14_unet(2),
                        sk.sd14_scheduler(), "skeleton:sd14")


def inputs(components, batch: int, resolution: int, device):
    """Random pixels in [-1, 1] (B, 3, H, W) and caption ids (B, 77)."""
    import torch

    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1
    captions = [f"a photo of sks object number {i}" for i in range(batch)]
    ids = components.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                               return_tensors="pt").input_ids
    return pixels.to(device), ids.to(device), captions


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def profile_step(step_fn, index: int, rank: int, top: int = 12) -> None:
    """One more step under torch.profiler: PROFILE lines with the top operations by self CPU time and
    the time of matmuls that have a `rank`-sized dimension (the LoRA's down/up and their gradients)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step_fn(index)
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    for e in rows[:top]:
        print(f"PROFILE {e.key:60.60} {e.self_cpu_time_total / 1e6:8.3f} s {100 * e.self_cpu_time_total / total:5.1f}%"
              f" {e.count:6d} calls", flush=True)
    lora = [e for e in prof.events() if e.name in ("aten::mm", "aten::addmm", "aten::bmm")
            and any(rank in shape for shape in e.input_shapes if shape)]
    spent = sum(e.self_cpu_time_total for e in lora)
    print(f"PROFILE rank-{rank} (LoRA) matmuls: {len(lora)} calls {spent / 1e6:.3f} s "
          f"({100 * spent / total:.1f}% of {total / 1e6:.3f} s)", flush=True)


def time_steps(step_fn, device, warmup: int, steps: int) -> list[tuple[float, float]]:
    """(wall seconds, process CPU seconds) per step after the warmup. On a shared machine the CPU
    time (with --threads 1) is the steadier figure: waiting for a core is not counted."""
    times = []
    for i in range(warmup + steps):
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        step_fn(i)
        sync(device)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return times[warmup:]


# ----------------------------------------------------------------------------- sdlora

def run_sdlora(args, case: str):
    import torch

    from sdlora.config import RunConfig
    from sdlora.data.cache import encode_latents
    from sdlora.data.text_cache import encode_captions
    from sdlora.train.adapters import lora_parameters
    from sdlora.train import lowmem
    from sdlora.train.build import make_trainable, place_models, step_context
    from sdlora.train.optim import build_optimizer, build_scheduler, param_groups
    from sdlora.train.setup import DTYPES, make_accelerator
    from sdlora.train.step import train_step

    cfg = RunConfig()
    cfg.lora.rank, cfg.lora.unet_preset = args.rank, args.preset
    cfg.train.batch_size, cfg.train.mixed_precision = args.batch_size, args.mixed_precision
    cfg.train.gradient_checkpointing = args.gradient_checkpointing
    cfg.train.channels_last, cfg.train.compile, cfg.train.seed = args.channels_last, args.compile, 0
    cfg.train.low_memory, cfg.train.conv_backend = args.low_memory, args.conv_backend
    acc = make_accelerator(cfg)
    device, dtype = acc.device, DTYPES[acc.mixed_precision]
    components = build_components(case).to(dtype=dtype)
    for module in components.modules().values():
        module.requires_grad_(False)
    components.vae.to(device).eval()
    components.text_encoder.to(device).eval()
    pixels, _, captions = inputs(components, args.batch_size, args.resolution, device)
    with torch.no_grad():  # what sdlora.data's caches hold: sampled, scaled latents and (77, D) embeddings
        latents = encode_latents(components.vae, pixels, torch.Generator(device).manual_seed(0)).float()
        text = encode_captions(components.tokenizer, components.text_encoder, captions)
    hidden = torch.stack([text[c] for c in captions])
    place_models(components, device, latents_cached=True, text_cached=True, keep_for_sampling=False)
    models, _ = make_trainable(cfg, components)  # the loop's own: LoRA, SDPA, checkpointing, channels-last, compile
    optimizer = build_optimizer(param_groups(models, cfg.train), cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, 10_000)
    unet, optimizer = acc.prepare(components.unet, optimizer)
    unet.train()
    ctx = step_context(cfg, acc, components, {"unet": unet}, lora_parameters(models))  # the loop's own choices
    if ctx.memory.on:
        lowmem.apply(components.unet, checkpoint_everything=cfg.train.gradient_checkpointing)
    print(f"# convolutions {ctx.convs.name} ({ctx.convs.reason}); memory {ctx.memory.name} ({ctx.memory.reason})")
    batch = {"latents": latents.cpu(), "encoder_hidden_states": hidden.cpu(),
             "is_class": torch.zeros(args.batch_size, dtype=torch.bool)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    def step(i):
        train_step(acc, ctx, [batch], optimizer, scheduler, i)

    times = time_steps(step, device, args.warmup, args.steps)
    if args.profile:
        profile_step(step, args.warmup + args.steps, args.rank)
    return times, acc.mixed_precision


# ----------------------------------------------------------------------------- reference

def run_reference(args, case: str):
    """One step of diffusers' train_text_to_image_lora.py, re-implemented (same operations, same order)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig

    precision = "no" if args.mixed_precision == "auto" else args.mixed_precision
    acc = Accelerator(mixed_precision=precision, cpu=args.device == "cpu")
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    c = build_components(case)
    unet, vae, text_encoder = c.unet, c.vae, c.text_encoder
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(c.scheduler.config)
    unet.to(acc.device, dtype=dtype)
    vae.to(acc.device, dtype=dtype)
    text_encoder.to(acc.device, dtype=dtype)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # the script's cast_training_params for fp16
        p.data = p.data.float()
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=10_000)
    unet, optimizer, lr_scheduler = acc.prepare(unet, optimizer, lr_scheduler)
    unet.train()
    pixels, ids, _ = inputs(c, args.batch_size, args.resolution, acc.device)

    def step(_):
        with acc.accumulate(unet):
            latents = vae.encode(pixels.to(dtype=dtype)).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      device=latents.device).long()
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(ids, return_dict=False)[0]
            pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()

    if acc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(step, acc.device, args.warmup, args.steps)
    if args.profile:
        profile_step(step, args.warmup + args.steps, args.rank)
    return times, precision


# ----------------------------------------------------------------------------- reporting

def child(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    case = args.case
    measured, precision = (run_sdlora if args.impl == "sdlora" else run_reference)(args, case)
    times = [wall for wall, _ in measured]
    median = statistics.median(times)
    out = {"case": case, "impl": args.impl, "device": args.device, "resolution": args.resolution,
           "batch_size": args.batch_size, "rank": args.rank, "mixed_precision": precision,
           "gradient_checkpointing": args.gradient_checkpointing, "channels_last": args.channels_last,
           "compile": args.compile, "threads": torch.get_num_threads(),
           "steps": len(times), "s_per_step": median, "it_per_s": 1.0 / median,
           "min_s": min(times), "max_s": max(times), "cpu_s_per_step": statistics.median(c for _, c in measured),
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    if args.device.startswith("cuda"):
        tflop = TFLOP_PER_512PX_SAMPLE * (args.resolution / 512) ** 2 * args.batch_size
        out.update(peak_vram_gb=torch.cuda.max_memory_allocated() / 2**30, gpu=torch.cuda.get_device_name(),
                   tflops=tflop / median, mfu=tflop / median / args.peak_tflops, torch=torch.__version__)
    print("RESULT " + json.dumps(out), flush=True)


def measure(args, case: str, impl: str, precision: str) -> dict:
    res = args.resolution or CASES[case]["resolution"]
    bs = args.batch_size or CASES[case]["batch_size"]
    cuda = args.device.startswith("cuda")
    steps = args.steps or (20 if cuda else 30 if case == "tiny" else 5)
    warmup = args.warmup if args.warmup is not None else (5 if cuda or case == "tiny" else 2)
    cmd = [sys.executable, os.path.abspath(__file__), "--impl", impl, "--case", case, "--device", args.device,
           "--resolution", str(res), "--batch-size", str(bs), "--rank", str(args.rank), "--preset", args.preset,
           "--mixed-precision", precision, "--steps", str(steps), "--warmup", str(warmup),
           "--peak-tflops", str(args.peak_tflops)]
    cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    cmd += [f"--{flag}" for flag in ("channels-last", "compile") if getattr(args, flag.replace("-", "_"))]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += ["--profile"] if args.profile else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{impl} on {case} failed:\n{proc.stderr[-4000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("PROFILE "):
            print(f"{case} {impl}: {line[len('PROFILE '):]}", flush=True)
    return json.loads(lines[-1][len("RESULT "):])


def describe(r: dict) -> str:
    text = (f"{r['case']:5} {r['impl']:9} {r['resolution']:4d}px bs{r['batch_size']:<2d} {r['mixed_precision']:4} "
            f"{r['s_per_step']:8.4f} s/step ({r['it_per_s']:6.2f} it/s, CPU time {r['cpu_s_per_step']:.4f} s, "
            f"{r['threads']} threads)  peak RSS {r['peak_rss_gb']:5.2f} GB")
    options = [name for name in ("gradient_checkpointing", "channels_last", "compile") if r.get(name)]
    text += f"  [{', '.join(options)}]" if options else ""
    if "peak_vram_gb" in r:
        text += f"  peak VRAM {r['peak_vram_gb']:.2f} GiB  {r['tflops']:.1f} TFLOP/s  MFU {100 * r['mfu']:.1f}%"
    return text


def resolved(precision: str) -> str:
    from sdlora.train.setup import resolve_precision

    return resolve_precision(precision, "cpu")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.impl:
        return child(args)
    cuda = args.device.startswith("cuda")
    cases = list(CASES) if (args.case or ("sd14" if cuda else "both")) == "both" else [args.case or "sd14"]
    reference = args.reference if args.reference is not None else not cuda
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {platform.processor() or platform.machine()}  "
          f"{os.cpu_count()} CPUs  python {platform.python_version()}")
    runs = [("sdlora", args.mixed_precision)]
    if not cuda and args.mixed_precision == "auto" and resolved("auto") != "no":
        runs.append(("sdlora", "no"))  # also the like-for-like fp32 figure
    if reference:
        runs.append(("reference", args.mixed_precision))
    for case in cases:
        results = [measure(args, case, impl, precision) for impl, precision in runs]
        for r in results:
            print(json.dumps(r) if args.json else describe(r), flush=True)
        ref = results[-1] if reference else None
        for r in results[:-1] if reference else []:
            print(f"{case:5} sdlora {r['mixed_precision']} vs reference {ref['mixed_precision']}: "
                  f"{ref['s_per_step'] / r['s_per_step']:.2f}x faster (CPU time "
                  f"{ref['cpu_s_per_step'] / r['cpu_s_per_step']:.2f}x), peak RSS {r['peak_rss_gb']:.2f} vs "
                  f"{ref['peak_rss_gb']:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
