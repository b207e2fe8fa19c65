"""The bundled CLIP tokenizer: SD 1.4's ids, and the script that regenerates its files."""
import gzip
import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

from sdlora.models.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, load_tokenizer, tokenizer_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def make_tokenizer():
    spec = importlib.util.spec_from_file_location("make_tokenizer", ROOT / "scripts" / "make_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_known_prompt_ids(tokenizer):
    ids = tokenizer("a photo of a red circle").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 736, 7117, 49407]


def test_vocabulary_and_settings(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE
    assert tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS_ID, EOS_ID, EOS_ID)


def test_lowercases_and_pads_to_77(tokenizer):
    ids = tokenizer("A PHOTO of a Red Circle", padding="max_length", max_length=77, truncation=True).input_ids
    assert ids[:8] == [49406, 320, 1125, 539, 320, 736, 7117, 49407]
    assert len(ids) == 77 and set(ids[8:]) == {EOS_ID}


def test_long_prompt_truncates_to_77(tokenizer):
    ids = tokenizer("circle " * 200, truncation=True, max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == BOS_ID and ids[-1] == EOS_ID


def test_byte_table_is_a_bijection(make_tokenizer):
    table = make_tokenizer.bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"


def test_script_regenerates_the_bundled_files(make_tokenizer, tmp_path):
    # Rebuild a stand-in wheel holding CLIP's gzipped BPE list (header line + merges), then regenerate.
    bundled = tokenizer_dir()
    merges = (bundled / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    bpe_text = "\n".join(["bpe_simple_vocab_16e6.txt#version: 0.2"] + merges + ["qqqqq qqqqq", ""])
    wheel = tmp_path / "open_clip_torch-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(make_tokenizer.BPE_MEMBER, gzip.compress(bpe_text.encode("utf-8")))
    vocab = make_tokenizer.write_tokenizer(wheel, tmp_path / "out")
    assert len(vocab) == VOCAB_SIZE and "qqqqqqqqqq" not in vocab  # merges past 48,894 are dropped
    assert (tmp_path / "out" / "merges.txt").read_bytes() == (bundled / "merges.txt").read_bytes()
    assert json.loads((tmp_path / "out" / "vocab.json").read_text(encoding="utf-8")) == json.loads(
        (bundled / "vocab.json").read_text(encoding="utf-8")
    )
