import json
import logging
import math
import re

import pytest
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.train.progress import LOG_FILE, Progress, SmoothedValue, continue_command, start_summary


def test_smoothed_value_is_bias_corrected_and_skips_nan():
    s = SmoothedValue(0.9)
    assert math.isnan(s.value)
    assert s.update(2.0) == pytest.approx(2.0)  # first value is not pulled towards 0
    s.update(float("nan"))
    assert s.value == pytest.approx(2.0)
    s.update(4.0)
    assert 2.0 < s.value < 4.0


def test_progress_writes_log_and_tensorboard(tmp_path):
    p = Progress(tmp_path, enabled=True, tensorboard=True, every=2)
    p.start(4)
    for step in range(1, 5):
        p.step(step, 1.0 / step, 1e-4, 0.5, skipped=step == 3)
    p.message("hello")
    p.image("samples", Image.new("RGB", (8, 8)), 4)
    p.close()
    text = (tmp_path / LOG_FILE).read_text()
    assert "step 2: loss" in text and "step 4: loss" in text and "step 1: loss" not in text
    assert "step 3: loss" in text and "[skipped: non-finite]" in text and "hello" in text
    events = list((tmp_path / "logs").glob("events.out.tfevents*"))
    assert events and events[0].stat().st_size > 0
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("sdlora").handlers)


def test_disabled_progress_writes_nothing(tmp_path):
    p = Progress(tmp_path, enabled=False)
    p.start(2)
    p.step(1, 1.0, 1e-4, None, False)
    p.message("x")
    p.close()
    assert list(tmp_path.iterdir()) == []


def test_log_lines_print_above_the_bar_and_the_last_line_stays_last(tmp_path, capsys):
    import sys

    console = logging.StreamHandler(sys.stderr)  # as the CLI's logging.basicConfig
    logging.getLogger().addHandler(console)
    try:
        p = Progress(tmp_path, enabled=True, tensorboard=False, every=1)
        p.start(3)
        for step in range(1, 4):
            p.step(step, 0.5, 1e-4, None, skipped=False)
        p.end_bar()
        p.message("done: the LoRA is x.safetensors")
        p.close()
    finally:
        logging.getLogger().removeHandler(console)
    err = capsys.readouterr().err
    starts = [m.start() for m in re.finditer(r"step \d: loss", err)]
    assert len(starts) == 3 and all(i == 0 or err[i - 1] in "\r\n" for i in starts)  # never glued onto the bar
    assert err.rstrip("\n").split("\n")[-1] == "done: the LoRA is x.safetensors"


def test_fatal_error_goes_into_the_log_file_once(tmp_path):
    p = Progress(tmp_path, enabled=True, tensorboard=False)
    p.message("training ...")
    try:
        raise SdloraError("disk full at /x")
    except SdloraError as exc:
        p.fatal(exc)
        p.close()  # closing while the error is handled does not log it twice
    (tmp_path / "q").mkdir()
    q = Progress(tmp_path / "q", enabled=True, tensorboard=False)
    try:
        raise RuntimeError("Input type (float) and bias type (c10::BFloat16) should be the same")
    except RuntimeError:
        q.close()  # a failed build closes its Progress inside the handler: the error is logged then
    (tmp_path / "k").mkdir()
    k = Progress(tmp_path / "k", enabled=True, tensorboard=False)
    k.fatal(KeyboardInterrupt())
    k.close()
    assert "stopped at once by a second Ctrl-C" in (tmp_path / "k" / LOG_FILE).read_text()
    text = (tmp_path / LOG_FILE).read_text()
    assert text.count("ERROR stopped: disk full at /x") == 1
    other = (tmp_path / "q" / LOG_FILE).read_text()
    assert "stopped by an unexpected error: RuntimeError: Input type (float)" in other and "Traceback" in other


@pytest.mark.parametrize("argv, expected", [
    (["/venv/bin/sdlora", "train", "--data", "my photos", "--output", "runs/a", "--steps", "30"],
     "sdlora train --data 'my photos' --output runs/a --steps 30 --resume runs/a"),
    (["/venv/bin/sdlora", "train", "--resume", "old", "--steps", "9", "--resume=x"],
     "sdlora train --steps 9 --resume runs/a"),
    (["/usr/bin/pytest", "-q"], "sdlora train --resume runs/a"),  # not run from the command line
])
def test_continue_command(argv, expected):
    assert continue_command("runs/a", argv) == expected


