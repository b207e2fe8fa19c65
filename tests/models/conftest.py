"""Fixtures for sdlora.models: tiny SD checkpoints in the original LDM layout, and a pickled
pytorch_lightning-like callback (as sd-v1-4.ckpt has) without pytorch_lightning installed."""
import contextlib
import sys
import types

import pytest
import torch

from sdlora.models import skeleton
from sdlora.models.single_file import ldm_state_dict

TINY_CONFIGS = {"unet": skeleton.TINY_UNET, "vae": skeleton.TINY_VAE, "text_encoder": skeleton.TINY_TEXT}
LIGHTNING_MODULE = "pytorch_lightning.callbacks.model_checkpoint"


def _ldm_extras(n_positions: int = 77) -> dict:
    """Tensors real SD 1.x files carry besides the three models (training schedule, EMA counters,
    the CLIP position ids that transformers 5 no longer stores)."""
    return {
        "betas": torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64),
        "alphas_cumprod": torch.linspace(1.0, 0.0, 1000, dtype=torch.float64),
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(470000, dtype=torch.int32),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(n_positions)[None],
    }


@contextlib.contextmanager
def fake_lightning():
    """A `ModelCheckpoint` class importable as pytorch_lightning's, only while saving a test .ckpt."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", LIGHTNING_MODULE]
    saved = {name: sys.modules.get(name) for name in names}
    module = types.ModuleType(LIGHTNING_MODULE)

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = LIGHTNING_MODULE
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    sys.modules.update({names[0]: types.ModuleType(names[0]), names[1]: types.ModuleType(names[1]), names[2]: module})
    try:
        yield ModelCheckpoint
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def _save_lightning_ckpt(path, state_dict: dict) -> None:
    """Save like sd-v1-4.ckpt: Lightning's dict with the weights, counters, and a callback class key."""
    with fake_lightning() as callback_cls:
        callback = callback_cls()
        callback.monitor = "val/loss_simple_ema"
        torch.save(
            {
                "epoch": 6,
                "global_step": 470000,
                "pytorch-lightning_version": "1.4.2",
                "state_dict": state_dict,
                "callbacks": {callback_cls: {"best_model_score": torch.tensor(0.1), "dirpath": "/logs"}},
                "hparams": {"instance": callback},
            },
            path,
        )


@pytest.fixture(scope="module")
def tiny_models():
    return skeleton.tiny_components(seed=3)


@pytest.fixture(scope="module")
def tiny_ldm(tiny_models):
    """A tiny SD-architecture checkpoint state dict in the LDM layout (as sd-v1-4.ckpt names keys)."""
    sd = ldm_state_dict(tiny_models.unet, tiny_models.vae, tiny_models.text_encoder, TINY_CONFIGS)
    return {**{k: v.clone() for k, v in sd.items()}, **_ldm_extras()}


def _assert_same_weights(expected, loaded) -> None:
    """Every tensor of the three networks equal, bit for bit, with the same names."""
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(expected, name).state_dict(), getattr(loaded, name).state_dict()
        assert list(a) == list(b), name
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"{name}.{key}"


@pytest.fixture
def save_lightning_ckpt():
    """save_lightning_ckpt(path, state_dict): write a .ckpt shaped like sd-v1-4.ckpt."""
    return _save_lightning_ckpt


@pytest.fixture
def assert_same_weights():
    """assert_same_weights(expected, loaded): the three networks of two SDComponents are identical."""
    return _assert_same_weights


def _save_folder(components, folder, tokenizer=True, scheduler=True):
    """Write SDComponents as a diffusers-layout model folder."""
    components.unet.save_pretrained(folder / "unet")
    components.vae.save_pretrained(folder / "vae")
    components.text_encoder.save_pretrained(folder / "text_encoder")
    if tokenizer:
        components.tokenizer.save_pretrained(folder / "tokenizer")
    if scheduler:
        components.scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tiny_models, tmp_path_factory):
    """The tiny models saved as a complete diffusers folder (shared; tests must not modify it)."""
    return _save_folder(tiny_models, tmp_path_factory.mktemp("tiny-folder"))


@pytest.fixture
def save_folder():
    """save_folder(components, folder, tokenizer=True, scheduler=True): write a diffusers folder."""
    return _save_folder


@pytest.fixture
def ldm_extras():
    """ldm_extras(): the non-model tensors of a real SD 1.x checkpoint (see _ldm_extras)."""
    return _ldm_extras


@pytest.fixture
def tiny_configs():
    """Architecture configs of the tiny models by component, for loading tiny LDM files."""
    return TINY_CONFIGS
