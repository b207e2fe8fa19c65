"""Generate, Compare and Files through the UI's job functions on sd-tiny: the CLI's library calls."""
import pytest
from safetensors import safe_open

from sdlora.errors import SdloraError
from sdlora.generate.pngmeta import read_parameters
from sdlora.ui import jobs
from sdlora.ui.tab_tools import info_html, metrics_html


def _form(tmp_path, lora, **kw):
    return jobs.Sampling(model="tiny", prompts="a red circle --d 7", steps=2, cfg=2.0, width=64, height=64,
                         loras=f"{lora}:0.8", out_dir=str(tmp_path / "out"), **kw)


def test_generate_writes_a1111_parameters_that_read_back(tmp_path, tiny_lora):
    result = jobs.generate(_form(tmp_path, tiny_lora, negative="blurry"))
    assert len(result.images) == 1 and result.images[0].is_file()
    params = read_parameters(result.images[0])
    assert params.prompt == "a red circle" and params.negative_prompt == "blurry"
    assert params.fields["Seed"] == "7" and params.fields["Size"] == "64x64" and "style" in params.fields["Lora hashes"]
    assert jobs.read_png(result.images[0]) == result.parameters[0]


def test_compare_grid_and_report_with_the_missing_weights_hint(tmp_path, tiny_lora, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))  # no CLIP/DINO weights anywhere
    result = jobs.compare(_form(tmp_path, tiny_lora), "0, 1", evaluate=True)
    assert result.grid.is_file() and result.report.is_file()
    assert len(result.notes) == 2 and "hf download" in result.notes[0] and result.metrics is None
    assert "sdlora-warn" in metrics_html(result)
    with pytest.raises(SdloraError, match="at least one LoRA"):
        jobs.compare(jobs.Sampling(model="tiny", prompts="x"), "")


def test_files_info_convert_resize(tmp_path, tiny_lora):
    info = jobs.lora_info(str(tiny_lora))
    page = info_html(info)
    assert info["format"] == "kohya" and "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    out = tmp_path / "d.safetensors"
    assert "(kohya) ->" in jobs.convert(str(tiny_lora), str(out), "diffusers")
    with safe_open(out, "pt") as f:
        assert all(".lora_A." in k or ".lora_B." in k for k in f.keys())
    report = jobs.resize(str(tiny_lora), str(tmp_path / "r.safetensors"), 2)
    assert 0 < report.energy < 1 and {m.new_rank for m in report.modules} == {2}
    with pytest.raises(SdloraError, match="not found"):
        jobs.lora_info(str(tmp_path / "missing.safetensors"))
    assert jobs.parse_weights("0, 0.5 1") == [0.0, 0.5, 1.0] and jobs.parse_weights("") is None
