"""Presets: table-driven path matching, and the counts on the full-size SD 1.4 architecture."""
import pytest
import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora import PRESETS, count_trainable, inject, lora_modules, mark_only_lora_trainable, remove
from sdlora.lora.presets import expand_targets, presets_for, resolve_targets
from sdlora.models.skeleton import build_text_encoder, build_unet, sd14_config

TB = "down_blocks.1.attentions.0.transformer_blocks.0"
# path -> the presets that must select it (every other preset must not)
PATH_TABLE = {
    f"{TB}.attn1.to_q": {"unet-attn", "unet-transformer"},
    f"{TB}.attn2.to_k": {"unet-attn", "unet-transformer"},
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0": {"unet-attn", "unet-transformer"},
    f"{TB}.attn1.to_out.1": set(),  # the Dropout after to_out.0
    f"{TB}.ff.net.0.proj": {"unet-transformer"},
    f"{TB}.ff.net.2": {"unet-transformer"},
    "up_blocks.3.attentions.2.proj_in": {"unet-transformer"},
    "down_blocks.0.attentions.1.proj_out": {"unet-transformer"},
    "down_blocks.0.attentions.1.norm": set(),
    "down_blocks.0.resnets.1.conv1": {"unet-conv"},
    "up_blocks.0.resnets.2.conv_shortcut": {"unet-conv"},
    "mid_block.resnets.1.time_emb_proj": {"unet-conv"},
    "down_blocks.2.downsamplers.0.conv": {"unet-conv"},
    "up_blocks.1.upsamplers.0.conv": {"unet-conv"},
    "conv_in": set(),
    "time_embedding.linear_1": set(),
    "encoder.layers.11.self_attn.q_proj": {"text-encoder"},  # transformers 5
    "text_model.encoder.layers.0.self_attn.out_proj": {"text-encoder"},  # transformers 4 / files
    "text_model.encoder.layers.3.mlp.fc2": {"text-encoder"},
    "encoder.layers.3.mlp.fc1": {"text-encoder"},
    "text_model.encoder.layers.3.layer_norm1": set(),
    "text_model.embeddings.token_embedding": set(),
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v": {"unet-attn", "unet-transformer"},
}


@pytest.mark.parametrize("path,presets", PATH_TABLE.items())
def test_preset_table(path, presets):
    assert presets_for(path) == presets
    for preset in presets:  # resolve_targets agrees with presets_for
        assert resolve_targets([preset, "never"], [path, "never"]) == [path, "never"]


def test_targets_may_mix_presets_and_patterns():
    labels = [label for label, _ in expand_targets(["unet-conv", r"conv_(in|out)"])]
    assert labels == ["preset 'unet-conv'", "preset 'unet-conv'", r"pattern 'conv_(in|out)'"]


@pytest.mark.parametrize("targets,message", [
    ("lora-everything", "unknown preset 'lora-everything'; known presets: unet-attn"),
    (["unet-conv"], "preset 'unet-conv' matches no Linear/Conv2d module"),
    (["to_q", "unet-attn"], "pattern 'to_q' matches no"),
    ([3], "targets must be strings"),
])
def test_resolve_errors(targets, message):
    with pytest.raises(SdloraError, match=message):
        resolve_targets(targets, [f"{TB}.attn1.to_q"])


def lora_params(wrapped, rank):
    """rank * (fan_in + out) per module, computed from the base shapes (independent of the adapter code)."""
    return sum(rank * (w.base.weight[0].numel() + w.base.weight.shape[0]) for w in wrapped.values())


@pytest.fixture(scope="module")
def sd14_meta():
    """Full-size SD 1.4 UNet and CLIP text encoder on the meta device (names and shapes, no memory)."""
    with torch.device("meta"):
        return build_unet(sd14_config("unet")), build_text_encoder(sd14_config("text_encoder"))


@pytest.mark.parametrize("preset,modules", [("unet-attn", 128), ("unet-transformer", 192), ("unet-conv", 86)])
def test_unet_preset_counts_on_full_size_sd14(sd14_meta, preset, modules):
    unet = sd14_meta[0]
    wrapped = inject(unet, preset, rank=4)
    try:
        assert len(wrapped) == modules
        trainable = mark_only_lora_trainable(unet)
        assert trainable == lora_params(wrapped, 4) == count_trainable(unet)
        if preset == "unet-attn":
            assert trainable == 797_184
        if preset == "unet-transformer":
            assert sum(isinstance(w.base, nn.Conv2d) for w in wrapped.values()) == 32  # proj_in/out
    finally:
        remove(unet)
    assert not lora_modules(unet)


class Transformers4Layout(nn.Module):
    """transformers 4 kept the CLIP stack under `text_model.`; files always use that spelling."""

    def __init__(self, text_model):
        super().__init__()
        self.text_model = text_model


def test_text_encoder_preset_matches_both_transformers_layouts(sd14_meta):
    text_encoder = sd14_meta[1]
    for model, prefix in [(text_encoder, "encoder.layers."), (Transformers4Layout(text_encoder), "text_model.encoder.")]:
        wrapped = inject(model, "text-encoder", rank=4)
        try:
            assert len(wrapped) == 72 and all(path.startswith(prefix) for path in wrapped)
            assert {path.rsplit(".", 1)[1] for path in wrapped} == {"q_proj", "k_proj", "v_proj", "out_proj",
                                                                     "fc1", "fc2"}
        finally:
            remove(model)


def test_text_encoder_preset_on_unet_is_an_error(sd14_meta):
    with pytest.raises(SdloraError, match="preset 'text-encoder' matches no"):
        inject(sd14_meta[0], "text-encoder", rank=4)
    assert not lora_modules(sd14_meta[0])


def test_presets_on_tiny_sd_models_run_and_merge():
    """diffusers' UNet and transformers' CLIP run with the wrappers in place (no attribute they miss)."""
    from sdlora.lora import merge_lora, unmerge_lora
    from sdlora.models.skeleton import tiny_text_encoder, tiny_unet

    unet, text_encoder = tiny_unet().eval().requires_grad_(False), tiny_text_encoder().eval().requires_grad_(False)
    latents, ids = torch.randn(1, 4, 8, 8), torch.randint(0, 1000, (1, 77))
    with torch.no_grad():
        context = text_encoder(ids)[0]
        reference = unet(latents, 10, context).sample
        inject(unet, ["unet-transformer", "unet-conv"], rank=4, dora=True)
        inject(text_encoder, "text-encoder", rank=4)
        assert torch.equal(text_encoder(ids)[0], context) and torch.equal(unet(latents, 10, context).sample, reference)
        for wrapper in lora_modules(unet).values():
            wrapper.adapters["default"].up.weight.normal_(std=0.1)
        adapted = unet(latents, 10, context).sample
        assert not torch.allclose(adapted, reference, atol=1e-3)
        merge_lora(unet)
        assert torch.allclose(unet(latents, 10, context).sample, adapted, atol=1e-5)
        unmerge_lora(unet)
        remove(unet)
        assert torch.allclose(unet(latents, 10, context).sample, reference, atol=1e-5)
