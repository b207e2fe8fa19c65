"""Regenerate the README's picture: the demo's base-vs-LoRA grid on the bundled sd-tiny.

    python scripts/readme_images.py [--work runs/readme-demo] [--threads 2]

Runs `sdlora demo` (the default recipe; only the grid is cut to four trigger prompts plus the two
without the trigger) into a work folder, then writes docs/images/demo-grid.png: the demo's own
grid.png with its blank margins cropped. Nothing is drawn by hand; a change to the demo or to the
grid shows up the next time this script runs. About 2-4 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "demo-grid.png"


def crop_margins(image: Image.Image, pad: int = 8) -> Image.Image:
    """The image cut to its content (anything not the corner pixel's colour), plus `pad` pixels."""
    rgb = image.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((0, 0)))
    box = ImageChops.difference(rgb, background).getbbox()
    if box is None:
        return rgb
    left, top, right, bottom = box
    return rgb.crop((max(left - pad, 0), max(top - pad, 0), min(right + pad, rgb.width), min(bottom + pad, rgb.height)))


def run_demo(work: Path, threads: int) -> Path:
    """Run the default demo into `work` and return its grid."""
    command = [sys.executable, "-m", "sdlora", "demo", "--output", str(work), "--grid-prompts", "4",
               "--threads", str(threads)]
    print("running:", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    grid = work / "grid.png"
    if not grid.is_file():
        sys.exit(f"readme_images: the demo wrote no {grid}")
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "readme-demo", help="the demo's output folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--reuse", action="store_true", help="use the grid already in --work, don't run the demo")
    args = parser.parse_args(argv)
    grid = args.work / "grid.png" if args.reuse else run_demo(args.work, args.threads)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    crop_margins(Image.open(grid)).save(OUT, optimize=True)
    print(f"wrote {OUT.relative_to(ROOT)} from {grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
