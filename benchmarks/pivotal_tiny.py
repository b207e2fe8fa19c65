"""Pivotal tuning on sd-tiny: does a new token learn the demo's striped style? Checker rates printed.

The demo's recipe (`sdlora demo`: 32 striped images, rank 8 LoCon, 300 steps of 8, lr 3e-3 cosine,
caption dropout 0.2) with the trigger phrase replaced by one new token, `<sks>`, trained as an
embedding (init word `style`, its own rate) together with the LoRA. Captions read "a red star in <sks>".
Then, on the demo's held-out seeds (40 colour x shape prompts, PNDM 20 steps, guidance 2.0):

    base                  sd-tiny without the file, prompts with "<sks>" (CLIP reads it as pieces)
    token only            the file attached at LoRA weight 0: only the learned embedding acts
    token + LoRA          the file at weight 1, prompts with the token
    LoRA, no token        the file at weight 1, prompts without the token (how much the LoRA leaks)

    python benchmarks/pivotal_tiny.py --out runs/pivotal-tiny [--steps 300] [--threads 1] [--set KEY=VALUE]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

TOKEN = "<sks>"
TRIGGER_TEMPLATE = "{a} {colour} {shape} in " + TOKEN
PLAIN_TEMPLATE = "{a} {colour} {shape}"


def main() -> None:
    from sdlora.formats import apply
    from sdlora.generate.job import load_model
    from sdlora.generate.loras import LoraSpec, attach_loras
    from sdlora.tiny.demo import DemoSettings, train_flags
    from sdlora.tiny.demo_data import DEMO_STYLE, write_style_dataset
    from sdlora.tiny.demo_eval import eval_prompts, eval_seeds, rates, style_metrics
    from sdlora.train.entry import run

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/pivotal-tiny"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--prompts", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="sets", action="append", default=[])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started, load = time.perf_counter(), os.getloadavg()[0]
    write_style_dataset(args.out / "data", 32, trigger=TOKEN)
    flags = {**train_flags(DemoSettings(steps=args.steps), args.out / "train"), "save.formats": ["kohya"]}
    sets = [f'embeddings.tokens=["{TOKEN}"]', "embeddings.init_word=style", *args.sets]
    t = time.perf_counter()
    result = run(None, sets, flags, [str(args.out / "data")])
    train_s = time.perf_counter() - t
    kohya = result.lora_files[0]
    settings = dict(expected_style=DEMO_STYLE, seeds=eval_seeds(args.prompts), guidance=2.0, steps=20)
    base = rates(load_model("tiny", "fp32"), eval_prompts(TRIGGER_TEMPLATE, args.prompts), desc="base", **settings)
    components = load_model("tiny", "fp32")
    adapter = attach_loras(components, [LoraSpec(kohya)])[0].adapter
    cells = style_metrics(components, adapter, trigger_template=TRIGGER_TEMPLATE, plain_template=PLAIN_TEMPLATE,
                          style=DEMO_STYLE, prompts=args.prompts, rounds=1, guidance=2.0, steps=20)
    apply.detach(components, adapter)
    table = {"base": base, "token only": cells["base"]["trigger"], "token + LoRA": cells["lora"]["trigger"],
             "LoRA, no token": cells["lora"]["no_trigger"]}
    out = {"cells": table, "train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - started, 1),
           "load_average_before": round(load, 2), "files": [str(f) for f in result.lora_files], "sets": sets}
    (args.out / "pivotal.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"| checker rate, {args.prompts} images per cell | style | colour | shape |")
    print("|---|---|---|---|")
    for name, r in table.items():
        print(f"| {name} | {100 * r['style']:.1f}% | {100 * r['colour']:.1f}% | {100 * r['shape']:.1f}% |")
    print(f"train {train_s:.0f} s, total {out['total_seconds']:.0f} s, load average before {load:.2f}")


if __name__ == "__main__":
    main()
