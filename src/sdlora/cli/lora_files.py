"""`sdlora convert | info | resize | merge-into-model`: working with LoRA files (sdlora.formats).

Only light modules are imported here; torch and the format code load inside the handlers."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdlora.cli import argtypes as T
from sdlora.cli.file_args import (DTYPES, FORMATS, check_dynamic, dtype_arg, dynamic_args, overwrite_arg,
                                  print_ranks, torch_dtype)
from sdlora.errors import SdloraError


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="Convert a LoRA file between kohya, diffusers and native formats.",
                              description="Read a LoRA in any supported format and write it as --to.")
    p.add_argument("src", metavar="IN", type=T.input_file,
                   help="LoRA file (.safetensors: kohya/A1111/ComfyUI, diffusers/PEFT, sdlora).")
    p.add_argument("output", metavar="OUT", type=T.lora_output, help="Output .safetensors file.")
    p.add_argument("--to", required=True, choices=FORMATS, help="Output format.")
    dtype_arg(p, "default: as the input")
    overwrite_arg(p, "OUT")
    p.set_defaults(handler=_convert)

    p = subparsers.add_parser("info", help="Show a LoRA file's format, base, modules, ranks, alphas, size, metadata.")
    p.add_argument("file", metavar="FILE", type=T.input_file, help="LoRA file.")
    p.add_argument("--json", action="store_true", help="Print the summary as JSON (metadata values in full).")
    p.set_defaults(handler=_info)

    p = subparsers.add_parser("resize", help="Re-rank a LoRA by SVD, reporting the retained energy.",
                              description="Cut every module to its best rank-r approximation (SVD). Modules "
                              "already at rank <= r are kept. alpha/rank is preserved.")
    p.add_argument("src", metavar="LORA", type=T.input_file, help="LoRA file.")
    p.add_argument("--rank", type=T.positive_int, default=None,
                   help="New rank (maximum per module; with --dynamic optional, default each module's rank).")
    p.add_argument("--conv-rank", type=T.positive_int, default=None, help="New rank for 3x3 conv modules (default: --rank).")
    p.add_argument("output", metavar="OUT", type=T.lora_output, help="Output .safetensors file.")
    p.add_argument("--to", choices=FORMATS, default=None, help="Output format (default: as the input).")
    dynamic_args(p, "--rank")
    dtype_arg(p, "default: as the input")
    overwrite_arg(p, "OUT")
    p.set_defaults(handler=_resize)

    p = subparsers.add_parser("merge-into-model", help="Fold LoRA files into a full SD 1.x model and save it.",
                              description="Write BASE with every LORA folded in: OUT ending in .safetensors is "
                              "one file in the original LDM layout (A1111/ComfyUI), anything else a diffusers folder.")
    p.add_argument("base", metavar="BASE", help="Base model: hub id, diffusers folder, .safetensors/.ckpt, or `tiny`.")
    p.add_argument("loras", metavar="LORA[:w]", nargs="+", type=T.lora_arg, help="LoRA files, each with an optional weight (default 1).")
    p.add_argument("output", metavar="OUT", type=model_output,
                   help="Output: FILE.safetensors (LDM layout) or a folder (diffusers layout).")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="Save the model in this dtype (default fp32).")
    overwrite_arg(p, "OUT")
    p.set_defaults(handler=_merge)


def _check_model_output(path: Path) -> None:
    """merge-into-model's OUT: a .safetensors file, or a folder that is not the working folder or above it."""
    if path.suffix.lower() == ".safetensors":
        return T.check_output_file(path)
    T.check_output_dir(path)
    if path.exists() and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise argparse.ArgumentTypeError(f"{path}: is the working folder or one above it; name a new folder")


model_output = T.PathType("output folder", _check_model_output)


def _claim_model_output(out: Path, overwrite: bool) -> None:
    """Only an empty folder or a diffusers model folder may be replaced (never a folder of other files)."""
    T.refuse_overwrite(out, overwrite)
    if out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise SdloraError(f"{out}: holds files that are not a diffusers model; --overwrite only replaces a model "
                          "folder, so name a new folder")


def _convert(args) -> int:
    from sdlora.formats import convert_lora_file

    T.refuse_overwrite(args.output, args.overwrite)
    src_fmt, fmt = convert_lora_file(args.src, args.output, args.to, dtype=torch_dtype(args.dtype))
    print(f"converted {args.src} ({src_fmt}) -> {args.output} ({fmt})")
    return 0


def _info(args) -> int:
    from sdlora.formats.info import describe, render

    summary = describe(args.file)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


def _resize(args) -> int:
    from sdlora.formats.resize import resize_lora_file


    check_dynamic(args)
    if args.rank is None and args.dynamic is None:
        raise SdloraError("resize: give --rank, or --dynamic with --threshold")
    T.refuse_overwrite(args.output, args.overwrite)
    report = resize_lora_file(args.src, args.output, args.rank, conv_rank=args.conv_rank, fmt=args.to,
                              dtype=torch_dtype(args.dtype), dynamic=args.dynamic, threshold=args.threshold)
    cut = [m for m in report.modules if m.new_rank < m.old_rank]
    how = f"by {args.dynamic} {args.threshold:g}" if args.dynamic else f"to rank <= {args.rank}"
    print(f"resized {len(cut)} of {len(report.modules)} modules {how}")
    print_ranks(report, verbose=args.dynamic is not None)
    print(f"wrote {args.output}")
    return 0


def _merge(args) -> int:
    from sdlora.formats.merge_model import merge_into_model

    if any(s.lbw is not None for s in args.loras):
        raise SdloraError("merge-into-model takes no lbw=: fold block weights into the file first with "
                          "`sdlora bake-block-weights`")
    _claim_model_output(args.output, args.overwrite)
    report = merge_into_model(args.base, [(s.path, s.weight) for s in args.loras], args.output,
                              dtype=args.dtype, overwrite=args.overwrite)
    loras = ", ".join(f"{item['file']} x{item['weight']:g}" for item in report["loras"])
    print(f"merged {loras} into {report['layers']} layers of {args.base}; wrote {args.output} ({report['layout']} layout)")
    return 0
