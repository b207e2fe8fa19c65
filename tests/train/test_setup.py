"""Precision choice and the accelerator (src/sdlora/train/setup.py)."""
from pathlib import Path

import pytest

from sdlora.errors import SdloraError
from sdlora.train.precision import cpu_has_native_bf16
from sdlora.train.setup import resolve_precision


@pytest.mark.parametrize("setting, device, expected", [("no", "cpu", "no"), ("bf16", "cpu", "bf16"),
                                                       ("fp16", "cuda", "fp16")])
def test_resolve_precision(setting, device, expected):
    assert resolve_precision(setting, device) == expected


def test_native_bf16_probe_agrees_with_the_cpu_flags():
    """An independent reading of the hardware: the CPU flags the kernel reports (Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set(next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "").split())
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
    assert resolve_precision("auto", "cpu") == "no"  # never bf16 on the CPU (see train/precision.py)


def test_fp16_on_cpu_is_refused():
    with pytest.raises(SdloraError, match="needs a GPU"):
        resolve_precision("fp16", "cpu")
