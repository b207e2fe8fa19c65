import json
from pathlib import Path

import pytest

from sdlora.cli import main
from sdlora.config import DataConfig
from sdlora.data.inspect import inspect_paths, render_report, resolution_histogram
from sdlora.data.sources import ImageRecord
from sdlora.errors import SdloraError


@pytest.fixture(scope="module")
def report(mixed_folder, tokenizer):
    folder, _, _ = mixed_folder
    return inspect_paths([str(folder)], DataConfig(resolution=64, bucket_step=16, min_bucket_side=32,
                                                   max_bucket_side=128), tokenizer=tokenizer)


def test_every_bad_file_is_reported_once_with_its_reason(report, mixed_folder):
    folder, good, bad = mixed_folder
    got = {Path(k["path"]).relative_to(folder).as_posix(): k["code"] for k in report["skipped"]}
    assert got == bad and len(report["skipped"]) == len(bad)
    assert report["totals"] == {"files": len(good) + len(bad), "usable": len(good), "skipped": len(bad)}
    assert sum(report["buckets"].values()) == len(good) == sum(report["resolutions"].values())
    assert sum(report["skipped_by_reason"].values()) == len(bad)
    assert report["sources"][0]["usable"] + report["sources"][0]["skipped"] == report["totals"]["files"]


def test_caption_coverage_and_tags(report, mixed_folder):
    _, good, _ = mixed_folder
    caps = report["captions"]
    assert caps["from_sidecar"] == 2 and caps["missing"] == len(good) - 2
    assert dict(report["top_tags"])["1girl"] == 2 and dict(report["top_tags"])["red hair"] == 1
    text = render_report(report)
    assert f"{len(good) - 2} images have no caption" in text
    assert "junk/truncated.jpg: truncated file" in text and "9 files will be skipped" in text


def test_duplicates_upscaling_empty_and_long_captions(tmp_path, mk, tokenizer):
    mk.rgb(tmp_path / "a.png", 128, 128, seed=1)
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    mk.rgb(tmp_path / "small.png", 40, 30, seed=2)
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "small.txt").write_text(", ".join(f"word{i} thing{i}" for i in range(50)))
    cfg = DataConfig(resolution=64, bucket_step=16, min_bucket_side=32, max_bucket_side=128)
    report = inspect_paths([str(tmp_path)], cfg, tokenizer=tokenizer)
    assert [sorted(Path(p).name for p in g) for g in report["duplicates"]] == [["a.png", "b.png"]]
    assert report["upscaled"] == 1 and report["captions"]["empty_files"] == 1
    assert report["captions"]["too_long"] == 1 and report["captions"]["max_tokens"] > 75
    text = "\n".join(report["warnings"])
    assert "1 image is smaller than its bucket (resolution 64 px) and will be upscaled" in text
    assert "1 image is an exact duplicate" in text and "1 caption is empty" in text
    assert "1 caption is longer than 75 tokens" in text
    no_up = inspect_paths([str(tmp_path)], DataConfig(**{**cfg.__dict__, "no_upscale": True}), tokenizer=tokenizer)
    assert no_up["skipped_by_reason"] == {"too_small": 1} and no_up["totals"]["usable"] == 2


def test_resolution_histogram_bins():
    recs = [ImageRecord(f"{i}", 0, w, h, "d", "", "none") for i, (w, h) in
            enumerate([(100, 5000), (300, 256), (511, 900), (512, 512), (3000, 2048), (1023, 1024)])]
    hist = resolution_histogram(recs)
    assert hist == {"<256": 1, "256-511": 2, "512-767": 1, "768-1023": 1, "1024-2047": 0, ">=2048": 1}


def test_histogram_bins_follow_the_training_resolution():
    recs = [ImageRecord(f"{i}", 0, s, s, "d", "", "none") for i, s in enumerate([20, 40, 64, 64, 100, 200, 300])]
    assert resolution_histogram(recs, 64) == {"<32": 1, "32-63": 1, "64-95": 2, "96-127": 1, "128-255": 1,
                                              ">=256": 1}


