"""Hostile dataset folders against every way sdlora reads a dataset: `dataset inspect` (text and --json),
the dataset build and its items, latents cached in memory and on disk.

One folder holds the whole class of bad input (FIFOs and links to devices named like images, captions
and metadata; deep and huge JSON; truncated, corrupt, oversized and mislabelled images; zero-byte
files; folders named *.png; names that are not UTF-8; date-named folders) beside good images. Each
bad file must end as a skipped file or a note with its reason; nothing may hang, raise, or stop the
good images from training.
"""
from __future__ import annotations

import io
import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from sdlora.cli import main
from sdlora.config import DataConfig, SourceConfig
from sdlora.data import BucketBatchSampler, build_datasets, cache_latents, collate
from sdlora.models.skeleton import tiny_vae

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"
DEEP_JSON = "[" * 200_000  # json.loads: RecursionError


def png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def jpeg(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png(w, h, seed))).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def with_size(data: bytes, w: int, h: int) -> bytes:
    """A PNG whose header claims another size (CRC fixed): a decompression bomb's header."""
    ihdr = bytearray(data[8:33])
    ihdr[8:16] = struct.pack(">II", w, h)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return data[:8] + bytes(ihdr) + data[33:]


def bad_pixels(data: bytes) -> bytes:
    """Every PNG chunk's CRC is right, the compressed pixels are not."""
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4:start])[0]
    body = bytearray(data[start + 4:start + 4 + length])
    body[2:10] = bytes(b ^ 0xFF for b in body[2:10])
    return data[:start + 4] + bytes(body) + struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body))) \
        + data[start + 8 + length:]


def raw(root: Path, name: bytes) -> Path:
    """A path under `root` whose name is given as bytes (maybe not UTF-8)."""
    return Path(os.fsdecode(os.fsencode(root) + b"/" + name))


def build_hostile(root: Path) -> tuple[dict[str, str | None], list[Path]]:
    """-> ({printable relative path: expected skip code, or None for a usable image}, FIFOs made)."""
    files = {"good.png": png(64, 64, 1), "photo.jpg": jpeg(96, 64, 2), "png-named.jpg": png(64, 64, 3),
             "empty.png": b"", "text.png": b"just text\n" * 10, "eps.png": EPS,
             "truncated.jpg": jpeg(64, 64, 4)[:1500], "bomb.png": with_size(png(8, 8, 5), 40_000, 40_000),
             "bad-pixels.png": bad_pixels(png(64, 64, 6)), "folder.png/inner.png": png(64, 64, 7),
             "20240101_trip/dated.png": png(64, 64, 8)}
    expected = {"good.png": None, "photo.jpg": None, "png-named.jpg": None, "empty.png": "empty",
                "text.png": "not_image", "eps.png": "not_image", "truncated.jpg": "truncated",
                "bomb.png": "too_large", "bad-pixels.png": "corrupt", "folder.png/inner.png": None,
                "20240101_trip/dated.png": None}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    raw(root, b"\xff\xfe.png").write_bytes(png(64, 64, 9))
    raw(root, b"2_caf\xe9").mkdir()
    raw(root, b"2_caf\xe9/x.png").write_bytes(png(64, 64, 10))
    expected.update({"\\xff\\xfe.png": None, "2_caf\\xe9/x.png": None})
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "null.jpg").symlink_to("/dev/null")
    (root / "dangling.png").symlink_to(root / "gone.png")
    expected.update({"zero.png": "not_regular", "null.jpg": "not_regular", "dangling.png": "unreadable"})
    fifos = [root / "fifo.png", root / "metadata.jsonl", root / "good.txt"]
    for fifo in fifos:
        os.mkfifo(fifo)
    expected["fifo.png"] = "not_regular"
    (root / "photo.txt").mkdir()  # a folder where a caption file would be
    (root / "deep").mkdir()
    (root / "deep" / "metadata.jsonl").write_text(DEEP_JSON + "\n" + json.dumps({"file_name": "../good.png",
                                                                                  "text": "escape"}) + "\n")
    (root / "deep" / "metadata.csv").write_text("file_name,text\n" + "x" * 300_000 + ",y\n")
    (root / "png-named.txt").write_bytes(b"x, " * 400_000)  # a 1.2 MB caption file
    return expected, fifos


