"""extract: a model made as tiny + a known LoRA (merged with merge-into-model) gives the LoRA back."""
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats.extract import extract_lora, extract_lora_file, module_change, sites
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.formats.merge_model import merge_into_model, save_model
from sdlora.models import tiny_components
from sdlora.models.loader import load_components
from sdlora.models.model_weights import open_weights
from sdlora.models.tensor_file import TensorFile

PRESETS = ("unet-transformer", "unet-conv")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, lora_maker):
    """(known LoRA, {"base" | dtype name: single-file model}): the tiny test model and tiny + the LoRA
    (UNet only, ranks 4/2, alpha != rank), all written by sdlora's own save paths."""
    where = tmp_path_factory.mktemp("extract")
    models = {"base": where / "base.safetensors"}
    save_model(tiny_components(0), models["base"])
    lora = lora_maker(tiny_components(0), PRESETS, text_encoder=False, seed=5, ranks=(4, 2), alphas=(3.0, 1.0))
    path = save_lora_file(where / "known.safetensors", lora, {}, "kohya", torch.float32)
    for dtype in ("fp32", "fp16"):
        models[dtype] = where / f"tuned-{dtype}.safetensors"
        merge_into_model(models["base"], [(path, 1.0)], models[dtype], dtype=dtype)
    return C.normalize(lora), models


def _relative_errors(extracted, known):
    got, want = C.group(extracted), C.group(known)
    assert set(got) == set(want)  # exactly the changed modules, the text encoder left out
    return {m: float((C.delta(got[m]) - C.delta(want[m])).norm() / C.delta(want[m]).norm()) for m in want}


def test_extract_from_fp16_gives_the_known_lora_back(tuned, tmp_path):
    known, models = tuned
    out = tmp_path / "extracted.safetensors"
    report = extract_lora_file(models["base"], models["fp16"], out, dtype=torch.float32, rank=4, conv=True)
    extracted, meta, _ = load_lora_file(out)
    errors = _relative_errors(extracted, known)
    print(f"extract from fp16: largest relative dW error {max(errors.values()):.2e}")
    assert max(errors.values()) <= 2e-3  # fp16 rounding of the tuned weights
    assert report.text_encoder_skipped and any(name.startswith("text_encoder.") for name in report.unchanged)
    assert report.energy == pytest.approx(1.0, abs=1e-5) and report.max_error <= 2e-3
    assert float(meta["sdlora_extract_energy"]) == pytest.approx(report.energy, abs=1e-6)


def test_cli_extract_from_fp32_is_exact_and_reports(tuned, tmp_path, capsys):
    from sdlora.cli import main

    known, models = tuned
    out = tmp_path / "extracted.safetensors"
    argv = ["extract", str(models["base"]), str(models["fp32"]), str(out), "--rank", "4", "--conv", "--dtype", "fp32"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "text encoder is unchanged" in printed and "largest relative error" in printed and "energy 100.00%" in printed
    errors = _relative_errors(load_lora_file(out)[0], known)
    print(f"extract from fp32: largest relative dW error {max(errors.values()):.2e}")
    assert max(errors.values()) <= 1e-5  # fp32 rounding
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_single_files_are_read_one_module_at_a_time(tuned):
    """Neither model is loaded: their module trees are empty (meta) and each module's weight is read
    once, so at most one module's pair of weights is held."""
    known, models = tuned
    base, model = open_weights(models["base"]), open_weights(models["fp16"])
    lora, report = extract_lora(base, model, rank=4)  # (the fp16 test checks the values, read lazily too)
    visited = len(list(sites(base, conv=False)))
    assert all(p.is_meta for net in (base.unet, model.text_encoder) for p in net.parameters())
    assert base.reads == model.reads == visited < len(TensorFile(models["base"]).keys())
    assert len(report.modules) == len(C.group(lora)) == len([k for k in C.group(known) if "attentions" in k[1]])


def test_dynamic_extract_and_rank_caps(tuned):
    known, models = tuned
    base, model = load_components(models["base"]), load_components(models["fp32"])
    lora, report = extract_lora(base, model, rank=1, conv_rank=3, conv=True)
    for (component, path), params in C.group(lora).items():
        kxk = params[C.DOWN].dim() == 4 and params[C.DOWN].shape[-1] == 3
        assert C.rank(params) == (3 if kxk else 1)  # a fixed rank, whatever the change's own rank
    lora, report = extract_lora(base, model, rank=None, rule="sv_fro", threshold=0.999999, conv=True)
    assert {C.rank(p) for p in C.group(lora).values()} == {C.rank(p) for p in C.group(known).values()}
    assert max(_relative_errors(lora, known).values()) <= 1e-4
    kxk = [path for _, path, _ in sites(base, conv=True) if "resnets" in path and "conv1" in path]
    assert kxk and not set(kxk) & {path for _, path, _ in sites(base, conv=False)}


def test_bad_inputs_are_one_line_errors(tuned, tmp_path, capsys):
    from sdlora.cli import main

    _, models = tuned
    base, other = tiny_components(0), tiny_components(0)
    with pytest.raises(SdloraError, match="nothing to extract"):
        extract_lora(base, other)
    layer = other.unet.get_submodule("mid_block.resnets.0.conv1")
    layer.weight = torch.nn.Parameter(torch.zeros(layer.weight.shape[0], 3, 3, 3))
    with pytest.raises(SdloraError, match="different architectures"):
        module_change(base.unet, other.unet, "mid_block.resnets.0.conv1")
    for bad in (dict(rank=0), dict(rule="sv_ratio", threshold=0.5), dict(rank=None)):
        with pytest.raises(SdloraError, match="rank|threshold"):
            extract_lora(base, base, **bad)
    out = tmp_path / "x.safetensors"
    assert main(["extract", str(models["base"]), str(tmp_path / "missing.safetensors"), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.safetensors" in err and not out.exists()


@pytest.mark.parametrize("case, message", [("garbage", "not a readable .safetensors file"),
                                           ("lora", "a LoRA file, not a model"),
                                           ("no-module", "TUNED has no module"),
                                           ("shape", "BASE has shape")])
def test_bad_model_files_are_one_error_line(tuned, tmp_path, capsys, case, message):
    """Read lazily, a broken or foreign TUNED still ends in one line naming what is wrong, and no file."""
    from sdlora.cli import main
    from sdlora.models.checkpoint_io import read_state_dict, write_safetensors

    _, models = tuned
    bad, out = tmp_path / f"{case}.safetensors", tmp_path / "x.safetensors"
    if case == "garbage":
        bad.write_bytes(b"\xff" * 64)
    elif case == "lora":
        write_safetensors(bad, {"lora_unet_x.lora_down.weight": torch.zeros(1, 2)})
    else:
        state, metadata = read_state_dict(models["fp32"])
        key = next(k for k in state if k.endswith("attn1.to_q.weight"))  # the first attention's to_q
        if case == "no-module":
            state = {k: v for k, v in state.items() if k != key}
        else:
            state = {**state, key: state[key][:, 1:]}
        write_safetensors(bad, state, metadata)
    assert main(["extract", str(models["base"]), str(bad), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdlora: error:") and err.count("\n") == 1 and message in err and not out.exists()
