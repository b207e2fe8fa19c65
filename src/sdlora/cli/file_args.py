"""Arguments and output that the LoRA-file commands share (`sdlora.cli.lora_files`, `sdlora.cli.tools`).

Only light modules are imported here; torch loads when a handler asks for a dtype."""
from __future__ import annotations

FORMATS = ("kohya", "diffusers", "native")  # sdlora.formats.FORMATS (a test keeps the two equal)
DTYPES = ("bf16", "fp16", "fp32")


def torch_dtype(name: str | None):
    from sdlora.dtypes import parse_dtype  # imports torch: only when a handler runs

    return parse_dtype(name, "--dtype") if name else None


def dtype_arg(p, default_help: str) -> None:
    p.add_argument("--dtype", choices=DTYPES, default=None, help=f"Tensor dtype to write ({default_help}).")


def overwrite_arg(p, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"Replace {what} if it exists.")


RULES = ("sv_ratio", "sv_fro", "sv_cumulative")  # sdlora.formats.ranks.DYNAMIC


def dynamic_args(p, what: str) -> None:
    """--dynamic / --threshold: kohya's per-module rank rules (sdlora.formats.ranks)."""
    p.add_argument("--dynamic", choices=RULES, default=None,
                   help=f"Pick each module's rank from its singular values ({what} is then a maximum): sv_ratio "
                   "keeps sigma >= sigma_max/X, sv_fro reaches Frobenius-norm fraction X, sv_cumulative reaches "
                   "fraction X of the summed singular values.")
    p.add_argument("--threshold", type=float, default=None, help="X for --dynamic.")


def check_dynamic(args) -> None:
    from sdlora.errors import SdloraError

    if (args.dynamic is None) != (args.threshold is None):
        raise SdloraError("--dynamic and --threshold go together; give both or neither")


def print_ranks(report, verbose: bool) -> None:
    """Each module's new rank and retained energy (verbose), then the totals and the file size."""
    if verbose:
        for m in report.modules:
            print(f"  {m.name}: rank {m.old_rank} -> {m.new_rank}, energy {m.energy:.2%}")
    print(f"retained energy {report.energy:.2%} overall, {report.min_energy:.2%} in the worst module"
          + (f"; file size {report.size / 2**20:.2f} MiB" if report.size is not None else ""))
