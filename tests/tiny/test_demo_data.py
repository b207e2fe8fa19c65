import numpy as np
import pytest
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.tiny.checker import check
from sdlora.tiny.demo_data import DATA_SEED, DEMO_SIZES, TRIGGER, style_caption, style_scenes, write_style_dataset
from sdlora.tiny.world import Scene, scene_for_seed


def test_dataset_is_striped_captioned_with_the_trigger_and_readable_by_the_checker(tmp_path):
    scenes = write_style_dataset(tmp_path, 12)
    pngs, txts = sorted(tmp_path.glob("*.png")), sorted(tmp_path.glob("*.txt"))
    assert [p.stem for p in pngs] == [t.stem for t in txts] == [f"style-{i:03d}" for i in range(12)]
    for scene, png, txt in zip(scenes, pngs, txts):
        image = Image.open(png)
        assert image.size == (64, 64) and image.mode == "RGB"
        caption = txt.read_text(encoding="utf-8").strip()
        assert caption.endswith(f" in {TRIGGER}") and f"{scene.colour} {scene.shape}" in caption
        reading = check(image)
        assert (reading.style, reading.colour) == ("striped", scene.colour), png.name


def test_dataset_is_deterministic_and_varied(tmp_path):
    a = write_style_dataset(tmp_path / "a", 16)
    b = write_style_dataset(tmp_path / "b", 16)
    assert a == b
    assert (tmp_path / "a" / "style-003.png").read_bytes() == (tmp_path / "b" / "style-003.png").read_bytes()
    assert len({s.colour for s in a}) >= 6 and len({s.shape for s in a}) == 5
    assert {s.style for s in a} == {"striped"} and {s.size for s in a} == set(DEMO_SIZES) == {"medium", "large"}


def test_sizes_select_from_the_same_scene_stream():
    every = [scene_for_seed(DATA_SEED, i, "striped") for i in range(40)]
    assert style_scenes(5, sizes=("small",)) == [s for s in every if s.size == "small"][:5]
    assert style_scenes(40, sizes=("small", "medium", "large")) == every


def test_caption_variants_rotate():
    scene = Scene("star", "red", "blue", "small", 32.0, 32.0, 10.0, "striped")
    captions = [style_caption(scene, i, "xyz style") for i in range(5)]
    assert captions[0] == "a small red star on a blue background in xyz style"
    assert captions[3] == "a red star in xyz style"
    assert captions[4] == captions[0] and len(set(captions)) == 4


def test_rewriting_a_smaller_set_removes_stale_images_but_not_other_files(tmp_path):
    write_style_dataset(tmp_path, 6)
    (tmp_path / "notes.txt").write_text("mine")
    write_style_dataset(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.glob("style-*.png")) == ["style-000.png", "style-001.png", "style-002.png"]
    assert not (tmp_path / "style-005.txt").exists() and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kwargs, words", [({"count": 0}, "at least 1"), ({"style": "wavy"}, "style"),
                                           ({"trigger": " "}, "trigger"), ({"sizes": ("huge",)}, "sizes"),
                                           ({"sizes": ()}, "sizes")])
def test_bad_settings_raise(tmp_path, kwargs, words):
    with pytest.raises(SdloraError, match=words):
        write_style_dataset(tmp_path, **{"count": 2, **kwargs})
    assert not list(tmp_path.glob("*.png"))


def test_plain_style_images_differ_from_striped(tmp_path):
    striped = write_style_dataset(tmp_path / "s", 1)
    plain = write_style_dataset(tmp_path / "p", 1, style="plain")
    assert (striped[0].colour, striped[0].shape) == (plain[0].colour, plain[0].shape)
    a = np.asarray(Image.open(tmp_path / "s" / "style-000.png"))
    b = np.asarray(Image.open(tmp_path / "p" / "style-000.png"))
    assert (a != b).any(axis=-1).sum() > 50
