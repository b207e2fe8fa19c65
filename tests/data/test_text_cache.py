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


def test_text_cache_under_caption_dropout_holds_the_empty_caption(tmp_path, mk, tokenizer):
    for i in range(4):
        mk.rgb(tmp_path / f"{i}.png", 64, 64, seed=i)
        (tmp_path / f"{i}.txt").write_text(f"caption {i}")
    encoder = tiny_text_encoder(0).eval()
    cfg = mk.small_cfg(tmp_path, caption_dropout=0.5)
    plain, _ = build_datasets(cfg, tokenizer, seed=0)
    cached, _ = build_datasets(cfg, tokenizer, seed=0)
    assert cache_text(cached, encoder, progress=False)
    assert sorted(cached.text_cache) == ["", "caption 0", "caption 1", "caption 2", "caption 3"]
    captions = set()
    for epoch in range(3):
        for ds in (plain, cached):
            ds.set_epoch(epoch)
        for i in range(len(cached)):
            expected, item = plain[i], cached[i]
            assert item["caption"] == expected["caption"]  # same draws with and without the cache
            captions.add(item["caption"])
            with torch.no_grad():
                torch.testing.assert_close(item["encoder_hidden_states"], encoder(expected["input_ids"][None])[0][0])
    assert "" in captions and len(captions) > 1
