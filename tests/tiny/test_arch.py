import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from sdlora.errors import SdloraError
from sdlora.tiny.arch import MICRO, SD_TINY, arch_config, build_models, param_count
from sdlora.tiny.save import MAX_BYTES


@pytest.fixture(scope="module")
def sd_tiny():
    with torch.device("meta"):  # shapes and counts only
        return build_models("sd-tiny")


def test_sd_tiny_uses_sd14_classes_with_cross_attention(sd_tiny):
    unet, vae, text_encoder = sd_tiny
    assert isinstance(unet, UNet2DConditionModel) and isinstance(vae, AutoencoderKL)
    assert isinstance(text_encoder, CLIPTextModel)
    assert any("attn2" in name for name, _ in unet.named_modules())  # cross-attention layers
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size
    assert vae.config.latent_channels == 4 and text_encoder.config.vocab_size == 49408


def test_vae_downsamples_4x_to_the_unet_sample_size():
    config = SD_TINY["vae"]
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    assert factor == 4 and config["sample_size"] // factor == SD_TINY["unet"]["sample_size"] == 16


def test_fp16_weights_fit_the_20_mb_budget(sd_tiny):
    counts = [param_count(m) for m in sd_tiny]
    assert counts == [4_731_364, 954_567, 3_367_104]  # unet, vae, text encoder
    assert 2 * sum(counts) < MAX_BYTES


def test_micro_is_the_same_architecture_smaller():
    unet, vae, text_encoder = build_models("micro")
    assert set(MICRO) == set(SD_TINY)
    assert type(unet).__name__ == "UNet2DConditionModel"
    assert unet.config.down_block_types == tuple(SD_TINY["unet"]["down_block_types"]) or \
        list(unet.config.down_block_types) == SD_TINY["unet"]["down_block_types"]
    assert param_count(unet) < 500_000 and param_count(vae) < 100_000
    out = unet(torch.randn(1, 4, 16, 16), 10, torch.randn(1, 77, text_encoder.config.hidden_size)).sample
    assert out.shape == (1, 4, 16, 16)


def test_build_is_seeded():
    a, b = build_models("micro", seed=3)[0], build_models("micro", seed=3)[0]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_arch_is_a_user_error():
    with pytest.raises(SdloraError, match="sd-tiny"):
        arch_config("huge")
