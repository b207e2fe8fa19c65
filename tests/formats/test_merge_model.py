"""merge-into-model: the saved model (diffusers folder or LDM single file) equals base + LoRA."""
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import apply
from sdlora.formats.io import save_lora_file
from sdlora.formats.merge_model import check_finite_model, merge_into_model, merge_loras, output_layout
from sdlora.lora import lora_modules
from sdlora.models import build_pipeline, load_components, tiny_components


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """The tiny random model saved as a diffusers folder (what load_components reads)."""
    folder = tmp_path_factory.mktemp("base") / "tiny-sd"
    build_pipeline(tiny_components(0)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loras(tmp_path_factory, lora_maker):
    tiny = tiny_components(0)
    folder = tmp_path_factory.mktemp("loras")
    a = save_lora_file(folder / "a.safetensors", lora_maker(tiny, ("unet-transformer",), seed=1), {}, "kohya",
                       torch.float32)
    b = save_lora_file(folder / "b.safetensors", lora_maker(tiny, ("unet-conv",), seed=2, dora=True), {}, "native",
                       torch.float32)
    return a, b


def _expected(base_dir, loras, weights, probe):
    from sdlora.formats.io import load_lora_file

    model = load_components(base_dir)
    for i, (path, weight) in enumerate(zip(loras, weights)):
        apply.attach(model, load_lora_file(path)[0], adapter=f"l{i}", multiplier=weight)
    return probe(model.unet, model.text_encoder)


@pytest.mark.parametrize("name", ["merged", "merged.safetensors"])
def test_saved_model_equals_base_with_loras_attached(name, base_dir, loras, tmp_path, probe, diff):
    out = tmp_path / name
    report = merge_into_model(base_dir, [(loras[0], 0.8), (loras[1], -0.5)], out)
    assert report["layout"] == output_layout(out) and [x["format"] for x in report["loras"]] == ["kohya", "native"]
    merged = load_components(out)  # every file sdlora writes, it reads (the single file names its architecture)
    assert not lora_modules(merged.unet)
    got = probe(merged.unet, merged.text_encoder)
    errors = [diff(a, b) for a, b in zip(got, _expected(base_dir, loras, (0.8, -0.5), probe))]
    print(f"merge-into-model ({report['layout']}): max |merged - attached| unet {errors[0]:.2e}, text {errors[1]:.2e}")
    assert max(errors) < 1e-4


def test_refusals(base_dir, loras, tmp_path, lora_maker):
    with pytest.raises(SdloraError, match="pickle"):
        output_layout(tmp_path / "x.ckpt")
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(SdloraError, match="already exists"):
        merge_into_model(base_dir, [(loras[0], 1.0)], existing)
    model = tiny_components(0)
    apply.attach(model, lora_maker(model), adapter="live")
    with pytest.raises(SdloraError, match="already carries LoRA adapters"):
        merge_loras(model, [(lora_maker(model), 1.0)])


def test_output_folders_that_must_not_be_replaced(base_dir, loras, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    cases = [(tmp_path / "empty", str(tmp_path), "is a folder of other files"),
             (tmp_path, ".", "is the current folder"),
             (tmp_path, str(base_dir), "holds the input"), (tmp_path, str(loras[0].parent), "other files")]
    for cwd, out, message in cases:
        monkeypatch.chdir(cwd)
        with pytest.raises(SdloraError, match=message):
            merge_into_model(base_dir, [(loras[0], 1.0)], out, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (base_dir / "model_index.json").is_file()


def test_a_merge_that_overflows_is_refused(lora_maker):
    model = tiny_components(0)
    lora = {k: t * 1e20 if not k.endswith(".alpha") else t for k, t in lora_maker(model, seed=3).items()}
    merge_loras(model, [(lora, 1.0)])
    with pytest.raises(SdloraError, match=r"merging made (unet|text_encoder)\..* NaN or infinite; lower the LoRA"):
        check_finite_model(model)
