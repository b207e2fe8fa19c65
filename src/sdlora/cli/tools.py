"""`sdlora merge-loras | extract`: making LoRA files from other LoRA files or from two models
(sdlora.formats.merge_loras, sdlora.formats.extract). Torch loads inside the handlers."""
from __future__ import annotations

from sdlora.cli import argtypes as T
from sdlora.cli.file_args import (DTYPES, FORMATS, check_dynamic, dtype_arg, dynamic_args, overwrite_arg,
                                  print_ranks, torch_dtype)


def register(subparsers) -> None:
    p = subparsers.add_parser("merge-loras", help="Merge LoRA files into one (exact concatenation, or SVD).",
                              description="Write one LoRA whose change is the weighted sum of the inputs'. Without "
                              "--rank/--energy the ranks add and the result is exact; with them it is cut by SVD.")
    p.add_argument("loras", metavar="LORA[:w]", nargs="+", type=T.lora_arg, help="LoRA files with weights (default 1).")
    p.add_argument("-o", "--output", metavar="OUT", type=T.lora_output, required=True, help="Output .safetensors file.")
    p.add_argument("--rank", type=T.positive_int, default=None, help="SVD mode: the merged rank (a maximum with --energy).")
    p.add_argument("--energy", type=T.float_range(0.0, 1.0, low_open=True), default=None,
                   help="SVD mode: per module the smallest rank keeping this fraction of the energy (0 < E <= 1).")
    p.add_argument("--to", choices=FORMATS, default=None, help="Output format (default: the first file's).")
    dtype_arg(p, "default: fp32 when exact, else the first file's")
    overwrite_arg(p, "OUT")
    p.set_defaults(handler=_merge_loras)

    p = subparsers.add_parser("extract", help="Extract a LoRA from a fine-tuned model and its base (SVD of the change).",
                              description="Per module, the best low-rank fit of W_tuned - W_base: UNet transformer "
                              "layers, the text encoder (left out when unchanged), and with --conv the ResNet convs.")
    p.add_argument("base", metavar="BASE", help="Base model: `tiny`, a diffusers folder, a .safetensors file, or a hub id.")
    p.add_argument("tuned", metavar="TUNED", help="Fine-tuned model of the same architecture (any of those forms).")
    p.add_argument("output", metavar="OUT", type=T.lora_output, help="Output LoRA .safetensors file.")
    p.add_argument("--rank", type=T.positive_int, default=None, help="Rank (default 4; with --dynamic a maximum).")
    p.add_argument("--conv-rank", type=T.positive_int, default=None, help="Rank of 3x3 convs (default: --rank).")
    p.add_argument("--conv", action="store_true", help="Also extract the ResNet convs (LoCon).")
    dynamic_args(p, "--rank")
    p.add_argument("--to", choices=FORMATS, default="kohya", help="Output format (default kohya).")
    p.add_argument("--dtype", choices=DTYPES, default="fp16", help="Tensor dtype to write (default fp16).")
    overwrite_arg(p, "OUT")
    p.set_defaults(handler=_extract)


def _merge_loras(args) -> int:
    from sdlora.formats.merge_loras import merge_lora_files

    T.refuse_overwrite(args.output, args.overwrite)
    rule = None if args.energy is None else "energy"
    _, report = merge_lora_files([(s.path, s.weight) for s in args.loras], args.output, rank=args.rank, rule=rule,
                                 threshold=args.energy, fmt=args.to, dtype=torch_dtype(args.dtype))
    names = ", ".join(f"{s.path} x{s.weight:g}" for s in args.loras)
    print(f"merged {names} ({'exact concatenation' if report is None else 'SVD'})")
    if report is not None:
        print_ranks(report, verbose=False)
    print(f"wrote {args.output}")
    return 0


def _extract(args) -> int:
    from sdlora.formats.extract import extract_lora_file

    check_dynamic(args)
    T.refuse_overwrite(args.output, args.overwrite)
    rank = args.rank if args.rank is not None or args.dynamic else 4
    report = extract_lora_file(args.base, args.tuned, args.output, fmt=args.to, dtype=torch_dtype(args.dtype),
                               rank=rank, conv_rank=args.conv_rank, conv=args.conv, rule=args.dynamic,
                               threshold=args.threshold)
    print(f"extracted {len(report.modules)} modules ({len(report.unchanged)} unchanged left out)"
          + ("; the text encoder is unchanged and left out" if report.text_encoder_skipped else ""))
    print_ranks(report, verbose=True)
    print(f"largest relative error {report.max_error:.3g}")
    print(f"wrote {args.output}")
    return 0
