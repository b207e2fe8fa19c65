import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import apply
from sdlora.formats import canonical as C
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.formats.merge_loras import merge_lora_files, merge_loras
from sdlora.models import tiny_components
from sdlora.models.pipeline import build_pipeline


@pytest.fixture(scope="module")
def two_files(tmp_path_factory, lora_maker):
    """A (attention + text encoder, ranks 4/2, alphas 3/1.5) and B (transformer blocks, rank 3, alpha 6):
    different ranks and alphas, modules in both files and in only one."""
    tiny, tmp_path = tiny_components(0), tmp_path_factory.mktemp("merge")
    a = lora_maker(tiny, ("unet-attn",), seed=1, ranks=(4, 2), alphas=(3.0, 1.5))
    b = lora_maker(tiny, ("unet-transformer",), text_encoder=False, seed=2, ranks=(3,), alphas=(6.0,))
    pa = save_lora_file(tmp_path / "a.safetensors", a, {}, "kohya", torch.float32)
    pb = save_lora_file(tmp_path / "b.safetensors", b, {}, "diffusers", torch.float32)
    return (a, pa), (b, pb)


def _expected(a, b, wa, wb):
    ga, gb = C.group(C.normalize(a)), C.group(C.normalize(b))
    return {
        m: (wa * C.delta(ga[m]) if m in ga else 0) + (wb * C.delta(gb[m]) if m in gb else 0) for m in {*ga, *gb}}


def test_concatenation_is_exact_and_ranks_add(two_files):
    (a, _), (b, _) = two_files
    merged, report = merge_loras([(a, 0.7), (b, -0.5)])
    assert report is None
    modules = C.group(merged)
    expected = _expected(a, b, 0.7, -0.5)
    assert set(modules) == set(expected)
    ga, gb = C.group(C.normalize(a)), C.group(C.normalize(b))
    for m, want in expected.items():
        got = C.delta(modules[m])
        assert float((got - want).norm() / want.norm()) <= 1e-6, m
        assert C.rank(modules[m]) == (C.rank(ga[m]) if m in ga else 0) + (C.rank(gb[m]) if m in gb else 0)


def test_concatenated_file_loads_in_diffusers_like_both_files_attached(two_files, tmp_path, probe, diff):
    (a, pa), (b, pb) = two_files
    ours = tiny_components(0)
    apply.attach(ours, a, adapter="a", multiplier=0.7)
    apply.attach(ours, b, adapter="b", multiplier=0.5)
    want = probe(ours.unet, ours.text_encoder)
    out = tmp_path / "merged.safetensors"
    merge_lora_files([(pa, 0.7), (pb, 0.5)], out, fmt="diffusers")
    pipe = build_pipeline(tiny_components(0))
    pipe.load_lora_weights(str(out))
    got = probe(pipe.unet, pipe.text_encoder)
    base = tiny_components(0)
    plain = probe(base.unet, base.text_encoder)
    assert max(diff(x, y) for x, y in zip(got, want)) < 1e-4
    assert min(diff(x, y) for x, y in zip(got, plain)) > 1e-2  # the merge really changes both networks


@pytest.mark.parametrize("rank,energy", [(2, None), (None, 0.9)])
def test_svd_merge_keeps_the_best_fit_and_reports_energy(two_files, rank, energy):
    (a, _), (b, _) = two_files
    merged, report = merge_loras([(a, 0.7), (b, 0.5)], rank=rank, rule=None if energy is None else "energy",
                                 threshold=energy)
    expected = _expected(a, b, 0.7, 0.5)
    lines = {line.name: line for line in report.modules}
    for m, params in C.group(merged).items():
        sigma2 = torch.linalg.svdvals(expected[m].double()).pow(2)
        r = C.rank(params)
        fraction = float(sigma2[:r].sum() / sigma2.sum())
        if energy is None:
            assert r == min(rank, sigma2.numel())
        else:  # the smallest rank reaching the energy
            assert fraction >= energy - 1e-9 and (r == 1 or float(sigma2[:r - 1].sum() / sigma2.sum()) < energy)
        assert lines[".".join(m)].energy == pytest.approx(fraction, rel=1e-6)
        err = float((C.delta(params) - expected[m]).double().pow(2).sum())
        assert err == pytest.approx(float(sigma2[r:].sum()), rel=1e-3, abs=1e-8)  # Eckart-Young


def test_merge_file_metadata_and_errors(two_files, tmp_path, tiny, lora_maker):
    (_, pa), (_, pb) = two_files
    out = tmp_path / "m.safetensors"
    _, report = merge_lora_files([(pa, 1.0), (pb, 1.0)], out, rank=3)
    lora, meta, fmt = load_lora_file(out)
    assert fmt == "kohya" and meta["sdlora_merge_mode"] == "svd" and report.size == out.stat().st_size
    assert {C.rank(p) for p in C.group(lora).values()} <= {1, 2, 3}
    with pytest.raises(SdloraError, match="at least two"):
        merge_loras([(lora, 1.0)])
    with pytest.raises(SdloraError, match="--rank must be a positive integer"):
        merge_loras([(lora, 1.0), (lora, 1.0)], rank=0)
    with pytest.raises(SdloraError, match="--threshold for energy"):
        merge_loras([(lora, 1.0), (lora, 1.0)], rule="energy", threshold=1.5)
    with pytest.raises(SdloraError, match="DoRA"):
        merge_loras([(lora_maker(tiny, dora=True), 1.0), (lora, 1.0)])
    other = {k: v[..., :4] if k.endswith("lora_down.weight") else v for k, v in lora.items()}
    with pytest.raises(SdloraError, match="different base models"):
        merge_loras([(lora, 1.0), (other, 1.0)])


def test_cli_merges_and_never_overwrites_without_asking(two_files, tmp_path, capsys):
    from sdlora.cli import main

    (_, pa), (_, pb) = two_files
    out = tmp_path / "cli.safetensors"
    assert main(["merge-loras", f"{pa}:0.7", f"{pb}:0.5", "-o", str(out), "--energy", "0.95"]) == 0
    printed = capsys.readouterr().out
    assert "SVD" in printed and "retained energy" in printed and out.is_file()
    before = out.read_bytes()
    assert main(["merge-loras", str(pa), str(pb), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["merge-loras", str(pa), str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.safetensors" in err
    (tmp_path / "not-lora.safetensors").write_bytes(b"nonsense")
    assert main(["merge-loras", str(pa), str(tmp_path / "not-lora.safetensors"), "-o", str(tmp_path / "y.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not-lora.safetensors" in err


def test_loha_merges_through_its_weight_change(two_files):
    import copy

    from sdlora.lora import inject, lora_modules

    (a, _), _ = two_files
    model = copy.deepcopy(tiny_components(0))
    inject(model.unet, ["unet-attn"], 4, 2.0, algorithm="loha")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (p for w in lora_modules(model.unet).values() for p in w.adapters.parameters()):
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    loha = apply.extract(model)
    with pytest.raises(SdloraError, match="LoHa/LoKr.*--rank or --energy"):
        merge_loras([(a, 1.0), (loha, 1.0)])
    merged, report = merge_loras([(a, 0.7), (loha, 0.5)], rank=64)  # every module's full rank: exact
    expected = _expected(a, loha, 0.7, 0.5)
    for m, params in C.group(merged).items():
        assert float((C.delta(params) - expected[m]).norm() / expected[m].norm()) <= 1e-5, m
    assert report.energy == pytest.approx(1.0)
