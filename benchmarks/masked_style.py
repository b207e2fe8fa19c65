"""Masked loss on sd-tiny: the same striped style set trained twice, once with masks that cover the
striped shapes (the stripes lie inside the masked region) and once with their complement (the stripes
lie only outside it). The demo's checker reads the style of images generated with the trigger.

    python benchmarks/masked_style.py [--output runs/masked-style] [--steps 300] [--threads 2]

Expected: "inside" learns the stripes like the unmasked demo; "outside" never sees a striped pixel in
its loss, so its images stay plain like the base model's. The demo's recipe (demo.train_flags) is used
unchanged apart from the mask settings; rates are over the demo's 40 held-out trigger prompts.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def write_masks(scenes, folder: Path, inside: bool) -> None:
    """One 64x64 grey mask per image: the shape's silhouette grown by 1 px (outline and anti-aliased
    edge included), or its complement."""
    from sdlora.tiny.demo_data import FILE_STEM
    from sdlora.tiny.render import shape_alpha

    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        silhouette = Image.fromarray(np.rint(shape_alpha(scene.shape, scene.cx, scene.cy, scene.radius) * 255)
                                     .astype(np.uint8), "L").filter(ImageFilter.MaxFilter(3))
        grey = np.where(np.asarray(silhouette) > 0, 255, 0).astype(np.uint8)
        Image.fromarray(grey if inside else 255 - grey, "L").save(folder / f"{FILE_STEM.format(index=i)}.png")


def train(out: Path, data: Path, mask_dir: Path | None, steps: int):
    from sdlora.tiny.demo import DemoSettings, train_flags
    from sdlora.train.entry import run

    flags = train_flags(DemoSettings(steps=steps), out)
    if mask_dir is not None:
        flags.update({"data.masks": "folder", "data.mask_dir": str(mask_dir)})
    result = run(None, [], flags, [str(data)])
    return result.lora_files[0]


def style_rate(lora_file: Path | None, prompts: int) -> dict:
    from sdlora.generate.job import load_model
    from sdlora.generate.loras import LoraSpec, attach_loras
    from sdlora.tiny.demo import SAMPLE_STEPS, SD_TINY_GUIDANCE, TRIGGER_TEMPLATE
    from sdlora.tiny.demo_data import DEMO_STYLE
    from sdlora.tiny.demo_eval import eval_prompts, eval_seeds, rates

    components = load_model("tiny", "fp32")
    if lora_file is not None:
        attach_loras(components, [LoraSpec(Path(lora_file))])
    return rates(components, eval_prompts(TRIGGER_TEMPLATE, prompts), expected_style=DEMO_STYLE,
                 seeds=eval_seeds(prompts), guidance=SD_TINY_GUIDANCE, steps=SAMPLE_STEPS)


def main() -> None:
    import torch

    from sdlora.tiny.demo_data import write_style_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("runs/masked-style"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out, results = args.output, {}
    scenes = write_style_dataset(out / "data", args.images)
    write_masks(scenes, out / "masks-inside", inside=True)
    write_masks(scenes, out / "masks-outside", inside=False)
    results["base"] = style_rate(None, args.prompts)
    for name in ("inside", "outside"):
        clock = time.perf_counter()
        lora = train(out / f"train-{name}", out / "data", out / f"masks-{name}", args.steps)
        seconds = time.perf_counter() - clock
        results[name] = {**style_rate(lora, args.prompts), "train_seconds": round(seconds, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| model | style (striped) | colour | shape | n | train s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['style']:.3f} | {r['colour']:.3f} | {r['shape']:.3f} | {r['n']} | "
              f"{r.get('train_seconds', '-')} |")


if __name__ == "__main__":
    main()
