import pytest

from sdlora.config import RunConfig, SourceConfig
from sdlora.errors import SdloraError
from sdlora.models import tiny_components
from sdlora.train.classgen import existing_images, generate_class_images, missing_class_images

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
    with pytest.raises(SdloraError, match=r"data.sources\[1\].prompt is needed to generate class images"):
        missing_class_images(_cfg(tmp_path, prompt=None))
