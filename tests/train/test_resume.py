"""What may change on resume (a declared table and one pure function), and the resume checks (train/resume.py)."""
from __future__ import annotations

import pytest

from sdlora.config import RunConfig, load_config, to_dict, to_toml
from sdlora.errors import SdloraError
from sdlora.train.resume import (CHANGEABLE_ON_RESUME, changeable, check_resumable, check_state, flatten,
                                 resume_conflicts, saved_config)
from sdlora.typedtree import leaves

BASE = ['data.sources=[{path = "imgs"}]', "train.steps=10"]


@pytest.mark.parametrize("override, allowed", [
    ("train.steps=20", True), ("train.epochs=3", True), ("save.every_n_steps=5", True), ("save.name=other", True),
    ('save.formats=["kohya", "diffusers"]', True), ('validation.prompts=["a cat"]', True),
    ("validation.every_n_steps=4", True), ("log.every_n_steps=1", True), ("data.num_workers=0", True),
    ("train.gradient_checkpointing=true", True), ("train.conv_backend=onednn", True), ("save.output_dir=elsewhere", True),
    ('data.sources=[{path = "imgs"}, {path = "imgs"}]', False), ('data.sources=[{path = "other"}]', False),
    ("lora.rank=8", False), ("lora.unet_preset=unet-attn", False), ("lora.dora=true", False),
    ("train.optimizer=prodigy", False), ("train.seed=1", False), ("train.batch_size=2", False),
    ("train.mixed_precision=bf16", False), ("data.resolution=256", False), ("train.lr=1e-3", False),
    ("model.name=other", False), ("data.cache_latents=off", False), ("train.lr_scheduler=cosine", False),
    ("ema.use_for_samples=true", True), ("ema.enabled=true", False), ("ema.decay=0.9", False), ("log.wandb=true", True),
    ('embeddings.tokens=["<x>"]', False), ("embeddings.lr=1e-2", False), ("embeddings.bundle=false", True),
])
def test_what_may_change_on_resume(override, allowed):
    saved, new = load_config(None, BASE), load_config(None, BASE + [override])
    conflicts = resume_conflicts(to_dict(saved), to_dict(new))
    key = override.split("=")[0]
    assert (conflicts == []) == allowed
    if not allowed:
        assert [k for k, _, _ in conflicts] == [key]
        assert conflicts[0][1] == flatten(to_dict(saved))[key] and conflicts[0][2] == flatten(to_dict(new))[key]


def test_the_table_names_real_keys_only():
    keys = {leaf.key for leaf in leaves(RunConfig)}
    for entry in CHANGEABLE_ON_RESUME:
        assert entry in keys or any(k.startswith(entry) for k in keys), entry
    assert changeable("validation.prompts") and not changeable("validations.x") and not changeable("train.step")


def test_refusal_names_old_and_new_and_the_others():
    saved = load_config(None, BASE)
    new = load_config(None, BASE + ["lora.rank=8", "train.seed=7", "train.steps=99"])
    with pytest.raises(SdloraError, match=r"--resume run: lora.rank cannot change when resuming \(the run has 16, "
                                          r"this command gives 8\) \(also train.seed\)"):
        check_resumable(saved, new, "run")


def test_saved_config_and_state_keys_are_checked():
    cfg = load_config(None, BASE)
    assert saved_config({"config": to_toml(cfg)}, "x") == cfg
    with pytest.raises(SdloraError, match="x: the training state's config is unreadable"):
        saved_config({"config": "[train]\nlr = -1\n"}, "x")
    with pytest.raises(SdloraError, match="state.pt: the training state lacks optimizer, scheduler"):
        check_state({"version": 1, "step": 3, "stream": {}, "lora": {}, "guard": {}, "rng": {}, "config": ""},
                    "state.pt")
