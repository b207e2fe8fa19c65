"""The one table of dtype names: every flag, config value and file header that names a dtype reads it here.

    fp32 / float32 / no   -> torch.float32   ("no" is accelerate's "no mixed precision")
    fp16 / float16 / half -> torch.float16
    bf16 / bfloat16       -> torch.bfloat16
"""
from __future__ import annotations

import torch

from sdlora.errors import SdloraError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32, "no": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}  # fmt: skip
SHORT_NAMES: tuple[str, ...] = ("fp32", "fp16", "bf16")
SHORT_DTYPES: dict[str, torch.dtype] = {name: DTYPES[name] for name in SHORT_NAMES}


def parse_dtype(value: torch.dtype | str | None, what: str = "dtype", default: torch.dtype = torch.float32) -> torch.dtype:
    """A torch float dtype from a name in DTYPES (any case) or a torch float dtype; None -> `default`.

    SdloraError naming `what` (a flag or config key) for anything else."""
    if value is None:
        return default
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return value
    if isinstance(value, str) and value.strip().lower() in DTYPES:
        return DTYPES[value.strip().lower()]
    raise SdloraError(f"{what} {value!r}: expected one of {', '.join(SHORT_NAMES)} "
                      f"(also accepted: {', '.join(n for n in DTYPES if n not in SHORT_NAMES)})")


def dtype_name(dtype: torch.dtype) -> str:
    """The short name (fp32, fp16, bf16) of a dtype in the table."""
    for name in SHORT_NAMES:
        if DTYPES[name] == dtype:
            return name
    raise SdloraError(f"dtype {dtype} has no name in sdlora's table ({', '.join(SHORT_NAMES)})")
