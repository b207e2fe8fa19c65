"""Start/Stop/Resume refuse what would lose work, with a message naming the run folder."""
import pytest

from sdlora.config import RunConfig, SourceConfig
from sdlora.errors import SdloraError
from sdlora.ui import runner


def test_start_never_overwrites_a_run_with_checkpoints(tmp_path, shapes):
    cfg = RunConfig()
    cfg.save.output_dir = str(tmp_path / "run")
    cfg.data.sources = [SourceConfig(path=str(shapes))]
    (tmp_path / "run" / "checkpoints" / "step-000002").mkdir(parents=True)
    with pytest.raises(SdloraError, match="already holds a run"):
        runner.start(cfg)
    assert not (tmp_path / "run" / runner.PID_FILE).exists()


def test_start_needs_images_and_stop_resume_need_a_run(tmp_path):
    cfg = RunConfig()
    cfg.save.output_dir = str(tmp_path / "run")
    with pytest.raises(SdloraError, match="no training images"):
        runner.start(cfg)
    with pytest.raises(SdloraError, match="no run is training"):
        runner.stop(tmp_path / "run")
    with pytest.raises(SdloraError, match="config.toml"):
        runner.resume(tmp_path / "run")


def test_a_stale_pid_file_is_not_a_running_run(tmp_path):
    (tmp_path / runner.PID_FILE).write_text("999999999\n")
    assert runner.running_pid(tmp_path) is None
