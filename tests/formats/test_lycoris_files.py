"""LyCORIS's own loader as a second real client of sdlora's files, and LyCORIS-written files read by sdlora.

On sd-tiny's UNet and text encoder (same seed, same latents and tokens): a file sdlora writes
(LoRA, LoCon, LoHa, LoKr, DoRA, mixed) patched in by `lycoris.kohya.create_network_from_weights`
+ `merge_to` gives sdlora's outputs within 1e-4, and a file LyCORIS writes (`create_network`,
`apply_to`, `save_weights`) attached by sdlora gives LyCORIS's outputs within 1e-4.

Two reference limits (lycoris-lora 4.1.3) shape the cases: its `merge_to` applies alpha / rank twice to
LoHa / LoKr (its forward applies it once, as A1111 and ComfyUI do), so merges are checked at
alpha = rank and alpha != rank through its forward; and its loader cannot rebuild a LoKr module
with a Tucker core (it reads the rank off the wrong axis), so that layout is checked LyCORIS -> sdlora only.
"""
import copy

import pytest
import torch
from torch import nn

from sdlora.formats import apply
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.lora import inject, lora_modules
from sdlora.models import load_components

lycoris_kohya = pytest.importorskip("lycoris.kohya")

TOL = 1e-4
BOTH = ["unet-transformer", "unet-conv"]
# One file for every layout sdlora writes, module by module: LoRA + DoRA on the feed-forward, LoHa with
# Tucker cores and DoRA, LoKr with a factor, LoKr full matrix, LoCon (plain LoRA on the remaining convs).
MIXED = {
    r".*attn1\.to_[qkv]": {"algorithm": "loha", "dora": True},
    r".*attn2\.to_(?:q|out\.0)": {"algorithm": "lokr", "factor": 4},
    r".*attentions\.0\.proj_in": {"algorithm": "lokr", "factor": 8, "full_matrix": True},
    r".*resnets\.0\.conv1": {"algorithm": "loha", "use_tucker": True},
    r".*resnets\.1\.conv2": {"algorithm": "lokr", "factor": 4},
    r".*ff\.net\.2": {"dora": True},
}
TE_MIXED = {r".*self_attn\..*": {"algorithm": "loha"}, r".*mlp\.fc1": {"algorithm": "lokr", "factor": 8}}
PRESET = """enable_conv = true
unet_target_module = ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"]
unet_target_name = ["conv_in", "conv_out"]
text_encoder_target_module = ["CLIPAttention", "CLIPMLP"]
text_encoder_target_name = []
"""


@pytest.fixture(scope="module")
def sd_tiny():
    components = load_components("tiny", dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 77, 64, generator=gen),
              torch.randint(0, 49408, (2, 77), generator=gen))
    return components, inputs


@pytest.fixture(scope="module", autouse=True)
def narrow_lycoris_preset(tmp_path_factory):
    """LyCORIS's default preset "full" names SD 1.x's time-embedding Linears twice (an assertion in its
    network constructor, also on load): leave the time embedding out, as its narrower presets do."""
    cls = lycoris_kohya.LycorisNetworkKohya
    before = list(cls.UNET_TARGET_REPLACE_NAME)
    cls.apply_preset({"unet_target_name": ["conv_in", "conv_out"]})
    path = tmp_path_factory.mktemp("preset") / "sd1-no-time-embedding.toml"
    path.write_text(PRESET)
    yield str(path)
    cls.apply_preset({"unet_target_name": before})


@torch.no_grad()
def outputs(components, inputs):
    sample, context, ids = inputs
    return components.unet(sample, 10, encoder_hidden_states=context).sample, components.text_encoder(ids)[0]


def te_holder(text_encoder: nn.Module) -> nn.Module:
    """LyCORIS names text-encoder modules by `named_modules()`; transformers 5 drops the `text_model.`
    that every file carries, so hand it a holder that puts it back."""
    holder = nn.Module()
    holder.text_model = text_encoder
    return holder