def test_start_summary_in_words():
    text = start_summary(params=325632, modules={"unet": 84}, steps=30, batch_size=1, precision="fp32", device="cpu")
    assert text == "training 325,632 LoRA parameters in 84 UNet modules, 30 steps, batch 1, fp32 on the CPU"
    text = start_summary(params=1, modules={"unet": 1, "text_encoder": 72}, steps=1, start=1, batch_size=2,
                         grad_accum=4, processes=2, precision="bf16", device="cuda:0")
    assert text == ("training 1 LoRA parameter in 1 UNet and 72 text-encoder modules, 1 step (continuing at "
                    "step 1), batch 2 x 4 accumulated on each of 2 processes, bf16 on the GPU (cuda:0)")


def wandb_records(run_file):
    """The run record and the history rows of an offline W&B run file (LevelDB-style log of protobuf Records: a 7-byte
    `:W&B` header, 32 KiB blocks, each chunk led by crc32 (4), length (2), type (1 full, 2 first, 3 middle, 4 last))."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, chunk, rows, run = run_file.read_bytes(), 7, b"", [], None
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif kind == "run":
                run = record.run
    return run, rows


def test_wandb_gets_the_scalars_and_sample_grids(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from accelerate import PartialState

    from sdlora.config import load_config
    from sdlora.train.build import open_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    PartialState()  # as in a run (the Accelerator exists): accelerate's tracker logs through it
    cfg = load_config(None, ['data.sources=[{path = "imgs"}]', f"save.output_dir={tmp_path / 'me'}", "log.wandb=true",
                             "log.wandb_project=sdlora-test", "train.lr=0.0003"])
    p = Progress(tmp_path, enabled=True, tensorboard=False, every=2, trackers=[open_wandb(cfg, tmp_path)])
    p.start(4)
    for step in range(1, 5):
        p.step(step, 1.0 / step, 1e-4, 0.5, skipped=False)
    p.image("samples/lora", Image.new("RGB", (8, 8), (255, 0, 0)), 4)
    p.close()
    wandb.teardown()  # the W&B service writes the run file; this waits until it has finished
    [run] = (tmp_path / "wandb").glob("offline-run-*")
    record, rows = wandb_records(next(run.glob("run-*.wandb")))
    assert record.project == "sdlora-test" and record.display_name == "me"  # named after the LoRA by default
    assert any(i.key == "train" and json.loads(i.value_json)["lr"] == 3e-4 for i in record.config.update)
    losses = {r["_step"]: r["train/loss"] for r in rows if "train/loss" in r}
    assert losses == {2: 0.5, 4: 0.25}  # every 2 steps, as TensorBoard
    assert all(r["train/lr"] == 1e-4 and r["train/grad_norm"] == 0.5 for r in rows if "train/loss" in r)
    [grid] = [r for r in rows if "samples/lora/filenames" in r]
    assert grid["_step"] == 4 and grid["samples/lora/count"] == 1
    image = Image.open(run / "files" / grid["samples/lora/filenames"][0])
    assert image.size == (8, 8) and image.getpixel((0, 0))[:3] == (255, 0, 0)


def test_wandb_without_the_package_is_one_line_naming_the_key(make_cfg, monkeypatch):
    import sys

    from sdlora.train import train

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(SdloraError, match=r"log.wandb: the wandb package is not installed; `pip install sdlora\[wandb\]`"):
        train(make_cfg(**{"log.wandb": True}))


def test_a_resumed_run_continues_its_wandb_run_and_a_new_run_starts_another(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from accelerate import PartialState

    from sdlora.config import load_config
    from sdlora.train.build import open_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    PartialState()
    cfg = load_config(None, ['data.sources=[{path = "imgs"}]', f"save.output_dir={tmp_path}", "log.wandb=true"])

    def run_id(resuming: bool) -> str:
        tracker = open_wandb(cfg, tmp_path, resuming=resuming)
        tracker.log({"train/loss": 1.0}, step=1)
        tracker.finish()
        return tracker.run.id

    first = run_id(False)
    assert run_id(True) == first  # `--resume`: the same W&B run, its charts continue
    assert (tmp_path / "wandb" / "sdlora-run-id").read_text().strip() == first
    fresh = run_id(False)  # the same folder trained anew: a W&B run of its own
    assert fresh != first and run_id(True) == fresh
    (tmp_path / "wandb" / "sdlora-run-id").write_text("../x\n")  # not an id: a new W&B run, not a traceback
    third = run_id(True)
    assert third not in (first, fresh, "../x")
    wandb.teardown()
    # offline-run-<date>_<time>-<id>, with a -N suffix when one id starts twice in the same second
    ids = [re.fullmatch(r"offline-run-\d{8}_\d{6}-([0-9a-z]+)(-\d+)?", p.name)[1]
           for p in (tmp_path / "wandb").glob("offline-run-*")]
    assert sorted(ids) == sorted([first, first, fresh, fresh, third])
