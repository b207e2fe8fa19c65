"""Regenerate the bundled CLIP tokenizer files (src/sdlora/models/tokenizer/{vocab.json,merges.txt}).

Where they come from: OpenAI CLIP's byte-pair encoding, as shipped in the `open_clip_torch` wheel on
PyPI (`open_clip/bpe_simple_vocab_16e6.txt.gz`). The wheel is downloaded with `pip download --no-deps`
into a temporary folder (it is not a dependency of sdlora), and CLIP's vocabulary is rebuilt exactly as
CLIP's `simple_tokenizer.py` does it:

    256 byte-unicode characters, the same 256 with "</w>", the first 48,894 merges joined,
    then "<|startoftext|>" and "<|endoftext|>"   -> 49,408 tokens (ids 0..49407)

merges.txt holds the same 48,894 merges, one per line, after the "#version: 0.2" header that
Hugging Face tokenizers expect. Check: "a photo of a red circle" -> 49406 320 1125 539 320 736 7117 49407.

Usage: python scripts/make_tokenizer.py [--wheel path/to/open_clip_torch-*.whl] [--out DIR]
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # 48,894: CLIP keeps the merges that fit a 49,152-token budget
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "sdlora" / "models" / "tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table (256 entries, CLIP's order)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    base = list(bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}


def read_merges(bpe_gz: bytes) -> list[tuple[str, str]]:
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    # Line 0 is a header; CLIP keeps lines 1..48894.
    return [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]


def fetch_wheel(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), "open_clip_torch"]
    subprocess.run(cmd, check=True)
    return Path(glob.glob(str(tmp / "open_clip_torch-*.whl"))[0])


def write_tokenizer(wheel: Path, out: Path) -> dict[str, int]:
    with zipfile.ZipFile(wheel) as zf:
        merges = read_merges(zf.read(BPE_MEMBER))
    vocab = build_vocab(merges)
    assert len(vocab) == 49408, len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2"] + [" ".join(m) for m in merges]
    (out / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    return vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a local open_clip_torch wheel (default: pip download)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        vocab = write_tokenizer(wheel, args.out)
    print(f"wrote {len(vocab)} tokens to {args.out}/vocab.json and merges.txt (from {wheel.name})")


if __name__ == "__main__":
    main()
