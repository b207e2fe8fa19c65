"""Where a run reaches its peak resident memory: `sdlora train` in-process, RSS sampled in a thread.

    python benchmarks/peak_memory.py -- train --model DIR --data DIR --resolution 256 --steps 2 ...

Everything after `--` is the sdlora command line. A thread reads the process's RSS every 20 ms and,
at each new high (+30 MB), records what the main thread is running (its innermost frames in sdlora,
diffusers, transformers, accelerate, torch.nn / autograd). Printed at the end: those highs above
--above GB, an RSS timeline every 2 s, and ru_maxrss (the figure benchmarks/vs_diffusers.py compares).
Linux (it reads /proc through psutil, which accelerate already needs).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
import traceback

import psutil

PACKAGES = ("sdlora", "diffusers", "transformers", "accelerate", "safetensors", "torch/nn", "torch/optim", "autograd")


class Sampler(threading.Thread):
    """RSS every `every` s; at each new high by `step` bytes, the main thread's innermost frames."""

    def __init__(self, every: float = 0.02, step: float = 30e6, frames: int = 6):
        super().__init__(daemon=True)
        self.every, self.step, self.frames = every, step, frames
        self.main = threading.get_ident()
        self.highs: list[tuple[float, int, list[str]]] = []
        self.timeline: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        proc, start, best, last = psutil.Process(), time.perf_counter(), 0, -1e9
        while not self.done.is_set():
            rss, now = proc.memory_info().rss, time.perf_counter() - start
            if now - last >= 2:
                self.timeline.append((now, rss))
                last = now
            if rss > best + self.step:
                best = rss
                self.highs.append((now, rss, self.where()))
            time.sleep(self.every)

    def where(self) -> list[str]:
        frame = sys._current_frames().get(self.main)
        stack = traceback.extract_stack(frame) if frame is not None else []
        ours = [f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in stack
                if any(p in f.filename for p in PACKAGES)]
        return ours[-self.frames:]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--above", type=float, default=2.0, help="print the highs above this many GB")
    args, command = p.parse_args(argv[:split]), argv[split + 1:]
    if not command:
        raise SystemExit("give the sdlora command after --, e.g. -- train --model tiny --data DIR --steps 2")
    from sdlora.cli import main as sdlora_main

    sampler = Sampler()
    sampler.start()
    try:
        sdlora_main(command)
    except SystemExit as exc:
        if exc.code:
            print(f"sdlora exited with {exc.code}")
    finally:
        sampler.done.set()
        sampler.join()
    for t, rss, frames in sampler.highs:
        if rss > args.above * 1e9:
            print(f"{t:8.1f} s {rss / 1e9:6.3f} GB  {' > '.join(frames)}")
    print("timeline (s:GB):", " ".join(f"{t:.0f}:{rss / 1e9:.2f}" for t, rss in sampler.timeline))
    print(f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9:.3f} GB")


if __name__ == "__main__":
    main()
