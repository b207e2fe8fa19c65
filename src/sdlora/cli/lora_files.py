"""`sdlora convert | info | resize | merge-into-model`: working with LoRA files (sdlora.formats)."""
from __future__ import annotations

import json

from sdlora.dtypes import SHORT_DTYPES as DTYPES
from sdlora.formats import FORMATS, convert_lora_file
from sdlora.formats.info import describe, render
from sdlora.formats.merge_model import merge_into_model
from sdlora.formats.resize import resize_lora_file
from sdlora.generate.loras import parse_lora_arg


def _dtype_arg(p, default_help: str) -> None:
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help=f"Tensor dtype to write ({default_help}).")


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="Convert a LoRA file between kohya, diffusers and native formats.",
                              description="Read a LoRA in any supported format and write it as --to.")
    p.add_argument("src", metavar="IN", help="LoRA file (.safetensors: kohya/A1111/ComfyUI, diffusers/PEFT, sdlora).")
    p.add_argument("dst", metavar="OUT", help="Output .safetensors file.")
    p.add_argument("--to", required=True, choices=FORMATS, help="Output format.")
    _dtype_arg(p, "default: as the input")
    p.set_defaults(handler=_convert)

    p = subparsers.add_parser("info", help="Show a LoRA file's format, base, modules, ranks, alphas, size, metadata.")
    p.add_argument("file", metavar="FILE", help="LoRA file.")
    p.add_argument("--json", action="store_true", help="Print the summary as JSON (metadata values in full).")
    p.set_defaults(handler=_info)

    p = subparsers.add_parser("resize", help="Re-rank a LoRA by SVD, reporting the retained energy.",
                              description="Cut every module to its best rank-r approximation (SVD). Modules "
                              "already at rank <= r are kept. alpha/rank is preserved.")
    p.add_argument("src", metavar="LORA", help="LoRA file.")
    p.add_argument("--rank", type=int, required=True, help="New rank (maximum per module).")
    p.add_argument("--conv-rank", type=int, default=None, help="New rank for 3x3 conv modules (default: --rank).")
    p.add_argument("dst", metavar="OUT", help="Output .safetensors file.")
    p.add_argument("--to", choices=FORMATS, default=None, help="Output format (default: as the input).")
    _dtype_arg(p, "default: as the input")
    p.set_defaults(handler=_resize)

    p = subparsers.add_parser("merge-into-model", help="Fold LoRA files into a full SD 1.x model and save it.",
                              description="Write BASE with every LORA folded in: OUT ending in .safetensors is "
                              "one file in the original LDM layout (A1111/ComfyUI), anything else a diffusers folder.")
    p.add_argument("base", metavar="BASE", help="Base model: hub id, diffusers folder, .safetensors/.ckpt, or 'tiny'.")
    p.add_argument("loras", metavar="LORA[:w]", nargs="+", help="LoRA files, each with an optional weight (default 1).")
    p.add_argument("out", metavar="OUT", help="Output: FILE.safetensors (LDM layout) or a folder (diffusers layout).")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="Save the model in this dtype (default fp32).")
    p.add_argument("--overwrite", action="store_true", help="Replace OUT if it exists.")
    p.set_defaults(handler=_merge)


def _convert(args) -> int:
    src_fmt, fmt = convert_lora_file(args.src, args.dst, args.to, dtype=DTYPES.get(args.dtype))
    print(f"converted {args.src} ({src_fmt}) -> {args.dst} ({fmt})")
    return 0


def _info(args) -> int:
    summary = describe(args.file)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


def _resize(args) -> int:
    report = resize_lora_file(args.src, args.dst, args.rank, conv_rank=args.conv_rank, fmt=args.to,
                              dtype=DTYPES.get(args.dtype))
    cut = [m for m in report.modules if m.new_rank < m.old_rank]
    print(f"resized {len(cut)} of {len(report.modules)} modules to rank <= {args.rank}; "
          f"retained energy {report.energy:.2%} overall, {report.min_energy:.2%} in the worst module")
    print(f"wrote {args.dst}")
    return 0


def _merge(args) -> int:
    specs = [parse_lora_arg(text) for text in args.loras]
    report = merge_into_model(args.base, [(s.path, s.weight) for s in specs], args.out,
                              dtype=args.dtype, overwrite=args.overwrite)
    loras = ", ".join(f"{item['file']} x{item['weight']:g}" for item in report["loras"])
    print(f"merged {loras} into {report['layers']} layers of {args.base}; wrote {args.out} ({report['layout']} layout)")
    return 0
