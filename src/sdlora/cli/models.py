"""`sdlora convert-checkpoint`: turn a .ckpt pickle into .safetensors without running code from it."""
from __future__ import annotations

from sdlora.cli import argtypes as T


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert-checkpoint",
        help="Convert a .ckpt to .safetensors safely (restricted unpickler; keys unchanged).",
        description="Convert a .ckpt (e.g. sd-v1-4.ckpt) to .safetensors. The pickle is read with a "
        "restricted unpickler, so a file that would run code is refused instead.",
    )
    p.add_argument("src", metavar="FILE.ckpt", type=T.input_file, help="Checkpoint to convert (.ckpt, .pt, .pth, .bin).")
    p.add_argument("output", metavar="OUT.safetensors", type=T.output_file, help="Output file.")
    p.add_argument("--overwrite", action="store_true", help="Replace OUT.safetensors if it exists.")
    p.set_defaults(handler=_convert)


def _convert(args) -> int:
    from sdlora.models import convert_checkpoint

    count = convert_checkpoint(args.src, args.output, overwrite=args.overwrite)
    print(f"wrote {count} tensors to {args.output}")
    return 0
