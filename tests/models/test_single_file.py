"""Single original checkpoints (LDM layout): tiny round trips through both file types, clear errors for
other architectures and damaged files, and the full-size SD 1.4 round trip (slow)."""
import gc
import zlib

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.models import load_components, skeleton
from sdlora.models.checkpoint_io import write_safetensors
from sdlora.models.names import canonical_te_path
from sdlora.models.single_file import ldm_state_dict, load_single_file


@pytest.fixture
def load_tiny(tiny_configs):
    return lambda path, **kwargs: load_single_file(path, configs=tiny_configs, **kwargs)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_tiny_round_trip_is_exact(
    load_tiny, tmp_path, tiny_models, tiny_ldm, suffix, save_lightning_ckpt, assert_same_weights
):
    path = tmp_path / f"tiny{suffix}"
    write_safetensors(path, tiny_ldm) if suffix == ".safetensors" else save_lightning_ckpt(path, tiny_ldm)
    loaded = load_tiny(path)
    assert_same_weights(tiny_models, loaded)
    assert loaded.source == str(path) and not loaded.unet.training
    assert loaded.tokenizer("a red circle").input_ids[-1] == 49407
    assert loaded.scheduler.config.steps_offset == 1


def test_dtype_casts_floats_only(load_tiny, tmp_path, tiny_ldm):
    write_safetensors(tmp_path / "t.safetensors", tiny_ldm)
    loaded = load_tiny(tmp_path / "t.safetensors", dtype=torch.float16)
    assert {p.dtype for p in loaded.unet.parameters()} == {torch.float16}
    assert {p.dtype for p in loaded.text_encoder.parameters()} == {torch.float16}


def test_fp16_file_loads_as_fp32(load_tiny, tmp_path, tiny_models, tiny_ldm):
    write_safetensors(tmp_path / "h.safetensors", {k: v.half() if v.is_floating_point() else v for k, v in tiny_ldm.items()})
    loaded = load_tiny(tmp_path / "h.safetensors")
    w = loaded.unet.conv_in.weight
    assert w.dtype == torch.float32 and torch.equal(w, tiny_models.unet.conv_in.weight.half().float())


def test_old_text_encoder_keys_without_text_model(load_tiny, tmp_path, tiny_models, tiny_ldm, assert_same_weights):
    prefix = "cond_stage_model.transformer."
    old = {(k.replace(prefix + "text_model.", prefix) if k.startswith(prefix) else k): v for k, v in tiny_ldm.items()}
    write_safetensors(tmp_path / "old.safetensors", old)
    assert_same_weights(tiny_models, load_tiny(tmp_path / "old.safetensors"))


def _edit(sd, drop=(), add=None, reshape=None):
    out = {k: v for k, v in sd.items() if k not in drop}
    out.update(add or {})
    for key, shape in (reshape or {}).items():
        out[key] = torch.zeros(shape)
    return out