def test_report_reads_out_kohya_repeats_and_tag_frequency(tmp_path, mk, tokenizer):
    mk.rgb(tmp_path / "10_sks dog" / "a.png", 64, 64)
    mk.rgb(tmp_path / "20240101_trip" / "b.png", 64, 64, seed=1)
    (tmp_path / "20240101_trip" / "b.txt").write_text("beach, Sunset")
    report = inspect_paths([str(tmp_path)], DataConfig(resolution=64, bucket_step=16, min_bucket_side=32,
                                                       max_bucket_side=128), tokenizer=tokenizer)
    assert report["sources"][0]["folders"] == {"10_sks dog": {"repeats": 10, "caption": "sks dog", "images": 1}}
    assert report["sources"][0]["items_per_epoch"] == 11
    assert report["tag_frequency"] == {"10_sks dog": {"sks dog": 1}, tmp_path.name: {"beach": 1, "sunset": 1}}
    text = render_report(report)
    assert "kohya folder 10_sks dog: 10 repeats x 1 image, caption 'sks dog'" in text
    assert "20240101 is not read as a repeat count" in text


def test_cli_inspect_writes_json_and_never_fails_on_bad_files(mixed_folder, tmp_path, capsys):
    folder, good, bad = mixed_folder
    out = tmp_path / "r.json"
    assert main(["dataset", "inspect", str(folder), "--resolution", "64", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["totals"]["skipped"] == len(bad) and data["settings"]["resolution"] == 64
    printed = capsys.readouterr().out
    assert f"{len(good) + len(bad)} image files: {len(good)} usable" in printed
    assert printed.rstrip().endswith(f"full report (JSON) written to {out}")


@pytest.mark.parametrize("where, message", [("missing/r.json", "does not exist; create it first"),
                                            (".", "is a folder: give a file name")])
def test_a_bad_json_path_is_refused_before_scanning(tmp_path, mk, capsys, where, message):
    from sdlora.data.inspect import run_inspect

    mk.rgb(tmp_path / "d" / "a.png", 64, 64)
    with pytest.raises(SdloraError, match=message):
        run_inspect([str(tmp_path / "d")], json_path=str(tmp_path / where))
    try:
        rc = main(["dataset", "inspect", str(tmp_path / "d"), "--json", str(tmp_path / where)])
    except SystemExit as exc:  # the CLI may refuse it while parsing
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and "--json" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_inspect_config_sources_and_caption_extension(tmp_path, mk, capsys):
    mk.rgb(tmp_path / "d" / "a.png", 64, 64)
    (tmp_path / "d" / "a.caption").write_text("tagged")
    run = tmp_path / "run.toml"
    run.write_text(f'[data]\nresolution = 64\n[[data.sources]]\npath = "{(tmp_path / "d").as_posix()}"\n'
                   'caption_extension = ".caption"\n')
    assert main(["dataset", "inspect", "--config", str(run)]) == 0
    assert "1 caption files" in capsys.readouterr().out
    assert main(["dataset", "inspect", str(tmp_path / "d"), "--caption-extension", ".caption"]) == 0
    assert "1 caption files" in capsys.readouterr().out
    assert main(["dataset", "inspect", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["dataset", "inspect"]) == 2


def test_inspect_reports_masks_found_missing_mismatched_and_unreadable(tmp_path, mk, capsys):
    from PIL import Image

    for name in "abcd":
        mk.rgb(tmp_path / "d" / f"{name}.png", 64, 48)
    mk.save(tmp_path / "m" / "a.png", Image.new("L", (64, 48), 255))
    mk.save(tmp_path / "m" / "b.png", Image.new("L", (32, 24), 255))  # half size: mismatched
    mk.write(tmp_path / "m" / "c.png", b"broken")
    assert main(["dataset", "inspect", str(tmp_path / "d"), "--resolution", "64", "--mask-dir", str(tmp_path / "m"),
                 "--json", str(tmp_path / "r.json")]) == 0
    masks = json.loads((tmp_path / "r.json").read_text())["masks"]
    assert (masks["mode"], masks["found"], masks["missing"], masks["mismatched"], masks["bad"]) == ("folder", 1, 1, 1, 1)
    assert masks["mismatched_list"][0]["mask_size"] == [32, 24] and masks["missing_examples"][0].endswith("d.png")
    text = capsys.readouterr().out
    assert "masks (folder): 1 found, 1 missing, 1 mismatched in size, 1 unreadable" in text
    assert "b.png is 32x24, image" in text and "1 image has no mask file and will train on the whole image" in text
    assert "1 mask differs in size from its image: training would stop" in text
    assert main(["dataset", "inspect", str(tmp_path / "d"), "--masks", "alpha"]) == 0
    assert "masks (alpha): 0 found, 4 missing" in capsys.readouterr().out
    assert main(["dataset", "inspect", str(tmp_path / "d")]) == 0
    assert "masks (" not in capsys.readouterr().out
