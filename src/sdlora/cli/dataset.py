"""`sdlora dataset inspect PATH...`: report what a dataset holds before training on it."""
from __future__ import annotations

import argparse

from sdlora.cli import argtypes as T


def _inspect(args: argparse.Namespace) -> int:
    from sdlora.data.inspect import run_inspect

    print(run_inspect(args.paths, config=args.config, resolution=args.resolution,
                      caption_extension=args.caption_extension, json_path=args.json, masks=args.masks,
                      mask_dir=args.mask_dir))
    return 0


def register(subparsers) -> None:
    group = subparsers.add_parser("dataset", help="Look at training data.")
    sub = group.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("inspect", help="Count usable and bad images, captions, buckets, duplicates; never fails on a bad file.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="Image folders (default: the sources of --config).")
    p.add_argument("--config", metavar="RUN.TOML", help="Inspect this run's [[data.sources]] with its [data] settings.")
    p.add_argument("--resolution", type=int, help="Training resolution for bucket assignment (default 512 or the config's).")
    p.add_argument("--caption-extension", metavar="EXT", help="Sidecar caption extension for PATHs (default .txt).")
    p.add_argument("--masks", choices=["off", "alpha", "folder"],
                   help="Report loss masks: from alpha channels or a mask folder (default: the config's data.masks).")
    p.add_argument("--mask-dir", metavar="DIR", type=T.input_dir,
                   help="Folder of <image stem>.png masks (implies --masks folder).")
    p.add_argument("--json", metavar="FILE", type=T.output_file, help="Also write the full report as JSON.")
    p.set_defaults(handler=_inspect)
