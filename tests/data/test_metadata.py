import json
from pathlib import Path

from sdlora.config import SourceConfig
from sdlora.data.metadata import parse_rows, read_metadata
from sdlora.data.sources import scan_source


def scan(path, **kw):
    return scan_source(SourceConfig(path=str(path), **kw), 0, max_pixels=10**8)


def by_name(scan_result):
    return {Path(r.path).relative_to(scan_result.path).as_posix(): r for r in scan_result.records}


def test_parse_rows_table():
    notes = []
    rows = [(1, {"file_name": "a.png", "text": " cap "}), (2, {"file_name": "b.png", "caption": "alt column"}),
            (3, {"file_name": "c.png"}), (4, ["not", "a", "dict"]), (5, {"text": "no name"})]
    out = parse_rows(rows, "m.jsonl", Path("/d"), notes)
    assert out == {Path("/d/a.png"): "cap", Path("/d/b.png"): "alt column"}
    assert [n.split(":")[0] for n in notes] == ["m.jsonl line 3", "m.jsonl line 4", "m.jsonl line 5"]


def test_read_metadata_skips_hidden_folders(tmp_path):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "text": "hidden"}))
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "y.png", "text": "seen"}))
    assert read_metadata(tmp_path, []) == {tmp_path / "y.png": "seen"}


def test_metadata_jsonl(tmp_path, mk):
    for name in ("a.png", "b.png", "sub/c.png", "d.png"):
        mk.rgb(tmp_path / name)
    rows = [{"file_name": "a.png", "text": "caption a"}, {"file_name": "sub/c.png", "text": "caption c"},
            {"file_name": "missing.png", "text": "gone"}, {"file_name": "b.png"}]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "d.txt").write_text("sidecar wins")
    result = scan(tmp_path)
    found = by_name(result)
    assert found["a.png"].caption == "caption a" and found["a.png"].caption_from == "metadata"
    assert found["sub/c.png"].caption == "caption c"
    assert found["b.png"].caption_from == "none"
    assert found["d.png"].caption == "sidecar wins"
    notes = " | ".join(result.notes)
    assert "line 4: needs `file_name` and `text`" in notes
    assert "line 5: not valid JSON" in notes
    assert "1 metadata rows name files that do not exist" in notes



def test_metadata_csv_in_a_subfolder(tmp_path, mk):
    mk.rgb(tmp_path / "part" / "x.png")
    mk.rgb(tmp_path / "part" / "y.png")
    (tmp_path / "part" / "metadata.csv").write_text('file_name,text\nx.png,"a cat, sitting"\ny.png,\n')
    found = by_name(scan(tmp_path))
    assert found["part/x.png"].caption == "a cat, sitting"
    assert found["part/y.png"].caption == "" and found["part/y.png"].caption_empty_file


def test_hostile_rows_are_notes_never_errors(tmp_path, mk):
    mk.rgb(tmp_path / "a.png")
    rows = ["[" * 200_000, "9" * 5000, json.dumps({"file_name": "../a.png", "text": "escapes"}),
            json.dumps({"file_name": "/etc/passwd", "text": "absolute"}), json.dumps({"file_name": 5, "text": "x"}),
            json.dumps({"file_name": "a.png", "text": ["not", "text"]}), json.dumps({"file_name": "a.png", "text": "ok\udcff"})]
    (tmp_path / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    result = scan(tmp_path)
    notes = " | ".join(result.notes)
    assert "line 1: not valid JSON (nested too deeply)" in notes and "line 2: not valid JSON" in notes
    assert "line 3: file_name '../a.png' must be a path inside" in notes and "line 4: file_name '/etc/passwd'" in notes
    assert "line 5: needs `file_name` and `text`" in notes and "line 6: needs" in notes
    assert by_name(result)["a.png"].caption == "ok?"  # a lone surrogate from a JSON escape is not kept


def test_a_metadata_file_that_is_not_a_regular_file_is_noted(tmp_path, mk):
    import os

    mk.rgb(tmp_path / "a.png")
    os.mkfifo(tmp_path / "metadata.jsonl")  # reading it would hang
    (tmp_path / "sub" / "metadata.csv").mkdir(parents=True)
    notes = " | ".join(scan(tmp_path).notes)
    assert "metadata.jsonl is not used: not a regular file (only regular files are read): this is a FIFO" in notes
    assert "metadata.csv is not used: not a regular file (only regular files are read): this is a folder" in notes
