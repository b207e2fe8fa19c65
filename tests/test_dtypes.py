"""sdlora.dtypes: one table of names, every alias read the same way."""
import pytest
import torch

from sdlora.dtypes import DTYPES, SHORT_NAMES, dtype_name, parse_dtype
from sdlora.errors import SdloraError


@pytest.mark.parametrize("names, dtype", [
    (["fp32", "float32", "no", "FP32"], torch.float32),
    (["fp16", "float16", "half"], torch.float16),
    (["bf16", "bfloat16", " BF16 "], torch.bfloat16),
])  # fmt: skip
def test_every_alias_names_one_dtype(names, dtype):
    assert {parse_dtype(name) for name in names} == {dtype}
    assert parse_dtype(dtype_name(dtype)) is dtype


def test_round_trip_over_the_table():
    assert {dtype_name(dtype) for dtype in DTYPES.values()} == set(SHORT_NAMES)


@pytest.mark.parametrize("value", ["int8", "fp8", torch.int64, 3, ""])
def test_anything_else_is_an_error_naming_the_setting(value):
    with pytest.raises(SdloraError, match=r"--dtype .*: expected one of fp32, fp16, bf16"):
        parse_dtype(value, "--dtype")
