import pytest

from sdlora.config import RunConfig, SourceConfig, validate
from sdlora.errors import SdloraError
from sdlora.models import tiny_components
from sdlora.train.classgen import existing_images, generate_class_images, missing_class_images, prompt_plan

from .conftest import write_images


def _cfg(tmp_path, prompt="a square", num=3):
    cfg = RunConfig()
    cfg.data.resolution = 32
    cfg.validation.num_inference_steps = 2
    cfg.data.sources = [SourceConfig(path=str(tmp_path / "inst")),
                        SourceConfig(path=str(tmp_path / "class"), role="class", prompt=prompt, num_images=num)]
    return cfg


def test_tops_up_class_folder_once(tmp_path):
    write_images(tmp_path / "class", n=1)
    cfg = _cfg(tmp_path)
    assert missing_class_images(cfg) == {1: 2}
    assert generate_class_images(cfg, tiny_components(0), "cpu", batch_size=4) == 2
    images = existing_images(tmp_path / "class")
    assert len(images) == 3 and sorted(p.name for p in images)[:2] == ["class-00000.png", "class-00001.png"]
    assert missing_class_images(cfg) == {}
    assert generate_class_images(cfg, None, "cpu") == 0  # nothing to do: the model is not even touched


def test_missing_prompt_is_an_error(tmp_path):
    with pytest.raises(SdloraError, match=r"data.sources\[1\].prompt \(or class_prompts\) is needed to generate"):
        missing_class_images(_cfg(tmp_path, prompt=None))


def test_class_prompts_cycle_and_caption_each_image(tmp_path):
    write_images(tmp_path / "class", n=1)  # counts as image 0: generation starts at the second prompt
    cfg = _cfg(tmp_path, prompt=None, num=4)
    cfg.data.sources[1].class_prompts = ["a shape", "a red shape", "a blue shape"]
    assert prompt_plan(cfg.data.sources[1], 1, 3) == {"a red shape": [0], "a blue shape": [1], "a shape": [2]}
    assert generate_class_images(cfg, tiny_components(0), "cpu", batch_size=2) == 3
    captions = {p.name: p.with_suffix(".txt").read_text(encoding="utf-8") for p in existing_images(tmp_path / "class")
                if p.name.startswith("class-")}
    assert sorted(captions.values()) == ["a blue shape\n", "a red shape\n", "a shape\n"]


def test_one_prompt_writes_no_caption_files(tmp_path):
    cfg = _cfg(tmp_path, num=2)
    assert prompt_plan(cfg.data.sources[1], 0, 2) == {"a square": [0, 1]}
    generate_class_images(cfg, tiny_components(0), "cpu")
    assert not list((tmp_path / "class").glob("*.txt"))


def test_class_prompts_need_a_class_source():
    cfg = RunConfig()
    cfg.data.sources = [SourceConfig(path="x", class_prompts=["a dog"])]
    with pytest.raises(SdloraError, match=r"data.sources\[0\].class_prompts is only for class images"):
        validate(cfg)
