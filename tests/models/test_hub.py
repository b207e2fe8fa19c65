"""Hub ids: the offline error is one actionable line; a cached snapshot loads without network."""
import shutil

import pytest
from huggingface_hub import constants

from sdlora.errors import SdloraError
from sdlora.models import DEFAULT_MODEL, load_components
from sdlora.models.hub import fetch, hub_offline


@pytest.fixture
def empty_offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_default_model_offline_is_one_clear_line(empty_offline_cache):
    with pytest.raises(SdloraError) as info:
        load_components()
    message = str(info.value)
    assert DEFAULT_MODEL == "CompVis/stable-diffusion-v1-4"
    assert f"model {DEFAULT_MODEL!r} is not a local path and not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message and f"hf download {DEFAULT_MODEL}" in message and "--model" in message
    assert "\n" not in message and info.value.__cause__ is None and info.value.__context__ is None


def test_offline_flag_from_environment(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()


def test_cached_snapshot_loads_offline(empty_offline_cache, tiny_folder, tiny_models, assert_same_weights):
    # The cache layout huggingface_hub writes: refs/main names a snapshot folder.
    repo = empty_offline_cache / "models--sdlora-test--tiny-sd"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_folder, repo / "snapshots" / commit)
    assert fetch("sdlora-test/tiny-sd") == repo / "snapshots" / commit
    loaded = load_components("sdlora-test/tiny-sd")
    assert loaded.source == "sdlora-test/tiny-sd"
    assert_same_weights(tiny_models, loaded)
