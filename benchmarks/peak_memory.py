"""Where a run reaches its peak resident memory: `sdlora train` in-process, RSS sampled in a thread.

    python benchmarks/peak_memory.py -- train --model DIR --data DIR --resolution 256 --steps 2 ...

Everything after `--` is the sdlora command line. A thread reads the process's RSS every 20 ms and,
at each new high (+30 MB), records what the main thread is running (its innermost frames in sdlora,
diffusers, transformers, accelerate, torch.nn / autograd). Printed at the end: those highs above
--above GB, an RSS timeline every 2 s, and ru_maxrss (the figure benchmarks/vs_diffusers.py compares).
With --detail, each high also records what the memory is: /proc/self/smaps_rollup's anonymous vs
file-backed resident pages, and glibc's heap (mallinfo2: bytes in use, free inside the heap, in
mmap()ed blocks), so the peak can be split into weights (file pages of the memory-mapped safetensors),
tensors in use, and allocator slack. Linux (it reads /proc through psutil, which accelerate already needs).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import resource
import sys
import threading
import time
import traceback

from pathlib import Path

import psutil

PACKAGES = ("sdlora", "diffusers", "transformers", "accelerate", "safetensors", "torch/nn", "torch/optim", "autograd")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def memory_detail() -> str:
    """Anonymous / file-backed resident pages (smaps_rollup) and glibc's heap (mallinfo2), in GB."""
    rollup = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        rollup[key] = int(value.split()[0]) * 1024
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()
    gb = 1e9
    return (f"anon {rollup.get('Anonymous', 0) / gb:.3f} file {(rollup['Rss'] - rollup.get('Anonymous', 0)) / gb:.3f}"
            f" | heap in use {m.uordblks / gb:.3f} free {m.fordblks / gb:.3f} (top {m.keepcost / gb:.3f})"
            f" mmapped {m.hblkhd / gb:.3f} in {m.hblks}")


class Sampler(threading.Thread):
    """RSS every `every` s; at each new high by `step` bytes, the main thread's innermost frames."""

    def __init__(self, every: float = 0.02, step: float = 30e6, frames: int = 6, detail: bool = False):
        super().__init__(daemon=True)
        self.every, self.step, self.frames, self.detail = every, step, frames, detail
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
                where = self.where()
                if self.detail:
                    where.append(memory_detail())
                self.highs.append((now, rss, where))
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
    p.add_argument("--detail", action="store_true", help="also anonymous/file pages and glibc's heap at each high")
    p.add_argument("--step", type=float, default=30.0, help="record a new high every this many MB")
    args, command = p.parse_args(argv[:split]), argv[split + 1:]
    if not command:
        raise SystemExit("give the sdlora command after --, e.g. -- train --model tiny --data DIR --steps 2")
    from sdlora.cli import main as sdlora_main

    sampler = Sampler(step=args.step * 1e6, detail=args.detail)
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
