"""kohya's dynamic resize rules (sdlora.formats.ranks) on modules with known singular values."""
import math

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.formats.ranks import pick_rank
from sdlora.formats.resize import resize_lora

SIGMA = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]  # the singular values of the test module's change
LIN = ("unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q")
ZERO = ("unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_k")


def reference_rank(method: str, x: float, sigma=SIGMA) -> int:
    """The rules written out over a plain list (independent of sdlora.formats.ranks)."""
    if method == "sv_ratio":
        return max(1, sum(1 for s in sigma if s > sigma[0] / x))  # kohya: strictly above
    values = [s * s for s in sigma] if method in ("sv_fro", "energy") else list(sigma)
    target = x * x if method == "sv_fro" else x
    running = 0.0
    for r, v in enumerate(values, 1):
        running += v
        if running / sum(values) >= target:
            return r
    return len(values)


def known_lora(sigma=SIGMA, seed=0):
    """A rank-6 module whose change (alpha = rank, so scale 1) has exactly the singular values `sigma`."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(64, len(sigma), generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(64, len(sigma), generator=gen, dtype=torch.float64))
    down = (torch.tensor(sigma, dtype=torch.float64)[:, None] * v.T).float()
    lin = {C.DOWN: down, C.UP: u.float(), C.ALPHA: torch.tensor(float(len(sigma)))}
    zero = {C.DOWN: torch.randn(4, 64, generator=gen), C.UP: torch.zeros(64, 4), C.ALPHA: torch.tensor(4.0)}
    return C.ungroup({LIN: lin, ZERO: zero})


TABLE = [  # (method, threshold, max rank): each threshold kept away from a tie
    ("sv_ratio", 3.0, None), ("sv_ratio", 5.0, None), ("sv_ratio", 100.0, None), ("sv_ratio", 1.0, None),
    ("sv_fro", 0.9, None), ("sv_fro", 0.99, None), ("sv_fro", 0.999, None), ("sv_fro", 1.0, None),
    ("sv_cumulative", 0.5, None), ("sv_cumulative", 0.8, None), ("sv_cumulative", 0.95, None),
    ("sv_cumulative", 0.99, 2), ("sv_ratio", 100.0, 3),
]


@pytest.mark.parametrize("method, x, cap", TABLE)
def test_dynamic_ranks_match_the_rules(method, x, cap):
    out, report = resize_lora(known_lora(), cap, dynamic=method, threshold=x)
    want = min(reference_rank(method, x), cap or len(SIGMA))
    lin = C.group(out)[LIN]
    assert C.rank(lin) == want
    assert C.alpha(lin) / C.rank(lin) == pytest.approx(1.0)  # alpha / rank kept per module
    line = next(m for m in report.modules if m.name == ".".join(LIN))
    squares = [s * s for s in SIGMA]
    assert line.new_rank == want and line.energy == pytest.approx(sum(squares[:want]) / sum(squares), rel=1e-5)
    assert C.rank(C.group(out)[ZERO]) == 1  # a module that changes nothing keeps one rank


def test_the_table_spans_every_rank_and_rule():
    assert {reference_rank(m, x) for m, x, _ in TABLE} >= {1, 2, 3, 4, 5, 6}
    assert {m for m, _, _ in TABLE} == {"sv_ratio", "sv_fro", "sv_cumulative"}


def test_energy_rule_and_zero_sigma():
    assert pick_rank(torch.tensor(SIGMA), 6, "energy", 0.95) == reference_rank("energy", 0.95) == 3  # 64+16 of 85.3 < 95%
    assert pick_rank(torch.zeros(4), 4, "sv_fro", 0.5) == 1


@pytest.mark.parametrize("method, x", [("sv_ratio", 0.5), ("sv_fro", 0.0), ("sv_fro", 1.01), ("sv_cumulative", -1),
                                        ("sv_cumulative", math.nan), ("sv_ratio", None), ("nope", 0.5)])
def test_bad_thresholds_are_refused(method, x):
    with pytest.raises(SdloraError, match="threshold|rank rule"):
        resize_lora(known_lora(), None, dynamic=method, threshold=x)


def test_cli_writes_per_module_ranks_and_reports_them(tmp_path, capsys):
    from sdlora.cli import main

    src = save_lora_file(tmp_path / "in.safetensors", known_lora(), {}, "kohya", torch.float32)
    out = tmp_path / "out.safetensors"
    assert main(["resize", str(src), str(out), "--dynamic", "sv_fro", "--threshold", "0.99"]) == 0
    printed = capsys.readouterr().out
    assert f"rank 6 -> {reference_rank('sv_fro', 0.99)}" in printed and "MiB" in printed
    lora, meta, _ = load_lora_file(out)
    assert C.rank(C.group(lora)[LIN]) == reference_rank("sv_fro", 0.99) and meta["sdlora_resize_dynamic"] == "sv_fro"
    assert main(["resize", str(src), str(tmp_path / "x.safetensors"), "--dynamic", "sv_ratio"]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert main(["resize", str(src), str(tmp_path / "x.safetensors"), "--dynamic", "sv_ratio", "--threshold", "0.2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--threshold for sv_ratio" in err
    assert main(["resize", str(src), str(tmp_path / "x.safetensors")]) == 2
    assert "--rank" in capsys.readouterr().err
