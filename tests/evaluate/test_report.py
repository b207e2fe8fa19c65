import base64
from pathlib import Path

from PIL import Image

from sdlora.evaluate.compare import Column, CompareJob, CompareResult, Row
from sdlora.evaluate.report import data_uri, metrics_section, render
from sdlora.generate.loras import LoadedLora, LoraSpec
from sdlora.generate.prompts import PromptSpec


def result(tmp_path) -> CompareResult:
    grid = tmp_path / "grid.png"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(grid)
    spec = PromptSpec("<script>alert(1)</script> a cat", "bad & ugly")
    lora = LoadedLora(LoraSpec(Path("x.safetensors")), "x", {"ss_note": "<b>bold</b>"}, "kohya", "0123456789ab", ["m"])
    return CompareResult(CompareJob([spec], [], tmp_path), "sd-v1-4", [lora],
                         [Column("base", {"x": 0.0}), Column("x @ 1", {"x": 1.0}, "x")], [Row(spec, 42)],
                         [], [], grid)


def test_report_escapes_text_and_embeds_the_grid(tmp_path):
    page = render(result(tmp_path), title="t & t", notes=["weights <missing>"])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; a cat" in page
    assert "bad &amp; ugly" in page and "&lt;b&gt;bold&lt;/b&gt;" in page and "weights &lt;missing&gt;" in page
    assert data_uri(tmp_path / "grid.png") in page
    encoded = data_uri(tmp_path / "grid.png").split(",", 1)[1]
    assert base64.b64decode(encoded) == (tmp_path / "grid.png").read_bytes()


def test_metrics_table_has_a_row_per_column_and_marks_missing_values():
    html = metrics_section({"columns": {"base": {"CLIP-T": 0.25}, "x @ 1": {"CLIP-T": 0.3, "DINO vs base": 0.9}},
                            "descriptions": {"CLIP-T": "prompt similarity"}})
    assert html.count("<tr>") == 3 and "0.2500" in html and "—" in html and "prompt similarity" in html
    assert metrics_section(None) == "" and metrics_section({"columns": {}}) == ""
