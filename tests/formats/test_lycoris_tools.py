"""LoHa / LoKr files through the file tools: info, convert (diffusers refused with the ways that work),
resize to a plain LoRA (SVD, retained energy), merge into the model; on the tiny SD model."""
import copy

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import apply
from sdlora.formats import canonical as C
from sdlora.formats.diffusers import to_diffusers
from sdlora.formats.info import describe
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.formats.merge_model import merge_loras
from sdlora.formats.modules import component_paths
from sdlora.formats.resize import resize_lora
from sdlora.lora import inject, lora_modules
from sdlora.models import tiny_components

# LoHa on attention, LoKr (Tucker core) on the resnet convs, LoRA elsewhere (proj_in/out, feed-forward)
OVERRIDES = {r".*attn[12]\..*": {"algorithm": "loha"},
             r".*resnets\.\d+\.conv[12]": {"algorithm": "lokr", "factor": 4, "use_tucker": True}}


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_components(0)


@pytest.fixture(scope="module")
def factored(tiny_model):
    """(canonical LoHa/LoKr/LoRA dict, the model it was extracted from)."""
    model = copy.deepcopy(tiny_model)
    inject(model.unet, ["unet-transformer", "unet-conv"], 4, 2.0, overrides=OVERRIDES)
    inject(model.text_encoder, "text-encoder", 2, 1.0, algorithm="loha")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in (model.unet, model.text_encoder):
            for wrapper in lora_modules(net).values():
                for p in wrapper.adapters.parameters():
                    p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return apply.extract(model), model


def test_info_names_the_algorithms_and_lycoris_metadata(factored, tiny_model, tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_lora_file(path, factored[0], {}, "kohya")
    info = describe(path, module_paths=component_paths(tiny_model.unet, tiny_model.text_encoder))
    assert set(info["components"]["unet"]["algorithms"]) == {"lora", "loha", "lokr"}
    assert info["components"]["text_encoder"]["algorithms"] == {"loha": 12}
    assert info["metadata"]["ss_network_module"] == "lycoris.kohya"
    assert '"algo": "loha"' in info["metadata"]["ss_network_args"] and '"use_tucker": "True"' in info["metadata"]["ss_network_args"]


def test_diffusers_format_is_refused_with_the_ways_that_work(factored):
    with pytest.raises(SdloraError, match=r"LoHa/LoKr.*merge-into-model.*resize"):
        to_diffusers(factored[0])


def test_resize_makes_a_plain_lora_that_acts_alike(factored, tiny_model, probe, diff):
    lora, trained = factored
    exact, report = resize_lora(lora, 4096)  # every module at full rank: the same weight change
    assert all(not k.rsplit(".", 1)[-1].startswith(("hada_", "lokr_")) for k in exact)
    assert report.min_energy == pytest.approx(1.0, abs=1e-6)
    model = copy.deepcopy(tiny_model)
    apply.attach(model, exact)
    expected = probe(trained.unet, trained.text_encoder)
    for got, want in zip(probe(model.unet, model.text_encoder), expected):
        assert diff(got, want) < 1e-4
    to_diffusers(exact)  # now diffusers can hold it

    small, report = resize_lora(lora, 2)
    assert 0.0 < report.energy < 1.0 and {C.rank(p) for p in C.group(small).values()} <= {1, 2}


def test_merge_into_model_bakes_loha_and_lokr(factored, tiny_model, probe, diff, tmp_path):
    lora, trained = factored
    path = tmp_path / "mixed.safetensors"
    save_lora_file(path, lora, {}, "kohya", torch.float32)
    model = copy.deepcopy(tiny_model)
    paths = component_paths(tiny_model.unet, tiny_model.text_encoder)
    merge_loras(model, [(load_lora_file(path, module_paths=paths)[0], 1.0)])
    assert not lora_modules(model.unet)
    for got, want in zip(probe(model.unet, model.text_encoder), probe(trained.unet, trained.text_encoder)):
        assert diff(got, want) < 1e-4
