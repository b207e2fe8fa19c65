import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
import torch

from sdlora.errors import SdloraError
from sdlora.formats import apply
from sdlora.generate.loras import LoraSpec, adapter_name, attach_loras, parse_lora_arg, set_weights, short_hash
from sdlora.generate.prompts import PromptSpec
from sdlora.generate.sampling import Sampler

SPEC = PromptSpec("a green triangle", "", seed=3, steps=2, cfg=4.0, width=32, height=32)


@pytest.mark.parametrize("text, path, weight", [
    ("style.safetensors", "style.safetensors", 1.0),
    ("style.safetensors:0.8", "style.safetensors", 0.8),
    ("dir/style.safetensors:-0.5", "dir/style.safetensors", -0.5),
    ("style.safetensors:1e-1", "style.safetensors", 0.1),
    (r"C:\loras\style.safetensors", r"C:\loras\style.safetensors", 1.0),
    (r"C:\loras\style.safetensors:0.3", r"C:\loras\style.safetensors", 0.3),
    ("odd:name.safetensors", "odd:name.safetensors", 1.0),
])
def test_parse_lora_arg(text, path, weight):
    assert parse_lora_arg(text) == LoraSpec(Path(path), weight)


def test_short_hash_is_a1111s_tensor_data_hash(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    tensors = {"x": torch.arange(6, dtype=torch.float32)}
    save_file(tensors, a, metadata={"note": "one"})
    save_file(tensors, b, metadata={"note": "a different, longer header"})
    blob = a.read_bytes()
    data = blob[8 + int.from_bytes(blob[:8], "little"):]
    assert short_hash(a) == hashlib.sha256(data).hexdigest()[:12]
    assert short_hash(a) == short_hash(b)  # metadata does not change the hash
    other = tmp_path / "c.bin"
    other.write_bytes(b"abc")
    assert short_hash(other) == hashlib.sha256(b"abc").hexdigest()[:12]


def test_adapter_names_are_unique_and_dot_free():
    assert adapter_name(Path("my.style.v2.safetensors"), set()) == "my_style_v2"
    assert adapter_name(Path("x/style.safetensors"), {"style"}) == "style_2"
    assert adapter_name(Path("y/style.safetensors"), {"style", "style_2"}) == "style_3"


def test_weight_zero_is_pixel_identical_to_no_lora(components, tiny_model):
    sampler = Sampler(components)
    before = sampler.samples(SPEC)[0]
    loaded = attach_loras(components, [LoraSpec(tiny_model["style"], 0.0)])
    assert loaded[0].format == "kohya" and loaded[0].hash == short_hash(tiny_model["style"])
    assert any(m.startswith("text_encoder.") for m in loaded[0].modules)
    at_zero = sampler.samples(SPEC)[0]
    assert np.array_equal(np.asarray(before.image), np.asarray(at_zero.image))
    set_weights(components, {"style": 1.0})
    assert not np.array_equal(np.asarray(before.image), np.asarray(sampler.samples(SPEC)[0].image))


def test_merged_equals_unmerged_with_two_loras(components, tiny_model):
    loaded = attach_loras(components, [LoraSpec(tiny_model["style"], 0.8), LoraSpec(tiny_model["subject"], 1.0)])
    assert [item.adapter for item in loaded] == ["style", "subject"]
    assert [item.format for item in loaded] == ["kohya", "native"]
    sampler = Sampler(components)
    unmerged = sampler.arrays(SPEC, [3, 4])
    apply.merge(components)
    merged = sampler.arrays(SPEC, [3, 4])
    assert np.abs(merged - unmerged).max() < 1e-4
    apply.unmerge(components)
    assert np.abs(sampler.arrays(SPEC, [3, 4]) - unmerged).max() < 1e-5


def test_each_lora_weight_counts(components, tiny_model):
    attach_loras(components, [LoraSpec(tiny_model["style"], 0.8), LoraSpec(tiny_model["subject"], 1.0)])
    sampler = Sampler(components)
    both = sampler.arrays(SPEC, [3])
    set_weights(components, {"subject": 0.0})
    style_only = sampler.arrays(SPEC, [3])
    set_weights(components, {"style": 0.0, "subject": 1.0})
    subject_only = sampler.arrays(SPEC, [3])
    set_weights(components, {"style": 0.0, "subject": 0.0})
    base = sampler.arrays(SPEC, [3])
    images = [both, style_only, subject_only, base]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(images[i] - images[j]).max() > 1e-3, (i, j)
    # the text-encoder-free LoRA scaled per layer: each layer's delta is weight * (delta at weight 1)
    wrapper = next(w for w in apply.lora_modules(components.unet).values() if "subject" in w.adapters)
    set_weights(components, {"subject": 1.0})
    full = wrapper.delta_weight("subject")
    set_weights(components, {"subject": 0.25})
    assert torch.allclose(wrapper.delta_weight("subject"), 0.25 * full)


def test_missing_lora_file_is_named(components, tmp_path):
    with pytest.raises(SdloraError, match="nope.safetensors: file not found"):
        attach_loras(components, [LoraSpec(tmp_path / "nope.safetensors")])


def test_adapters_take_the_model_dtype(components, tiny_model):
    components.to(dtype=torch.bfloat16)
    attach_loras(components, [LoraSpec(tiny_model["style"], 1.0)])
    dtypes = {p.dtype for net in (components.unet, components.text_encoder)
              for name, p in net.named_parameters() if ".adapters." in name}
    assert dtypes == {torch.bfloat16}
    image = Sampler(components).samples(SPEC)[0].image
    assert image.size == (32, 32) and np.asarray(image).std() > 0


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf", "1e30", "-100.5"])
def test_parse_lora_arg_refuses_non_finite_or_huge_weights(weight):
    with pytest.raises(SdloraError, match=rf"^s\.safetensors:{weight}: the LoRA weight must be a finite number "
                                          "between -100 and 100"):
        parse_lora_arg(f"s.safetensors:{weight}")


def test_files_named_like_module_attributes_attach_and_sample(components, tiny_model, tmp_path):
    names = ["train", "to", "forward", "keys", "training"]
    for name in names:
        shutil.copy(tiny_model["style"], tmp_path / f"{name}.safetensors")
    loaded = attach_loras(components, [LoraSpec(tmp_path / f"{name}.safetensors", 0.2) for name in names])
    assert [item.adapter for item in loaded] == names
    set_weights(components, {"train": 0.0, "to": 0.5})
    image = Sampler(components).samples(SPEC)[0].image
    assert image.size == (32, 32) and np.asarray(image).std() > 0


def test_a_lora_with_non_finite_weights_is_refused_naming_file_and_module(components, tiny_model, tmp_path):
    state = load_file(tiny_model["style"])
    up, down = (sorted(k for k in state if k.endswith(f"lora_{s}.weight"))[0] for s in ("up", "down"))
    state[up][0, 0], state[down][0, 0] = float("nan"), float("inf")
    save_file(state, tmp_path / "broken.safetensors")
    with pytest.raises(SdloraError, match=r"broken\.safetensors: LoRA module .*: lora_(up|down)\.weight holds NaN"):
        attach_loras(components, [LoraSpec(tmp_path / "broken.safetensors")])
    assert not apply.adapters(components)
