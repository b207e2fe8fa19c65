"""`sdlora bake-block-weights`: fold LoRA block weights (A1111's LBW presets or vectors) into a file.

Only light modules are imported here; torch and the format code load inside the handler."""
from __future__ import annotations

from sdlora.cli import argtypes as T

FORMATS = ("kohya", "diffusers", "native")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bake-block-weights", help="Fold LoRA block weights (e.g. OUTALL) into a LoRA file.",
        description="Write IN with each module scaled by its SD 1.x block's weight (A1111's LoRA Block Weight "
                    "layout: BASE = text encoder, IN00..IN11, M00, OUT00..OUT11); modules at weight 0 are "
                    "dropped. The result at weight w gives the images IN gives with --lora IN:w:lbw=...")
    p.add_argument("src", metavar="IN", type=T.input_file, help="LoRA file (any format sdlora reads).")
    p.add_argument("output", metavar="OUT", type=T.lora_output, help="Output .safetensors file.")
    p.add_argument("--lbw", required=True, metavar="PRESET|W,W,...",
                   help="A preset (NONE, ALL, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL, ALL0.5) or 17 or 26 "
                        "comma-separated block weights.")
    p.add_argument("--to", choices=FORMATS, default=None, help="Output format (default: as the input).")
    p.add_argument("--overwrite", action="store_true", help="Replace OUT if it exists.")
    p.set_defaults(handler=_bake)


def _bake(args) -> int:
    from sdlora.generate.blocks import bake_file, parse_lbw

    parse_lbw(args.lbw, "--lbw")  # a bad vector fails before the file is read
    T.refuse_overwrite(args.output, args.overwrite)
    report = bake_file(args.src, args.output, args.lbw, args.to)
    blocks = ", ".join(f"{b} {n}" for b, n in report["blocks"].items())
    print(f"baked {report['lbw']} into {args.src}: kept {report['kept']} of {report['modules']} modules "
          f"({blocks}), dropped {report['dropped']}; wrote {args.output} ({report['format']})")
    return 0