@pytest.mark.parametrize("edit, message", [
    (dict(add={"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": torch.zeros(1)}), "an SDXL checkpoint"),
    (dict(add={"cond_stage_model.model.ln_final.weight": torch.zeros(1)}), "an SD 2.x checkpoint"),
    (dict(add={"lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.zeros(())}), "a LoRA file"),
    (dict(drop="vae"), r"no VAE weights \(keys starting 'first_stage_model\.'\)"),
    (dict(drop=["model.diffusion_model.out.2.bias"]), r"1 UNet weights missing, first model\.diffusion_model\.out\.2\.bias"),
    (dict(drop=["first_stage_model.encoder.mid.attn_1.q.weight"]), r"first first_stage_model\.encoder\.mid\.attn_1\.q\.weight"),
    (dict(add={"model.diffusion_model.label_emb.0.0.weight": torch.zeros(1)}), r"unexpected key model\.diffusion_model\.label_emb"),
    (dict(add={"model.diffusion_model.input_blocks.1.1.transformer_blocks.1.norm1.weight": torch.zeros(1)}),
     r"1 unexpected UNet weights, first model\.diffusion_model\.input_blocks\.1\.1\.transformer_blocks\.1\.norm1"),
    (dict(reshape={"model.diffusion_model.input_blocks.0.0.weight": (32, 9, 3, 3)}),
     r"input_blocks\.0\.0\.weight has shape \(32, 9, 3, 3\), SD 1\.x has \(32, 4, 3, 3\).*inpainting"),
    (dict(add={"cond_stage_model.transformer.text_model.extra.weight": torch.zeros(1)}),
     r"unexpected CLIP text encoder weights, first cond_stage_model\.transformer\.text_model\.extra\.weight"),
])  # fmt: skip
def test_wrong_architecture_errors_name_file_and_key(load_tiny, tmp_path, tiny_ldm, edit, message):
    if edit.get("drop") == "vae":
        edit = dict(drop=[k for k in tiny_ldm if k.startswith("first_stage_model.")])
    write_safetensors(tmp_path / "other.safetensors", _edit(tiny_ldm, **edit))
    with pytest.raises(SdloraError, match=message) as info:
        load_tiny(tmp_path / "other.safetensors")
    assert str(info.value).startswith(str(tmp_path / "other.safetensors")) and "\n" not in str(info.value)


def test_sdxl_shaped_file_through_load_components(tmp_path):
    # SDXL: two text encoders under conditioner.embedders, same UNet prefix.
    sdxl = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(4, 768),
        "conditioner.embedders.1.model.ln_final.weight": torch.zeros(1280),
        "first_stage_model.quant_conv.bias": torch.zeros(8),
    }
    write_safetensors(tmp_path / "sdxl.safetensors", sdxl)
    with pytest.raises(SdloraError, match=r"sdxl\.safetensors: this is an SDXL checkpoint; sdlora loads SD 1\.x"):
        load_components(tmp_path / "sdxl.safetensors")


def test_truncated_checkpoint_through_load_components(tmp_path, tiny_ldm, save_lightning_ckpt):
    for name in ("cut.safetensors", "cut.ckpt"):
        path = tmp_path / name
        write_safetensors(path, tiny_ldm) if name.endswith("safetensors") else save_lightning_ckpt(path, tiny_ldm)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(SdloraError, match=rf"{name}: not a readable"):
            load_components(path)


def _digests(models) -> dict:
    """Fingerprints of every tensor by canonical key: dtype, shape, CRC-32 and Adler-32 of the raw bytes
    (a changed bit changes the CRC; two checksums because hashing 4.3 GB must stay cheap)."""
    out = {}
    for name in ("unet", "vae", "text_encoder"):
        for key, t in getattr(models, name).state_dict().items():
            key = canonical_te_path(key) if name == "text_encoder" else key
            raw = t.detach().contiguous().view(-1).view(torch.uint8).numpy()
            out[f"{name}.{key}"] = (t.dtype, tuple(t.shape), zlib.crc32(raw), zlib.adler32(raw))
    return out


@pytest.mark.slow
def test_full_size_sd14_round_trip(tmp_path, save_lightning_ckpt, ldm_extras):
    """Random full-size SD 1.4 in the LDM layout, as a Lightning .ckpt (the layout and container of the
    original sd-v1-4.ckpt), loads back bit for bit. Every key of the real layout is mapped; the
    .safetensors container reads through the same key mapping and is round-tripped at tiny size above.
    Memory: one model copy at a time (the source is fingerprinted, then freed)."""
    source = skeleton.SDComponents(None, skeleton.sd14_text_encoder(1), skeleton.sd14_vae(2), skeleton.sd14_unet(3), None, "")
    expected = _digests(source)
    ldm = {**ldm_state_dict(source.unet, source.vae, source.text_encoder), **ldm_extras()}
    assert len(ldm) == 686 + 248 + 196 + len(ldm_extras())
    save_lightning_ckpt(tmp_path / "sd14.ckpt", ldm)
    del source, ldm
    gc.collect()
    loaded = load_components(tmp_path / "sd14.ckpt")
    assert _digests(loaded) == expected
    assert sum(p.numel() for p in loaded.unet.parameters()) == 859_520_964


def test_a_file_naming_its_architecture_loads_without_configs(tmp_path, tiny_models, tiny_ldm, assert_same_weights):
    from sdlora.models.single_file import architecture_metadata

    write_safetensors(tmp_path / "t.safetensors", tiny_ldm, architecture_metadata(
        {"unet": skeleton.TINY_UNET, "vae": skeleton.TINY_VAE, "text_encoder": skeleton.TINY_TEXT}))
    assert_same_weights(tiny_models, load_components(tmp_path / "t.safetensors"))


@pytest.mark.parametrize("text, message", [
    ("{", "is not a JSON object of unet/vae/text_encoder configs"),
    ("[" * 100000, "is not a JSON object"),
    ('{"unet": 1, "vae": {}, "text_encoder": {}}', "is not a JSON object"),
    ('{"unet": {"block_out_channels": "x"}, "vae": {}, "text_encoder": {}}', "does not describe a buildable"),
    ('{"unet": {}, "vae": {}, "text_encoder": {"hidden_size": -3}}', "does not describe a buildable"),
])  # fmt: skip
def test_a_hostile_architecture_header_is_one_error_line(tmp_path, tiny_ldm, text, message):
    write_safetensors(tmp_path / "t.safetensors", tiny_ldm, {"sdlora_architecture": text})
    with pytest.raises(SdloraError, match=rf"t\.safetensors: metadata 'sdlora_architecture' {message}") as info:
        load_components(tmp_path / "t.safetensors")
    assert "\n" not in str(info.value)