def randomize(models, seed=1, std=0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(std * torch.randn(p.shape, generator=gen))


def sdlora_file(sd_tiny, tmp_path, alpha, unet_overrides, te_overrides):
    """(path of a kohya-format file sdlora wrote, sdlora's outputs with it attached)."""
    components, inputs = sd_tiny
    model = copy.deepcopy(components)
    inject(model.unet, BOTH, 4, alpha, overrides=unet_overrides)
    inject(model.text_encoder, "text-encoder", 4, alpha, overrides=te_overrides)
    randomize([w.adapters for m in (model.unet, model.text_encoder) for w in lora_modules(m).values()])
    path = tmp_path / "sdlora.safetensors"
    save_lora_file(path, apply.extract(model), {}, "kohya", torch.float32)
    return path, outputs(model, inputs)


def lycoris_reads(sd_tiny, path, merge=True):
    """LyCORIS's loader patches a fresh sd-tiny with the file: merged into the weights, or as modules."""
    components, inputs = sd_tiny
    model = copy.deepcopy(components)
    te = te_holder(model.text_encoder)
    network, weights = lycoris_kohya.create_network_from_weights(1.0, str(path), None, te, model.unet,
                                                                 for_inference=True)
    assert len(network.unet_loras) > 0 and len(network.text_encoder_loras) > 0
    if merge:
        network.merge_to(te, model.unet, weights, torch.float32, "cpu")
    else:
        network.apply_to(te, model.unet, apply_text_encoder=True, apply_unet=True)
    return outputs(model, inputs)


def check_close(got, expected, base):
    for g, e, b in zip(got, expected, base):
        assert (e - b).abs().max() > 1e-2  # the file changes this network
        assert (g - e).abs().max() <= TOL


def test_lycoris_loader_merges_an_sdlora_file_like_sdlora(sd_tiny, tmp_path):
    path, ours = sdlora_file(sd_tiny, tmp_path, 4.0, MIXED, TE_MIXED)
    state = load_lora_file(path)[0]
    assert {k.rsplit(".", 1)[-1] for k in state} >= {"hada_w1_a", "hada_t1", "lokr_w1", "lokr_w2", "lokr_w2_a",
                                                      "dora_scale", "weight"}
    check_close(lycoris_reads(sd_tiny, path), ours, outputs(*sd_tiny))


def test_alpha_other_than_rank_matches_lycoris_forward(sd_tiny, tmp_path):
    unet = {r".*attn[12]\..*": {"algorithm": "lokr", "factor": 4}, r".*resnets\..*": {"algorithm": "loha", "use_tucker": True}}
    path, ours = sdlora_file(sd_tiny, tmp_path, 1.5, unet, {r".*": {"algorithm": "loha"}})
    check_close(lycoris_reads(sd_tiny, path, merge=False), ours, outputs(*sd_tiny))


@pytest.mark.parametrize("algo,args", [("loha", {"use_tucker": True, "dora_wd": True}),
                                       ("lokr", {"factor": 8, "use_tucker": True})])
def test_lycoris_written_files_load_in_sdlora(sd_tiny, tmp_path, narrow_lycoris_preset, algo, args):
    components, inputs = sd_tiny
    model = copy.deepcopy(components)
    te = te_holder(model.text_encoder)
    network = lycoris_kohya.create_network(1.0, 4, 2.0, None, te, model.unet, algo=algo, conv_dim=2, conv_alpha=1.0,
                                           preset=narrow_lycoris_preset, **{k: str(v) for k, v in args.items()})
    network.apply_to(te, model.unet, apply_text_encoder=True, apply_unet=True)
    randomize([network], std=0.1)
    path = tmp_path / f"lycoris-{algo}.safetensors"
    network.save_weights(str(path), torch.float32, {})
    network.eval()
    theirs = outputs(model, inputs)

    lora, _, fmt = load_lora_file(path)
    ours = copy.deepcopy(components)
    apply.attach(ours, lora)
    assert fmt == "kohya" and len(lora_modules(ours.unet)) == len(network.unet_loras)
    check_close(outputs(ours, inputs), theirs, outputs(*sd_tiny))
