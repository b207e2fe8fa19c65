"""Token embeddings in files: the bundled kohya keys and the standalone file, round trips, and the
standalone file read by diffusers' own load_textual_inversion on sd-tiny (same text-encoder output)."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from sdlora.errors import SdloraError
from sdlora.formats import load_lora_file, save_lora_file
from sdlora.formats.io import convert_lora_file
from sdlora.formats import embeddings as E
from sdlora.models.new_tokens import add_tokens

D = 8


def vectors(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def test_bundle_keys_are_a1111s_and_round_trip():
    emb = {"<s0>": vectors(1), "<sks>": vectors(3, 1)}
    state = E.to_bundle(emb)
    assert sorted(state) == ["bundle_emb.<s0>.string_to_param.*", "bundle_emb.<sks>.string_to_param.*"]
    rest, back = E.split_bundle({**state, "lora_unet_x.alpha": torch.tensor(1.0)})
    assert list(rest) == ["lora_unet_x.alpha"] and back.keys() == emb.keys()
    assert all(torch.equal(back[t], emb[t]) for t in emb)
    # OneTrainer's SD 1.x name for the same tensor, and a 1-D vector, read as one (1, D) token
    _, other = E.split_bundle({"bundle_emb.tok.clip_l": vectors(1)[0]})
    assert other["tok"].shape == (1, D)


@pytest.mark.parametrize("state, match", [
    ({"bundle_emb.x.clip_g": vectors(1)}, "not an SD 1.x text-encoder embedding"),
    ({"bundle_emb..string_to_param.*": vectors(1)}, "non-empty word"),
    ({"bundle_emb.a.string_to_param.*": vectors(1), "bundle_emb.b.string_to_param.*": torch.zeros(1, 4)},
     "different widths"),
])
def test_bad_bundles_are_refused(state, match):
    with pytest.raises(SdloraError, match=match):
        E.split_bundle(state, "f.safetensors")


def test_standalone_round_trip_and_multi_vector_names():
    emb = {"<s0>": vectors(1), "<s1>": vectors(2, 1)}
    state, meta = E.to_standalone(emb)
    assert list(state) == ["emb_params"] and state["emb_params"].shape == (3, D)
    back = E.from_standalone(state, meta, "file")
    assert all(torch.equal(back[t], emb[t]) for t in emb)
    assert list(E.from_standalone(state, {}, "style")) == ["style"]  # an A1111 file: named after the file
    tokens, rows = E.expand_vectors(emb)
    assert tokens == ["<s0>", "<s1>", "<s1>_1"] and torch.equal(rows, state["emb_params"])
    assert E.standalone_path("runs/me/me-000010.safetensors").name == "me-000010.emb.safetensors"
    with pytest.raises(SdloraError, match="not an embedding file"):
        E.from_standalone({"a": vectors(1), "b": vectors(1)}, {}, "x")


def test_kohya_files_carry_the_bundle_and_the_lora_reader_skips_it(tmp_path, tiny, lora_maker):
    lora = lora_maker(tiny, text_encoder=False)
    emb = {"<sks>": vectors(2)}
    for fmt in ("kohya", "diffusers"):
        path = save_lora_file(tmp_path / f"{fmt}.safetensors", lora, {}, fmt, torch.float32, embeddings=emb)
        with safe_open(str(path), framework="pt") as f:
            bundled = [k for k in f.keys() if k.startswith("bundle_emb.")]
        assert bundled == (["bundle_emb.<sks>.string_to_param.*"] if fmt == "kohya" else [])
        loaded, _, _ = load_lora_file(path)
        assert loaded.keys() == lora.keys()
    convert_lora_file(tmp_path / "kohya.safetensors", tmp_path / "copy.safetensors", "kohya")
    with safe_open(str(tmp_path / "copy.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("bundle_emb.<sks>.string_to_param.*"), emb["<sks>"])  # kept by convert


def _bundled(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("bundle_emb.")}


def test_resize_and_merge_keep_the_bundle_and_refuse_two_versions_of_a_token(tmp_path, tiny, lora_maker, caplog):
    from sdlora.formats.merge_loras import merge_lora_files
    from sdlora.formats.resize import resize_lora_file

    lora = lora_maker(tiny, text_encoder=False)
    a = save_lora_file(tmp_path / "a.safetensors", lora, {}, "kohya", torch.float32, embeddings={"<sks>": vectors(2)})
    b = save_lora_file(tmp_path / "b.safetensors", lora, {}, "kohya", torch.float32,
                       embeddings={"<ohwx>": vectors(1, 1)})
    resize_lora_file(a, tmp_path / "small.safetensors", 2)
    assert torch.equal(_bundled(tmp_path / "small.safetensors")["bundle_emb.<sks>.string_to_param.*"], vectors(2))
    merge_lora_files([(a, 1.0), (b, 0.5), (a, 0.5)], tmp_path / "merged.safetensors")
    merged = _bundled(tmp_path / "merged.safetensors")  # every token once, unscaled by the weights
    assert merged.keys() == {"bundle_emb.<sks>.string_to_param.*", "bundle_emb.<ohwx>.string_to_param.*"}
    assert torch.equal(merged["bundle_emb.<ohwx>.string_to_param.*"], vectors(1, 1))
    resize_lora_file(a, tmp_path / "d.safetensors", 2, fmt="diffusers")  # diffusers files cannot hold them
    assert "<sks>" in caplog.text and "only kohya files carry them" in caplog.text
    assert not _bundled(tmp_path / "d.safetensors")
    c = save_lora_file(tmp_path / "c.safetensors", lora, {}, "kohya", torch.float32,
                       embeddings={"<sks>": vectors(2, 5)})
    with pytest.raises(SdloraError, match=r"c\.safetensors: its embedding of token '<sks>' differs from the one "
                                          r"bundled in .*a\.safetensors"):
        merge_lora_files([(a, 1.0), (c, 1.0)], tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


@pytest.fixture(scope="module")
def sd_tiny_text():
    from transformers import CLIPTextModel

    from sdlora.models.loader import tiny_model_dir
    from sdlora.models.tokenizer import load_tokenizer

    def fresh():
        return load_tokenizer(), CLIPTextModel.from_pretrained(tiny_model_dir() / "text_encoder").eval()

    return fresh


def test_diffusers_load_textual_inversion_gives_the_same_text_encoder_output(sd_tiny_text, tmp_path):
    from diffusers.loaders import TextualInversionLoaderMixin

    class Loader(TextualInversionLoaderMixin):  # the mixin StableDiffusionPipeline uses, without the UNet/VAE
        hf_device_map, components = None, {}

        def __init__(self, tokenizer, text_encoder):
            self.tokenizer, self.text_encoder = tokenizer, text_encoder

    tok, te = sd_tiny_text()
    width = te.get_input_embeddings().embedding_dim
    emb = {"<sks>": torch.randn(1, width, generator=torch.Generator().manual_seed(3)) * 0.02}
    path = E.save_standalone(tmp_path / "me.emb.safetensors", emb)
    Loader(tok, te).load_textual_inversion(str(path), token="<sks>")
    ours_tok, ours_te = sd_tiny_text()
    add_tokens(ours_tok, ours_te, ["<sks>"], emb["<sks>"])
    prompt = "a <sks> on a blue background"
    ids = tok(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, ours_tok(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids)
    assert (ids == len(ours_tok) - 1).sum() == 1  # the new token is one id
    with torch.no_grad():
        theirs, ours = te(ids)[0], ours_te(ids)[0]
        plain = te(tok("a on a blue background", padding="max_length", max_length=77, return_tensors="pt").input_ids)[0]
    assert torch.equal(theirs, ours) and not torch.equal(ours, plain)
