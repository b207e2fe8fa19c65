import json

import numpy as np
import pytest
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.evaluate.compare import CompareJob
from sdlora.evaluate.evaluation import EvaluateJob, evaluate, load_image_folder
from sdlora.evaluate.features import load_clip, load_dino
from sdlora.evaluate.metrics import mean_similarity, paired_cosine
from sdlora.generate.loras import LoraSpec
from sdlora.generate.prompts import PromptSpec
from sdlora.models import tiny_components

PROMPTS = [PromptSpec("a red square", seed=1, steps=2, cfg=4.0, width=32, height=32),
           PromptSpec("a green circle", seed=5, steps=2, cfg=4.0, width=32, height=32)]


def image_folder(path, n, seed):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path / f"{i}.png")
    (path / "notes.txt").write_text("not an image")
    return path


def test_evaluate_reports_every_metric_per_column(tmp_path, lora_file, encoder_dirs):
    train, ref = image_folder(tmp_path / "train", 3, 0), image_folder(tmp_path / "ref", 4, 1)
    job = EvaluateJob(CompareJob(PROMPTS, [LoraSpec(lora_file)], tmp_path / "out", weights=[1.0]),
                      train_images=train, reference=ref, clip_model=str(encoder_dirs["clip"]),
                      dino_model=str(encoder_dirs["dino"]), kid_subsets=5)
    result = evaluate(job, tiny_components(0))
    columns = result.metrics["columns"]
    assert list(columns) == ["base", "style @ 1"] and result.notes == []
    base, lora = columns.values()
    assert set(base) == {"CLIP-T", "CLIP-I", "DINO", "FD_DINO", "KID_DINO", "KID_DINO std"}
    assert set(lora) == set(base) | {"DINO vs base"}
    for values in columns.values():
        assert all(-1 <= values[k] <= 1 for k in ("CLIP-T", "CLIP-I", "DINO"))
        assert values["FD_DINO"] >= 0
    # recompute two numbers from the written images with the same encoders
    clip, dino = load_clip(str(encoder_dirs["clip"])), load_dino(str(encoder_dirs["dino"]))
    lora_images = [Image.open(row[1]) for row in result.compare.image_paths]
    expected_t = float(paired_cosine(clip.images(lora_images), clip.texts([p.prompt for p in PROMPTS])).mean())
    assert lora["CLIP-T"] == pytest.approx(expected_t, abs=1e-6)
    assert lora["DINO"] == pytest.approx(mean_similarity(dino.images(lora_images),
                                                         dino.images(load_image_folder(train, "x"))), abs=1e-6)
    data = json.loads((tmp_path / "out" / "evaluate.json").read_text())
    assert data["metrics"]["columns"]["style @ 1"]["CLIP-T"] == pytest.approx(lora["CLIP-T"])
    assert data["metrics"]["feature_extractors"] == {"clip": str(encoder_dirs["clip"]), "dino": str(encoder_dirs["dino"])}
    assert "not Inception FID" in data["metrics"]["descriptions"]["FD_DINO"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<h2>Metrics</h2>" in html and "DINO vs base" in html


def test_missing_encoders_still_give_grid_report_and_other_metrics(tmp_path, encoder_dirs):
    job = EvaluateJob(CompareJob(PROMPTS[:1], [], tmp_path / "out"), clip_model="nobody/no-clip",
                      dino_model=str(encoder_dirs["dino"]), train_images=image_folder(tmp_path / "t", 2, 0))
    result = evaluate(job, tiny_components(0))
    assert result.metrics["columns"] == {"base": {"DINO": pytest.approx(result.metrics["columns"]["base"]["DINO"])}}
    assert len(result.notes) == 1 and "hf download nobody/no-clip" in result.notes[0]
    assert "--clip-model PATH" in result.notes[0] and "CLIP-T, CLIP-I" in result.notes[0]
    assert result.compare.grid_path.is_file() and result.report_path.is_file()
    assert "hf download nobody/no-clip" in result.report_path.read_text()


def test_image_folder_errors(tmp_path):
    with pytest.raises(SdloraError, match="--train-images .*: folder not found"):
        load_image_folder(tmp_path / "none", "--train-images")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SdloraError, match="no readable images"):
        load_image_folder(tmp_path / "empty", "--reference")
