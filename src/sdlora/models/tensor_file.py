""".safetensors files read one tensor at a time with ordinary reads, for tools that visit a model's
weights once each and must not hold it whole (extract on the full-size model).

safetensors' own `safe_open` memory-maps the file: every tensor read leaves its pages in the process's
resident set until the file is closed, so reading a 3.4 GB UNet tensor by tensor still peaks at 3.4 GB
of RSS. Here each tensor is read into fresh memory that is freed with the tensor; the file's pages live
in the kernel's page cache, not in the process. safetensors still validates the header (safe_open
reads only the header pages); the layout read here is the documented one: an 8-byte little-endian
header length, the JSON header ({key: {dtype, shape, data_offsets}}, "__metadata__"), then the data.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sdlora.errors import SdloraError
from sdlora.fileio import regular_file

# safetensors dtype names -> torch (the format's table; the 8-bit float types are not SD 1.x's)
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


class TensorFile:
    """One .safetensors file: its keys, shapes and metadata at once, each tensor on `read`.

    `reads` counts the tensors read so far (a tool's memory is bounded when it reads each once).
    """

    def __init__(self, path: str | Path):
        self.path = regular_file(path, "checkpoint file")
        try:
            with safe_open(str(self.path), framework="pt") as handle:  # validates header and offsets
                self.metadata: dict[str, str] = dict(handle.metadata() or {})
            with open(self.path, "rb") as stream:
                (size,) = struct.unpack("<Q", stream.read(8))
                header = json.loads(stream.read(size))
        except (SafetensorError, OSError, ValueError, struct.error) as exc:
            raise SdloraError(f"{self.path}: not a readable .safetensors file (truncated or corrupt?): {exc}") from None
        header.pop("__metadata__", None)
        self._entries: dict[str, dict] = header
        self._data_start = 8 + size
        self.reads = 0

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key]["shape"])

    def read(self, key: str) -> torch.Tensor:
        """The tensor `key` (KeyError when the file has none), in the file's dtype, in its own memory."""
        entry = self._entries[key]
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise SdloraError(f"{self.path}: {key} has dtype {entry['dtype']}, which sdlora does not read; "
                              f"expected one of {', '.join(SAFETENSORS_DTYPES)}")
        begin, end = entry["data_offsets"]
        data = torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path, "rb") as stream:
            stream.seek(self._data_start + begin)
            got = stream.readinto(memoryview(data.numpy())) if end > begin else 0
        if got != end - begin:
            raise SdloraError(f"{self.path}: {key} ends past the end of the file (truncated?)")
        self.reads += 1
        shape = tuple(entry["shape"])
        return data.view(dtype).reshape(shape) if math.prod(shape) else torch.empty(shape, dtype=dtype)
