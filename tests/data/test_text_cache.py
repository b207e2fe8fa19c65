import torch

from sdlora.data import build_datasets, cache_text
from sdlora.data.text_cache import encode_captions
from sdlora.models.skeleton import tiny_text_encoder


def test_encode_captions_batches_match_single_calls(tokenizer):
    encoder = tiny_text_encoder(0).eval()
    captions = ["a", "a red square", "two blue circles, white background"]
    batched = encode_captions(tokenizer, encoder, captions, batch_size=2)
    for c in captions:
        assert torch.allclose(batched[c], encode_captions(tokenizer, encoder, [c])[c], atol=1e-5)


def test_text_cache_for_static_captions_only(tmp_path, mk, tokenizer):
    folder = tmp_path
    for i in range(2):
        mk.rgb(folder / f"{i}.png", 64, 64, seed=i)
    (folder / "0.txt").write_text("a red square")
    encoder = tiny_text_encoder(0).eval()
    ds, _ = build_datasets(mk.small_cfg(folder), tokenizer, seed=0)
    ids = ds[0]["input_ids"]
    assert cache_text(ds, encoder, progress=False)
    assert sorted(ds.text_cache) == ["", "a red square"]
    item = ds[0]
    assert "input_ids" not in item and item["encoder_hidden_states"].shape == (77, 32)
    with torch.no_grad():
        torch.testing.assert_close(item["encoder_hidden_states"], encoder(ids[None])[0][0])
    shuffled, _ = build_datasets(mk.small_cfg(folder, shuffle_tags=True), tokenizer, seed=0)
    assert not cache_text(shuffled, encoder, progress=False) and "input_ids" in shuffled[0]
