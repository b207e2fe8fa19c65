"""The EMA of the LoRA weights (train/ema.py): the schedule, the update, state and swap, and a real run:
`-ema` files in every format, samples with the EMA, and a resumed run whose EMA equals the uninterrupted one."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from torch import nn

from sdlora.config import load_config
from sdlora.errors import SdloraError
from sdlora.train import train
from sdlora.train.checkpoint import find_checkpoints, load_state
from sdlora.train.ema import EMA, ema_decay

BASE = ['data.sources=[{path = "imgs"}]']


def read_file(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize("n", [0, 1, 2, 9, 100, 5000, 10**6])
def test_decay_schedule_is_the_power_law_warmup_capped_at_decay(n):
    assert ema_decay(n, 0.999, warmup=True) == pytest.approx(min(0.999, (1 + n) / (10 + n)), rel=0, abs=1e-15)
    assert ema_decay(n, 0.999, warmup=False) == 0.999
    assert ema_decay(0, 0.999, warmup=True) == pytest.approx(0.1) and ema_decay(1, 0.5, warmup=True) == 0.5 * 4 / 11


def _models(seed=0):
    torch.manual_seed(seed)
    unet, te = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), nn.Linear(2, 2)
    te.bias.requires_grad_(False)  # frozen tensors are not averaged
    return {"unet": unet, "text_encoder": te}


def _perturb(models, step):
    with torch.no_grad():
        for i, p in enumerate(q for m in models.values() for q in m.parameters()):
            p.add_(torch.sin(torch.arange(p.numel(), dtype=torch.float32) + step + i).view_as(p))


def test_update_follows_the_recurrence_every_n_steps_and_only_trainable_tensors():
    models = _models()
    ema = EMA(models, decay=0.8, warmup=True, every_n_steps=2)
    assert sorted(ema.shadow) == ["text_encoder.weight", "unet.0.bias", "unet.0.weight", "unet.1.bias", "unet.1.weight"]
    ref = {k: p.detach().double().clone() for m in [models] for k, p in
           [(f"{c}.{n}", p) for c, mod in m.items() for n, p in mod.named_parameters() if p.requires_grad]}
    n = 0
    for step in range(1, 8):
        _perturb(models, step)
        assert ema.update(models, step) == (step % 2 == 0)
        if step % 2 == 0:  # reference in float64, written out from the formula
            d = min(0.8, (1 + n) / (10 + n))
            live = {f"{c}.{name}": p.detach().double() for c, mod in models.items() for name, p in mod.named_parameters()}
            ref = {k: d * v + (1 - d) * live[k] for k, v in ref.items()}
            n += 1
    assert ema.updates == 3
    for k, v in ref.items():
        assert ema.shadow[k].dtype == torch.float32
        torch.testing.assert_close(ema.shadow[k].double(), v, rtol=1e-6, atol=1e-6)
    live = dict(models["unet"].named_parameters())
    assert not torch.allclose(ema.shadow["unet.0.weight"], live["0.weight"])  # an average, not a copy


def test_state_round_trip_swap_and_mismatch():
    models = _models()
    ema = EMA(models, decay=0.9, on_cpu=True)
    for step in (1, 2, 3):
        _perturb(models, step)
        ema.update(models, step)
    state = ema.state_dict()
    other = EMA(_models(1), decay=0.9)
    other.load_state_dict(state, "ck/state.pt")
    assert other.updates == 3 and all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
    raw = {k: p.detach().clone() for k, p in models["unet"].named_parameters()}
    with ema.applied(models):
        assert torch.equal(models["unet"][0].weight, ema.shadow["unet.0.weight"])
        assert not torch.equal(models["unet"][0].weight, raw["0.weight"])
    assert all(torch.equal(p, raw[k]) for k, p in models["unet"].named_parameters())  # raw back, bitwise
    small = {"unet": nn.Linear(4, 3), "text_encoder": models["text_encoder"]}
    with pytest.raises(SdloraError, match=r"ck/state.pt: the checkpoint's EMA does not match"):
        EMA(small, decay=0.9).load_state_dict(state, "ck/state.pt")


@pytest.mark.parametrize("override, key", [
    ("ema.decay=1.0", "ema.decay"), ("ema.decay=-0.1", "ema.decay"), ("ema.every_n_steps=0", "ema.every_n_steps"),
    ("ema.enabled=3", "ema.enabled"), ("ema.bogus=1", "ema.bogus"), ('log.wandb_project="a/b"', "log.wandb_project"),
    ("log.wandb=maybe", "log.wandb"), ('log.wandb_project=""', "log.wandb_project"),
])
def test_wrong_values_name_the_key(override, key):
    with pytest.raises(SdloraError, match=key.replace(".", r"\.")):
        load_config(None, BASE + [override])


EMA_RUN = {"ema.enabled": True, "ema.decay": 0.5, "ema.warmup": False, "ema.every_n_steps": 2,
           "ema.use_for_samples": True, "save.every_n_steps": 1, "save.keep_last": 0, "save.precision": "fp32",
           "train.lr": 5e-3}
SETS = ['save.formats=["kohya", "native"]', 'validation.prompts=["a red square"]']


@pytest.fixture(scope="module")
def ema_run(tiny_model, tiny_data, fast_flags, tmp_path_factory):
    """One 4-step run: checkpoints at every step (fp32 files), EMA every 2 steps with decay 0.5."""
    from sdlora.train.entry import resolve_config

    root = tmp_path_factory.mktemp("ema")

    def cfg(name):
        merged = {**fast_flags, **EMA_RUN, "model.name": str(tiny_model), "save.output_dir": str(root / name)}
        return resolve_config(None, SETS, merged, [str(tiny_data)])

    threads = torch.get_num_threads()  # module fixtures run before the autouse one-thread fixture:
    torch.set_num_threads(1)  # one thread as in the resumed run (another count sums in another order)
    try:
        return cfg, train(cfg("full"))
    finally:
        torch.set_num_threads(threads)


def test_ema_files_in_every_format_and_checkpoint_with_the_average(ema_run):
    from sdlora.evaluate.sweep import run_files
    from sdlora.formats import load_lora_file

    _, result = ema_run
    run = result.run_dir
    assert {p.name for p in result.lora_files} == {"full.safetensors", "full.native.safetensors",
                                                   "full-ema.safetensors", "full-ema.native.safetensors"}
    assert (run / "checkpoints" / "step-000002" / "full-000002-ema.safetensors").is_file()
    states = {c.step: load_state(c) for c in find_checkpoints(run)}
    assert sorted(states) == [1, 2, 3, 4] and states[4]["ema"]["updates"] == 2 and states[1]["ema"]["updates"] == 0
    assert states[4]["precision"] == "no"  # the mode the run trained in (a resume of `auto` keeps it)
    shadow, lora = states[4]["ema"]["shadow"], {s: states[s]["lora"] for s in states}
    ups = [k for k in shadow if k.endswith(".up.weight")]
    assert ups and all(torch.count_nonzero(lora[4][k]) for k in ups)
    for k in ups:  # `up` starts at 0: after updates at steps 2 and 4 (decay 0.5) ema = 0.25 up_2 + 0.5 up_4
        torch.testing.assert_close(shadow[k], 0.25 * lora[2][k] + 0.5 * lora[4][k], rtol=1e-6, atol=1e-7)
    ema_file, _, _ = load_lora_file(run / "full-ema.safetensors")
    raw_file, _, _ = load_lora_file(run / "full.safetensors")
    for k in ups:  # the EMA file holds the shadow (fp32 save), the raw file the weights
        canon = k.replace(".adapters.default.up.weight", ".lora_up.weight")
        assert torch.equal(ema_file[canon], shadow[k]) and torch.equal(raw_file[canon], lora[4][k])
    _, meta = read_file(run / "full-ema.safetensors")
    assert json.loads(meta["sdlora_ema"]) == {"decay": 0.5, "warmup": False, "every_n_steps": 2, "updates": 2}
    assert "sdlora_ema" not in read_file(run / "full.safetensors")[1]
    assert (run / "samples" / "step-000004-ema.png").is_file() and not (run / "samples" / "step-000004.png").exists()
    assert "EMA of the LoRA weights: decay 0.5, every 2 steps, kept on cpu, used for the samples" in (
        run / "train.log").read_text()
    assert not any(p.stem.endswith("-ema") for p in run_files(run))  # a checkpoint sweep compares the raw files


def test_resumed_run_has_the_uninterrupted_runs_ema_bitwise(ema_run):
    cfg, result = ema_run
    parted = cfg("parted")
    parted.validation.prompts = []  # may change on resume; sampling is not what this test is about
    full_ckpt = result.run_dir / "checkpoints" / "step-000003"
    shutil.copytree(full_ckpt, parted.save.output_dir + "/checkpoints/step-000003")  # stopped after step 3
    second = train(parted, resume="latest")
    assert second.step == 4
    a = load_state(find_checkpoints(result.run_dir)[-1])["ema"]
    b = load_state(find_checkpoints(parted.save.output_dir)[-1])["ema"]
    assert a["updates"] == b["updates"] == 2
    assert a["shadow"].keys() == b["shadow"].keys() and all(torch.equal(a["shadow"][k], b["shadow"][k]) for k in a["shadow"])
    fa, _ = read_file(result.run_dir / "full-ema.safetensors")
    fb, _ = read_file(parted.save.output_dir + "/parted-ema.safetensors")
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
