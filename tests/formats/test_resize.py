import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.formats.resize import resize_lora, resize_lora_file

LIN = ("unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q")
CONV = ("unet", "mid_block.resnets.0.conv1")


def _lora(rank=8, true_rank=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    down = torch.randn(rank, 64, generator=gen)
    up = torch.randn(64, rank, generator=gen)
    if true_rank is not None:  # up @ down then has rank true_rank
        up = torch.randn(64, true_rank, generator=gen) @ torch.randn(true_rank, rank, generator=gen)
    conv = {C.DOWN: torch.randn(rank, 64, 3, 3, generator=gen), C.UP: torch.randn(64, rank, 1, 1, generator=gen),
            C.ALPHA: torch.tensor(2.0)}
    return C.ungroup({LIN: {C.DOWN: down, C.UP: up, C.ALPHA: torch.tensor(4.0)}, CONV: conv})


def test_a_low_rank_delta_survives_exactly_with_its_scale():
    lora = _lora(rank=8, true_rank=2)
    out, report = resize_lora(lora, 2, conv_rank=8)
    lin = C.group(out)[LIN]
    assert C.rank(lin) == 2 and C.alpha(lin) / 2 == 4.0 / 8  # alpha / rank kept
    assert torch.allclose(C.delta(lin), C.delta(C.group(lora)[LIN]), atol=1e-4)
    by_name = {m.name: m for m in report.modules}
    assert by_name["unet." + LIN[1]].energy == pytest.approx(1.0, abs=1e-6)
    assert C.rank(C.group(out)[CONV]) == 8  # conv_rank 8 = its rank: copied unchanged
    assert torch.equal(C.group(out)[CONV][C.DOWN], C.group(lora)[CONV][C.DOWN])


def test_energy_and_error_follow_the_singular_values():
    lora = _lora(rank=8)
    out, report = resize_lora(lora, 3)
    for module in (LIN, CONV):
        before, after = C.delta(C.group(lora)[module]), C.delta(C.group(out)[module])
        sigma2 = torch.linalg.svdvals(before.double()).pow(2)
        line = next(m for m in report.modules if m.name == ".".join(module))
        assert line.energy == pytest.approx(float(sigma2[:3].sum() / sigma2.sum()), rel=1e-6)
        # Eckart-Young: the squared error of the best rank-3 fit is the dropped energy
        assert float((before - after).double().pow(2).sum()) == pytest.approx(float(sigma2[3:].sum()), rel=1e-3)
        assert C.group(out)[module][C.DOWN].shape[0] == 3
    assert C.group(out)[CONV][C.DOWN].shape == (3, 64, 3, 3) and C.group(out)[CONV][C.UP].shape == (64, 3, 1, 1)
    assert 0 < report.min_energy <= report.energy < 1


@pytest.mark.parametrize("rank", [0, -1, 2.5, True])
def test_bad_ranks_are_refused(rank):
    with pytest.raises(SdloraError, match="positive integer"):
        resize_lora(_lora(), rank)


def test_resize_file_keeps_format_dtype_and_records_energy(tiny, tmp_path, lora_maker):
    src = save_lora_file(tmp_path / "in.safetensors", lora_maker(tiny, ranks=(4,)), {"ss_seed": "5"}, "diffusers")
    report = resize_lora_file(src, tmp_path / "out.safetensors", 2)
    lora, meta, fmt = load_lora_file(tmp_path / "out.safetensors")
    assert fmt == "diffusers" and {t.dtype for k, t in lora.items() if not k.endswith("alpha")} == {torch.float16}
    assert {C.rank(p) for p in C.group(lora).values()} == {2}
    assert meta["ss_seed"] == "5" and float(meta["sdlora_resize_energy"]) == pytest.approx(report.energy, abs=1e-6)
