"""Reading a run folder: train.log as the trainer's own Progress writes it, samples, LoRA files."""
import logging

from sdlora.train.progress import Progress, start_summary
from sdlora.ui import runstate


def _log_run(run_dir, steps, total, *, interrupted_at=None, warnings=()):
    progress = Progress(run_dir, tensorboard=False, every=1)
    progress.message(start_summary(params=1234, modules={"unet": 4}, steps=total, batch_size=1, precision="fp32",
                                   device="cpu"))
    progress.start(total, steps[0] - 1)
    for step in steps:
        progress.step(step, 0.5 / step, 1e-4 * step, 0.1, False)
        if step == 2:
            progress.message(f"step {step}: validation loss {0.3:.5f}")
    if interrupted_at:
        progress.message(f"interrupted at step {interrupted_at}; resume with --resume x")
    for text in warnings:
        progress.message(text, logging.WARNING)
    if not interrupted_at:
        progress.message(f"done: {total} steps, 0 skipped as non-finite; LoRA in {run_dir}/lora.safetensors")
    progress.close()


def test_stopped_then_resumed_and_finished_run(tmp_path):
    (tmp_path / "config.toml").write_text("")
    _log_run(tmp_path, [1, 2], 4, interrupted_at=2)
    view = runstate.read_run(tmp_path)
    assert (view.status, view.step, view.total) == ("stopped", 2, 4)
    assert "Resume" in view.summary[0]
    _log_run(tmp_path, [3, 4], 4, warnings=["WARNING: the LoRA changes nothing"])
    view = runstate.read_run(tmp_path)
    assert (view.status, view.step, view.total) == ("finished", 4, 4)
    assert [s for s, *_ in view.losses] == [1, 2, 3, 4]
    assert view.losses[3][1] == 0.125 and view.losses[3][3] == 4e-4
    assert view.validation == [(2, 0.3)]
    assert view.summary[0] == "WARNING: the LoRA changes nothing" and view.summary[1].startswith("done: 4 steps")
    assert view.progress_text().startswith("finished: step 4/4")
    assert tmp_path in runstate.list_runs(tmp_path.parent)


def test_failed_run_shows_the_error_line(tmp_path):
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "ui-console.log").write_text("loading\nsdlora: error: data.sources[0].path: /x is not a folder\n")
    view = runstate.read_run(tmp_path)
    assert view.status == "failed" and view.summary == ["error: data.sources[0].path: /x is not a folder"]
    assert "is not a folder" in view.log_tail


def test_samples_and_loras_in_order(tmp_path):
    for name in ("samples/step-000000-base.png", "samples/step-000004.png", "checkpoints/step-000002/lora.safetensors",
                 "checkpoints/step-000004/lora.safetensors", "lora.safetensors", "lora.emb.safetensors",
                 "checkpoints/step-000004/lora.emb.safetensors"):  # embeddings (pivotal tuning) are not LoRAs
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    view = runstate.read_run(tmp_path)
    assert [runstate.sample_label(p) for p in view.samples] == ["base model (step 0)", "step 4"]
    assert [p.relative_to(tmp_path).as_posix() for p in runstate.checkpoint_loras(tmp_path)] == [
        "lora.safetensors", "checkpoints/step-000004/lora.safetensors", "checkpoints/step-000002/lora.safetensors"]
    assert runstate.format_seconds(3725) == "1h02m" and runstate.format_seconds(65) == "1m05s"
