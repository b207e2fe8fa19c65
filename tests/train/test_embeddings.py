"""Pivotal tuning on the tiny model: new tokens train beside the LoRA, the embedding table stays bit-exact,
the stop step, the files (bundled and standalone), and a bitwise resume of the new rows."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from sdlora.config import load_config
from sdlora.errors import SdloraError
from sdlora.formats import load_lora_file
from sdlora.models import tiny_components
from sdlora.train import embeddings as E
from sdlora.train import train
from sdlora.train.build import build_run
from sdlora.train.checkpoint import find_checkpoints, load_state
from sdlora.train.entry import resolve_config
from sdlora.train.export import save_lora
from sdlora.train.loop import finish, run_loop
from sdlora.train.optim import build_scheduler
from sdlora.train.setup import make_accelerator, release_accelerator

from .conftest import FAST

TOKENS = ["<s0>", "<s1>"]


def read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def pivotal_cfg(tiny_model, tiny_data, out, **flags):
    sets = [f'data.sources=[{{path = "{tiny_data}", caption_prefix = "<s0><s1>, "}}]',
            f"embeddings.tokens={json.dumps(TOKENS)}", "embeddings.init_word=square"]
    merged = {**FAST, "model.name": str(tiny_model), "save.output_dir": str(out), "train.steps": 2,
              "embeddings.stop_step": 1, "save.every_n_steps": 1, "save.keep_last": 0, "train.weight_decay": 0.1,
              **flags}
    return resolve_config(None, sets, merged)


def rows(state: dict) -> torch.Tensor:
    found = [v for k, v in state["lora"].items() if k.endswith("token_embedding.added.weight")]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def pivotal(tiny_model, tiny_data, tmp_path_factory):
    """A 2-step run (embeddings stop after step 1, a checkpoint every step); the live components kept."""
    cfg = pivotal_cfg(tiny_model, tiny_data, tmp_path_factory.mktemp("pivotal") / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the suite's per-test fixture, which a module fixture runs before: bitwise
    acc = make_accelerator(cfg)
    run = build_run(cfg, acc, None)
    try:
        finish(run, run_loop(run, None))
    finally:
        run.close()
        release_accelerator(acc)  # before other runs make theirs (Accelerate's state is shared)
        torch.set_num_threads(threads)
    return cfg, run


def test_new_tokens_train_and_the_embedding_table_stays_bit_exact(pivotal):
    cfg, run = pivotal
    table = run.components.text_encoder.get_input_embeddings()
    fresh = tiny_components(0).text_encoder.get_input_embeddings().weight  # what the tiny_model folder holds
    assert torch.equal(table.base.weight, fresh) and not table.base.weight.requires_grad
    assert run.components.tokenizer.convert_tokens_to_ids(TOKENS) == [fresh.shape[0], fresh.shape[0] + 1]
    start = E.initial_vectors(cfg, run.components)  # init_word reads the frozen table
    assert not torch.equal(table.added.weight.detach(), start)  # they learned
    trainable = [k for k in load_state(find_checkpoints(run.run_dir)[-1])["lora"] if k.startswith("text_encoder.")]
    assert len(trainable) == 1 and trainable[0].endswith("token_embedding.added.weight")  # nothing else of the TE


def test_stop_step_freezes_the_rows_while_the_lora_trains_on(pivotal):
    cfg, run = pivotal
    states = {c.step: load_state(c) for c in find_checkpoints(run.run_dir)}
    assert sorted(states) == [1, 2]
    assert not torch.equal(rows(states[1]), E.initial_vectors(cfg, run.components))  # step 1 trained them
    assert torch.equal(rows(states[1]), rows(states[2]))  # embeddings.stop_step = 1
    unet = [k for k in states[2]["lora"] if k.startswith("unet.")]
    assert any(not torch.equal(states[1]["lora"][k], states[2]["lora"][k]) for k in unet)


def test_files_bundle_the_tokens_and_write_a_standalone_embedding(pivotal):
    _, run = pivotal
    final = rows(load_state(find_checkpoints(run.run_dir)[-1]))
    state, _ = read(run.run_dir / "run.safetensors")
    for i, token in enumerate(TOKENS):
        assert torch.equal(state[f"bundle_emb.{token}.string_to_param.*"], final[i:i + 1].half())
    lora, _, fmt = load_lora_file(run.run_dir / "run.safetensors")  # the LoRA reader skips the bundle
    assert fmt == "kohya" and not any("bundle" in k for k in lora)
    alone, meta = read(run.run_dir / "run.emb.safetensors")
    assert list(alone) == ["emb_params"] and torch.equal(alone["emb_params"], final.half())
    assert json.loads(meta["sdlora_tokens"]) == {"<s0>": 1, "<s1>": 1}
    assert (run.run_dir / "checkpoints" / "step-000002" / "run-000002.emb.safetensors").is_file()


@pytest.mark.parametrize("off", ["bundle", "standalone"])
def test_bundle_and_standalone_can_be_switched_off(pivotal, tmp_path, off):
    _, run = pivotal
    cfg = pivotal_cfg(run.cfg.model.name, "x", tmp_path / "run", **{f"embeddings.{off}": False})
    paths = save_lora(tmp_path, run.components, cfg, {})
    state, _ = read(tmp_path / "run.safetensors")
    assert any(k.startswith("bundle_emb.") for k in state) == (off != "bundle")
    assert (tmp_path / "run.emb.safetensors").is_file() == (off != "standalone") == (len(paths) == 2)


def test_resume_restores_the_new_rows_bitwise(pivotal, tiny_model, tiny_data, tmp_path):
    _, run = pivotal
    cfg = pivotal_cfg(tiny_model, tiny_data, tmp_path / "resumed")
    result = train(cfg, resume=str(find_checkpoints(run.run_dir)[0].path))  # continue from step 1
    assert result.step == 2
    a, b = load_state(find_checkpoints(run.run_dir)[-1])["lora"], load_state(find_checkpoints(tmp_path / "resumed")[-1])["lora"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_embeddings_have_their_own_rate_and_stop(pivotal):
    cfg, run = pivotal
    groups = {g["name"]: g for g in run.optimizer.param_groups}
    assert groups["embeddings"]["params"] == [run.components.text_encoder.get_input_embeddings().added.weight]
    assert groups["embeddings"]["stop_step"] == 1 and "text_encoder" not in groups
    assert groups["embeddings"]["initial_lr"] == cfg.embeddings.lr != cfg.train.text_encoder_lr
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.5},
                           {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.25, "stop_step": 2}])
    scheduler = build_scheduler(opt, cfg.train, 10)
    seen = []
    for _ in range(4):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    assert seen == [[0.5, 0.25], [0.5, 0.25], [0.5, 0.0], [0.5, 0.0]]


def test_initial_vectors_from_a_word_or_seeded_random():
    components = tiny_components(0)
    table = components.text_encoder.get_input_embeddings().weight
    ids = components.tokenizer("square", add_special_tokens=False)["input_ids"]
    cfg = load_config(None, ['embeddings.tokens=["<a>", "<b>"]', "embeddings.init_word=square"])
    assert torch.equal(E.initial_vectors(cfg, components), table[ids].mean(0).expand(2, -1))
    cfg = load_config(None, ['embeddings.tokens=["<a>", "<b>"]'])
    first, again = E.initial_vectors(cfg, components), E.initial_vectors(cfg, components)
    assert torch.equal(first, again) and not torch.equal(first[0], first[1])
    assert first.std() == pytest.approx(float(table.detach().std()), rel=0.5)


@pytest.mark.parametrize("sets, match", [
    (['embeddings.tokens=["a b"]'], "embeddings.tokens"),
    (['embeddings.tokens=["<s.1>"]'], "embeddings.tokens"),
    (['embeddings.tokens=["<S>", "<s>"]'], r"embeddings.tokens .* twice"),
    (["embeddings.lr=-1"], "embeddings.lr"),
    (["embeddings.stop_step=-1"], "embeddings.stop_step"),
])
def test_bad_settings_name_their_key(sets, match):
    with pytest.raises(SdloraError, match=match):
        load_config(None, sets)


def test_a_token_the_tokenizer_knows_is_refused():
    components = tiny_components(0)
    cfg = load_config(None, ['embeddings.tokens=["<new>", "cat"]'])
    with pytest.raises(SdloraError, match=r"embeddings.tokens: 'cat' is already a token"):
        E.install(cfg, components)
    assert E.install(load_config(None, []), components) is None  # off by default
