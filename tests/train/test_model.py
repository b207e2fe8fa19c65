"""The base-model phase: sizes the model accepts, speed-ups in place (src/sdlora/train/model.py)."""
import pytest
import torch
from torch import nn

from sdlora.config import load_config
from sdlora.errors import SdloraError
from sdlora.models import tiny_components
from sdlora.train.model import check_sizes, size_step, speed_up_unet


def sd14_shapes():
    """Just the configs of full-size SD 1.4's VAE and UNet (no weights)."""
    from types import SimpleNamespace

    from sdlora.models.skeleton import sd14_config

    return SimpleNamespace(**{name: SimpleNamespace(config=SimpleNamespace(**sd14_config(name)))
                              for name in ("vae", "unet")})


def test_size_step_of_sd14_is_64_and_of_the_tiny_model_4():
    """SD 1.x: a VAE with 4 blocks (8x) and a UNet with 4 down blocks (8x): image sides step by 64 px."""
    assert size_step(sd14_shapes()) == 64
    assert size_step(tiny_components(0)) == 4  # 2x VAE, 2x UNet


def test_sizes_the_model_cannot_take_are_refused_naming_the_key():
    sd14 = sd14_shapes()
    check_sizes(load_config(None, ["data.resolution=512", "data.bucket_step=64"]), sd14)
    with pytest.raises(SdloraError, match="data.bucket_step = 8 does not fit this model.*multiples of 64"):
        check_sizes(load_config(None, ["data.resolution=64", "data.bucket_step=8"]), sd14)
    with pytest.raises(SdloraError, match="data.resolution = 72 does not fit"):
        check_sizes(load_config(None, ["data.buckets=false", "data.resolution=72"]), sd14)


def test_speed_up_unet_in_place_keeps_names():
    unet = tiny_components(0).unet
    names = [n for n, _ in unet.named_parameters()]
    speed_up_unet(unet, channels_last=True, compile=True, backend="aot_eager")
    assert [n for n, _ in unet.named_parameters()] == names
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    net = nn.Sequential(nn.Conv2d(3, 3, 1))  # a small module: calls go through torch.compile afterwards
    seen = []
    net[0].register_forward_hook(lambda *_: seen.append(torch.compiler.is_compiling()))
    speed_up_unet(net, channels_last=False, compile=True, backend="eager")
    net(torch.zeros(1, 3, 4, 4))
    assert seen == [True]
    with pytest.raises(SdloraError, match="train.compile_backend"):
        speed_up_unet(unet, channels_last=False, compile=True, backend="no-such-backend")
