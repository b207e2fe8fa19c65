"""model_weights: single files and folders read one module at a time give the weights loading gives."""
import shutil

import pytest
import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.models.checkpoint_io import write_safetensors
from sdlora.models.component_files import weight_files
from sdlora.models.model_weights import ModelWeights, open_weights
from sdlora.models.single_file import architecture_metadata


def _layers(components):
    for component in ("unet", "text_encoder"):
        for path, module in getattr(components, component).named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                yield component, path


def _assert_same(weights: ModelWeights, models) -> None:
    """Every Linear/Conv weight of the UNet and text encoder as in the networks that were saved."""
    for component, path in _layers(models):
        got, want = weights.weight(component, path), getattr(models, component).get_submodule(path).weight
        assert got.shape == want.shape and torch.equal(got.float(), want), f"{component}.{path}"
    assert weights.weight("unet", "no.such.module") is None


def test_a_single_file_is_read_lazily(tmp_path, tiny_ldm, tiny_configs, tiny_models):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tiny_ldm, architecture_metadata(tiny_configs))
    weights = open_weights(path)
    assert weights.lazy and all(p.is_meta for p in weights.unet.parameters())
    _assert_same(weights, tiny_models)
    layers = len(list(_layers(weights)))
    assert weights.reads == layers < len(tiny_ldm)  # one read per weight asked for, of all the file's


def test_a_folder_is_read_lazily(tiny_folder, tiny_models):
    weights = open_weights(tiny_folder)
    assert weights.lazy and all(p.is_meta for p in weights.text_encoder.parameters())
    _assert_same(weights, tiny_models)


@pytest.mark.parametrize("names, chosen", [
    (["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"], [0]),
    (["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], [0, 1]),
    (["diffusion_pytorch_model.fp16.safetensors", "config.json"], [0]),
    (["diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors"], None),
    (["config.json", "diffusion_pytorch_model.ema.safetensors"], None),
])  # fmt: skip
def test_weight_files_are_the_ones_diffusers_loads(tmp_path, names, chosen):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    got = weight_files(tmp_path)
    assert got == (None if chosen is None else [tmp_path / names[i] for i in chosen])


def _break(folder, how):
    if how == "config":
        (folder / "unet" / "config.json").write_text("{nope")
    elif how == "no-weights":
        for path in (folder / "unet").glob("*.safetensors"):
            path.unlink()
    else:  # a truncated weight file
        path = next((folder / "text_encoder").glob("*.safetensors"))
        path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize("how, message", [("config", "unet/config.json: not a buildable unet config"),
                                          ("no-weights", "unet: no weight files"),
                                          ("truncated", "model.safetensors: not a readable .safetensors file")])
def test_a_broken_folder_is_one_error_line(tmp_path, tiny_folder, how, message):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_folder, folder)
    _break(folder, how)
    with pytest.raises(SdloraError, match=message) as err:
        open_weights(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_a_lora_file_is_not_a_model(tmp_path):
    path = tmp_path / "lora.safetensors"
    write_safetensors(path, {"lora_unet_x.lora_down.weight": torch.zeros(1, 2)})
    with pytest.raises(SdloraError, match="lora.safetensors: this is a LoRA file"):
        open_weights(path)


def test_a_low_precision_unet_is_read_one_tensor_at_a_time(tiny_folder):
    """load_folder's bf16 UNet (read_network: each tensor read and cast alone) is diffusers' own bf16 load."""
    from diffusers import UNet2DConditionModel

    from sdlora.models.folder import load_folder

    ours = load_folder(tiny_folder, torch.bfloat16).unet
    theirs = UNet2DConditionModel.from_pretrained(tiny_folder / "unet", torch_dtype=torch.bfloat16)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and all(a[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert not ours.training and public(ours.config) == public(theirs.config)


def test_a_unet_with_other_keys_is_left_to_diffusers(tmp_path, tiny_folder):
    """Keys that are not the network's own (an older layout diffusers converts) -> None, not a half-load."""
    from sdlora.models.architecture import build_unet
    from sdlora.models.component_files import read_network

    part = tmp_path / "unet"
    shutil.copytree(tiny_folder / "unet", part)
    weights = part / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file
    tensors = load_file(weights)
    tensors["conv_in.old_name"] = tensors.pop("conv_in.weight")
    write_safetensors(weights, tensors)
    assert read_network(part, build_unet, torch.bfloat16) is None
    assert read_network(tiny_folder / "unet", build_unet, torch.bfloat16) is not None


def test_the_empty_unet_of_each_model_form(tmp_path, tiny_folder, tiny_ldm, tiny_configs, tiny_models):
    """empty_unet: the architecture (meta tensors) of a folder or a single .safetensors, None for a .ckpt."""
    from sdlora.models.model_weights import empty_unet

    size = sum(p.numel() for p in tiny_models.unet.parameters())
    single = tmp_path / "model.safetensors"
    write_safetensors(single, tiny_ldm, architecture_metadata(tiny_configs))
    for model in (tiny_folder, single):
        unet = empty_unet(model)
        assert all(p.is_meta for p in unet.parameters()) and sum(p.numel() for p in unet.parameters()) == size
    pickle = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, pickle)
    assert empty_unet(pickle) is None