def within(seconds: float, fifos: list[Path], fn, *args, **kwargs):
    """fn(*args) in a thread; when it blocks (a FIFO opened for reading), unblock it by opening the
    FIFOs for writing, and fail. A guard against hanging the suite, not a speed test."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for _ in range(200):  # each FIFO it opens next blocks again: keep unblocking until it returns
            for fifo in fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a blocked reader now reads EOF
                except OSError:
                    pass
            thread.join(0.1)
        pytest.fail(f"{getattr(fn, '__name__', fn)} blocked on a special file")
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    expected, fifos = build_hostile(root)
    return root, expected, fifos


def small_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(sources=[SourceConfig(path=str(root))], resolution=64, bucket_step=16, min_bucket_side=32,
                      max_bucket_side=128, num_workers=0, **kw)


def printable(root: Path, path: str) -> str:
    return Path(path).relative_to(str(root)).as_posix()


def test_inspect_json_lists_every_bad_file_with_its_reason(hostile, tmp_path, capsys):
    root, expected, fifos = hostile
    out = tmp_path / "report.json"
    assert within(120, fifos, main, ["dataset", "inspect", str(root), "--resolution", "64", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text(encoding="utf-8"))
    got = {printable(root, k["path"]): k["code"] for k in report["skipped"]}
    assert got == {name: code for name, code in expected.items() if code}
    assert report["totals"]["usable"] == sum(code is None for code in expected.values())
    notes = " | ".join(report["notes"])
    assert "metadata.jsonl is not used: not a regular file (only regular files are read): this is a FIFO" in notes
    assert "good.txt is not used" in notes and "photo.txt is not used" in printed  # caption FIFO and folder
    assert "png-named.txt is not used: file too large" in notes
    assert "line 1: not valid JSON (nested too deeply)" in notes and "must be a path inside" in notes
    assert "not valid CSV" in notes and "20240101 is not read as a repeat count" in notes
    assert report["sources"][0]["folders"] == {"2_caf\\xe9": {"repeats": 2, "caption": "caf\ufffd", "images": 1}}
    assert "\\xff\\xfe.png" not in got and "written to" in printed


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(0).eval()


@pytest.mark.parametrize("cache", ["off", "memory", "disk"])
def test_the_build_trains_on_the_good_images_only(hostile, tmp_path, vae, cache):
    root, expected, fifos = hostile
    train, _ = within(120, fifos, build_datasets, small_cfg(root), None, seed=0)
    usable = {name for name, code in expected.items() if code is None}
    assert {printable(root, os.fsencode(r.path).decode("utf-8", "backslashreplace")) for r in train.records} == usable
    assert {printable(root, s.path) for s in train.skipped} == set(expected) - usable
    if cache != "off":
        stats = within(120, fifos, cache_latents, train, vae, mode=cache, cache_dir=tmp_path / "latents",
                       progress=False)
        assert stats["failed"] == 0 and stats["computed"] == len(usable)
    key = "pixel_values" if cache == "off" else "latents"
    loader = DataLoader(train, batch_sampler=BucketBatchSampler(train, 2, seed=0), collate_fn=collate)
    assert sum(batch[key].shape[0] for batch in loader) == len(train)
    summary = train.summary()
    json.dumps(summary).encode("utf-8")  # as the LoRA metadata stores it
    assert summary["folders"]["2_caf\\xe9"] == {"repeats": 2, "images": 1}
    assert summary["folders"][root.name]["repeats"] == 1  # the date folder's images are not repeated
