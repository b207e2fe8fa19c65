"""attach / extract / merge at the pipeline level, several adapters, and all-or-nothing failures."""
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import apply, canonical as C
from sdlora.lora import lora_modules
from sdlora.models.names import model_te_path


def _weights(components):
    return {f"{c}.{k}": v.detach().clone() for c, m in apply.networks(components).items()
            for k, v in m.state_dict().items()}


def _layer_weight(components, component, path):
    model = apply.networks(components)[component]
    path = model_te_path(model, path) if component == "text_encoder" else path
    module = model.get_submodule(path)
    return (module.base if hasattr(module, "base") else module).weight


def test_attach_then_extract_gives_the_dict_back(tiny, lora_maker):
    lora = lora_maker(tiny, ("unet-transformer", "unet-conv"), ranks=(4, 2, 1), alphas=(3.0, 0.5), dora=True)
    names = apply.attach(tiny, lora, adapter="style")
    assert sorted(names) == sorted({f"{c}.{p}" for c, p in C.group(lora)})
    back = apply.extract(tiny, "style")
    assert set(back) == set(lora) and all(torch.equal(back[k], lora[k]) for k in lora)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in back.values())


def test_multiplier_zero_and_detach_give_the_base_model_exactly(tiny, probe, lora_maker, diff):
    base, weights = probe(tiny.unet, tiny.text_encoder), _weights(tiny)
    apply.attach(tiny, lora_maker(tiny), multiplier=0.0)
    assert all(torch.equal(a, b) for a, b in zip(probe(tiny.unet, tiny.text_encoder), base))
    apply.set_multiplier(tiny, "default", 1.0)
    assert diff(probe(tiny.unet, tiny.text_encoder)[0], base[0]) > 1e-2
    apply.detach(tiny)
    assert not lora_modules(tiny.unet) and not lora_modules(tiny.text_encoder)
    after = _weights(tiny)
    assert set(after) == set(weights) and all(torch.equal(after[k], weights[k]) for k in weights)


def test_two_adapters_add_their_deltas_and_merge_unmerge_round_trip(tiny, probe, lora_maker, diff):
    a = lora_maker(tiny, ("unet-attn",), seed=1, ranks=(4, 2), alphas=(3.0,))
    b = lora_maker(tiny, ("unet-transformer", "unet-conv"), seed=2, ranks=(2,), alphas=(1.0, 4.0))
    before = {m: _layer_weight(tiny, *m).detach().clone() for m in C.group(a) | C.group(b)}
    apply.attach(tiny, a, adapter="a", multiplier=0.7)
    apply.attach(tiny, b, adapter="b", multiplier=-0.4)
    attached = probe(tiny.unet, tiny.text_encoder)
    assert apply.merge(tiny) == len(before)
    merged = probe(tiny.unet, tiny.text_encoder)
    errors = [diff(x, y) for x, y in zip(attached, merged)]
    print(f"merged vs attached (two adapters): unet {errors[0]:.2e}, text {errors[1]:.2e}")
    assert max(errors) < 1e-4
    worst = 0.0
    for module, w0 in before.items():  # W' = W + 0.7 dA + (-0.4) dB, each delta = alpha/r up @ down
        expected = torch.zeros_like(w0).flatten(1)
        for lora, mult in ((a, 0.7), (b, -0.4)):
            if module in C.group(lora):
                expected += mult * C.delta(C.group(lora)[module])
        worst = max(worst, diff(_layer_weight(tiny, *module).flatten(1) - w0.flatten(1), expected))
    assert worst < 1e-5
    apply.unmerge(tiny)
    assert max(diff(x, y) for x, y in zip(probe(tiny.unet, tiny.text_encoder), attached)) < 1e-5
    assert max(diff(_layer_weight(tiny, *m), w0) for m, w0 in before.items()) < 1e-6


def test_merged_block_gives_the_attached_outputs_and_unmerges_even_on_an_error(tiny, probe, lora_maker, diff):
    apply.attach(tiny, lora_maker(tiny, ("unet-transformer", "unet-conv")), multiplier=0.8)
    attached = probe(tiny.unet, tiny.text_encoder)
    with apply.merged(tiny):
        assert all(w.merged for w in lora_modules(tiny.unet).values())
        assert max(diff(x, y) for x, y in zip(probe(tiny.unet, tiny.text_encoder), attached)) < 1e-4
    assert not any(w.merged for w in lora_modules(tiny.unet).values())
    with pytest.raises(RuntimeError), apply.merged(tiny):
        raise RuntimeError("sampling failed")
    assert not any(w.merged for w in lora_modules(tiny.unet).values())
    assert max(diff(x, y) for x, y in zip(probe(tiny.unet, tiny.text_encoder), attached)) < 1e-5


def test_detach_one_adapter_keeps_the_other(tiny, probe, lora_maker):
    a, b = lora_maker(tiny, seed=1), lora_maker(tiny, seed=2)
    apply.attach(tiny, a, adapter="a")
    only_a = probe(tiny.unet, tiny.text_encoder)
    apply.attach(tiny, b, adapter="b")
    apply.detach(tiny, "b")
    assert apply.adapters(tiny) == {"a"}
    assert all(torch.equal(x, y) for x, y in zip(probe(tiny.unet, tiny.text_encoder), only_a))
    with pytest.raises(SdloraError, match="no LoRA adapter named 'b'"):
        apply.detach(tiny, "b")


def test_bake_leaves_a_plain_model_with_the_merged_weights(tiny, probe, lora_maker, diff):
    apply.attach(tiny, lora_maker(tiny, ("unet-transformer", "unet-conv"), dora=True), multiplier=0.8)
    attached = probe(tiny.unet, tiny.text_encoder)
    apply.bake(tiny)
    assert not lora_modules(tiny.unet) and not lora_modules(tiny.text_encoder)
    assert max(diff(x, y) for x, y in zip(probe(tiny.unet, tiny.text_encoder), attached)) < 1e-4


def test_failures_leave_the_model_untouched(tiny, lora_maker):
    good = lora_maker(tiny)
    weights = _weights(tiny)
    te_key = next(k for k in good if k.startswith("text_encoder") and k.endswith(C.DOWN))
    wrong_shape = {**good, te_key: torch.zeros(good[te_key].shape[0], 999)}
    with pytest.raises(SdloraError, match="text_encoder: .*shape mismatch"):
        apply.attach(tiny, wrong_shape)  # the UNet part was attached first and must be rolled back
    unknown = {**good, "unet.mid_block.nothing.lora_down.weight": torch.zeros(2, 4),
               "unet.mid_block.nothing.lora_up.weight": torch.zeros(4, 2)}
    with pytest.raises(SdloraError, match="unet: .*mid_block.nothing"):
        apply.attach(tiny, unknown)
    assert not lora_modules(tiny.unet) and not lora_modules(tiny.text_encoder)
    assert all(torch.equal(v, weights[k]) for k, v in _weights(tiny).items())
    apply.attach(tiny, good, adapter="x")
    with pytest.raises(SdloraError, match="already attached"):
        apply.attach(tiny, good, adapter="x")
    with pytest.raises(SdloraError, match="no LoRA adapter named 'y'"):
        apply.extract(tiny, "y")
