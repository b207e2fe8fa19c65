from pathlib import Path

import pytest

from sdlora.config import SourceConfig
from sdlora.data.sources import kohya_folder, list_images, scan_source
from sdlora.errors import SdloraError


def scan(path, **kw):
    return scan_source(SourceConfig(path=str(path), **kw), 0, max_pixels=10**8)


def by_name(scan_result):
    return {Path(r.path).relative_to(scan_result.path).as_posix(): r for r in scan_result.records}


@pytest.mark.parametrize("rel, expected", [
    ("10_sks person/a.png", (10, "sks person")),
    ("3_anime style/sub/a.png", (3, "anime style")),
    ("1_x/5_y z/a.png", (5, "y z")),          # nearest folder wins
    ("plain/a.png", None),
    ("0_nothing/a.png", None),                # zero repeats is not a kohya folder
    ("10_/a.png", None),
    ("abc_def/a.png", None),
    ("1000_most/a.png", (1000, "most")),      # MAX_FOLDER_REPEATS
    ("1001_over/a.png", None),                # more is not a repeat count
    ("20240101_trip/a.png", None),            # a date, not 20 million repeats
    ("5_x/20240101_trip/a.png", (5, "x")),    # ...so the folder above it applies
    ("9" * 40 + "_x/a.png", None),
])
def test_kohya_folder_table(rel, expected):
    root = Path("/data/train")
    found = kohya_folder(root, root / rel)
    assert (found[:2] if found else None) == expected


def test_kohya_folder_may_be_the_source_root():
    assert kohya_folder(Path("/d/20_sks dog"), Path("/d/20_sks dog/a.png"))[:2] == (20, "sks dog")


def test_sidecars_nested_and_extension(tmp_path, mk):
    mk.rgb(tmp_path / "a.png")
    mk.rgb(tmp_path / "deep" / "er" / "b.jpg")
    mk.rgb(tmp_path / "c.webp")
    (tmp_path / "a.caption").write_text("from caption ext")
    (tmp_path / "a.txt").write_text("from txt")
    (tmp_path / "deep" / "er" / "b.caption").write_text("nested")
    found = by_name(scan(tmp_path, caption_extension=".caption"))
    assert set(found) == {"a.png", "deep/er/b.jpg", "c.webp"}
    assert found["a.png"].caption == "from caption ext" and found["a.png"].caption_from == "sidecar"
    assert found["deep/er/b.jpg"].caption == "nested"
    assert found["c.webp"].caption == "" and found["c.webp"].caption_from == "none"


def test_hidden_entries_are_ignored(tmp_path, mk):
    mk.rgb(tmp_path / "a.png")
    mk.rgb(tmp_path / ".thumbs" / "b.png")
    mk.rgb(tmp_path / "__MACOSX" / "c.png")
    mk.write(tmp_path / "._a.png", b"AppleDouble junk")
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]


def test_kohya_repeats_and_class_tokens_with_prompt_fallback(tmp_path, mk):
    mk.rgb(tmp_path / "10_sks person" / "a.png")
    mk.rgb(tmp_path / "10_sks person" / "b.png")
    (tmp_path / "10_sks person" / "b.txt").write_text("sks person smiling")
    mk.rgb(tmp_path / "other" / "c.png")
    found = by_name(scan(tmp_path, repeats=2, prompt="a photo"))
    a, b, c = found["10_sks person/a.png"], found["10_sks person/b.png"], found["other/c.png"]
    assert (a.caption, a.caption_from, a.repeats) == ("sks person", "folder", 20)
    assert (b.caption, b.caption_from, b.repeats) == ("sks person smiling", "sidecar", 20)
    assert (c.caption, c.caption_from, c.repeats) == ("a photo", "prompt", 2)


def test_class_role_and_empty_caption_file(tmp_path, mk):
    mk.rgb(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("  \n")
    rec = scan(tmp_path, role="class", prompt="a photo of a person").records[0]
    assert rec.is_class and rec.caption == "" and rec.caption_empty_file


def test_duplicates_share_a_digest_and_sizes_are_displayed_sizes(tmp_path, mk):
    mk.rgb(tmp_path / "a.png", 90, 60, seed=3)
    (tmp_path / "copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    mk.rgb(tmp_path / "b.png", 90, 60, seed=4)
    found = by_name(scan(tmp_path))
    assert found["a.png"].digest == found["copy.png"].digest != found["b.png"].digest
    assert found["a.png"].size == (90, 60)


def test_missing_folder_and_bad_extension_name_the_field(tmp_path):
    with pytest.raises(SdloraError, match=r"data.sources\[0\].path"):
        scan(tmp_path / "nope")
    with pytest.raises(SdloraError, match="caption_extension"):
        scan(tmp_path, caption_extension="txt")


def test_a_date_folder_is_not_twenty_million_repeats(tmp_path, mk):
    mk.rgb(tmp_path / "20240101_trip" / "a.png")
    mk.rgb(tmp_path / "3_sks dog" / "b.png")
    mk.rgb(tmp_path / "3_sks dog" / "c.png")
    result = scan(tmp_path, repeats=2)
    found = by_name(result)
    a = found["20240101_trip/a.png"]
    assert (a.repeats, a.caption_from, a.subset) == (2, "none", tmp_path.name)
    assert found["3_sks dog/b.png"].repeats == 6 and found["3_sks dog/b.png"].subset == "3_sks dog"
    assert result.folders == {"3_sks dog": {"repeats": 3, "caption": "sks dog", "images": 2}}
    note = " | ".join(result.notes)
    assert "20240101_trip: 20240101 is not read as a repeat count (more than 1000" in note
    assert "at most 1000" in note


def test_an_unreadable_sidecar_is_reported_not_silently_replaced(tmp_path, mk):
    import os

    mk.rgb(tmp_path / "5_sks" / "a.png")
    mk.rgb(tmp_path / "5_sks" / "b.png")
    (tmp_path / "5_sks" / "a.txt").mkdir()
    os.mkfifo(tmp_path / "5_sks" / "b.txt")  # reading it would hang the scan
    result = scan(tmp_path)
    found = by_name(result)
    assert [found[f"5_sks/{n}.png"].caption_from for n in "ab"] == ["folder", "folder"]
    notes = " | ".join(result.notes)
    assert "a.txt is not used: not a regular file (only regular files are read): this is a folder" in notes
    assert "b.txt is not used: not a regular file (only regular files are read): this is a FIFO" in notes


def test_names_that_are_not_utf8_are_scanned_and_captioned_printably(tmp_path, mk):
    import os

    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/2_caf\xe9"))
    mk.rgb(folder / os.fsdecode(b"\xff.png"))
    rec = scan(tmp_path).records[0]
    assert Path(rec.path).is_file() and rec.caption == "caf\ufffd" and rec.subset == "2_caf\\xe9"
