"""One run per run folder: the lock file (train/runlock.py)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from sdlora.errors import SdloraError
from sdlora.train.runlock import LOCK_FILE, RunLock

HOLD = f"""
import fcntl, os, sys
fd = os.open(os.path.join(sys.argv[1], "{LOCK_FILE}"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)  # what RunLock does, without importing torch in a subprocess
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(os.name != "posix", reason="fcntl locks")
def test_a_second_holder_gets_a_one_line_error_naming_the_pid(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(SdloraError, match=rf"in use by another sdlora run \(process {proc.pid}\)") as info:
            RunLock(tmp_path).acquire()
        assert "\n" not in str(info.value)
    finally:
        proc.stdin.close()
        proc.wait()
    with RunLock(tmp_path):  # released when its process ended
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_stale_lock_from_a_dead_process_is_taken_over_with_a_message(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(dead.stdout)
    with caplog.at_level(logging.WARNING, logger="sdlora"), RunLock(tmp_path):
        pass
    assert f"left by process {dead.stdout.strip()}, which is no longer running" in caplog.text


def test_lock_in_the_same_process_is_refused_until_released(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    with pytest.raises(SdloraError, match="in use"):
        RunLock(tmp_path / "run").acquire()
    first.release()
    RunLock(tmp_path / "run").acquire().release()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder_is_one_line(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(SdloraError, match="cannot use this run folder"):
            RunLock(tmp_path / "run").acquire()
    finally:
        tmp_path.chmod(0o700)
