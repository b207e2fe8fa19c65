"""What a run reports: a progress bar, TensorBoard scalars and images, a plain-text log file, and
accelerate trackers (Weights & Biases with log.wandb) that get the same scalars and sample grids.

Only the main process reports (the others get a disabled Progress), so every line and event is
written once. The bar shows step, smoothed loss, learning rate, it/s and ETA (tqdm computes the last
two); scalars go to TensorBoard and train.log every `log.every_n_steps` steps. While the bar is shown,
console log lines are printed above it (tqdm.write), never glued onto it; end_bar() takes the bar
away so that a run's last line (where the LoRA is) is not followed by a redrawn bar. A fatal error
is written into train.log too, so the log tells how a run ended.
"""
from __future__ import annotations

import contextlib
import logging
import math
import secrets
import sys
import traceback
from pathlib import Path

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sdlora.errors import SdloraError
from sdlora.fileio import atomic_write_text, is_regular

log = logging.getLogger("sdlora.train")
LOG_FILE = "train.log"


class SmoothedValue:
    """Bias-corrected exponential moving average (ignores non-finite values)."""

    def __init__(self, beta: float = 0.9):
        self.beta, self.avg, self.n = beta, 0.0, 0

    def update(self, value: float) -> float:
        if math.isfinite(value):
            self.n += 1
            self.avg = self.beta * self.avg + (1 - self.beta) * value
        return self.value

    @property
    def value(self) -> float:
        return self.avg / (1 - self.beta**self.n) if self.n else float("nan")


class Progress:
    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True, every: int = 10,
                 trackers: list | None = None):
        """trackers: started accelerate GeneralTrackers (see wandb_tracker); closed with the Progress."""
        self.enabled, self.every = enabled, max(1, every)
        self.trackers = list(trackers or []) if enabled else []
        self.loss = SmoothedValue()
        self.bar = None
        self.writer = None
        self._handler = None
        self._redirect = contextlib.ExitStack()
        self._fatal_logged = False
        if enabled:
            self._handler = logging.FileHandler(Path(run_dir) / LOG_FILE, encoding="utf-8")
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logging.getLogger("sdlora").addHandler(self._handler)
            logging.getLogger("sdlora").setLevel(logging.INFO)
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "logs"))

    def start(self, total: int, initial: int = 0) -> None:
        """Show the bar (steps initial..total)."""
        self.bar = tqdm(total=total, initial=initial, desc="training", unit="step", dynamic_ncols=True,
                        disable=not self.enabled)
        if self.enabled:
            self._redirect.enter_context(logging_redirect_tqdm())  # console log lines go above the bar

    def end_bar(self) -> None:
        """Take the bar off the screen (its last state stays as a line); later messages print plainly."""
        self._redirect.close()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def step(self, step: int, loss: float, lr: float, grad_norm: float | None, skipped: bool) -> None:
        """Record optimizer step `step` (1-based count of steps done)."""
        smooth = self.loss.update(loss)
        if not self.enabled or self.bar is None:
            return
        self.bar.set_postfix(loss=f"{smooth:.4f}", lr=f"{lr:.2e}", refresh=False)
        self.bar.update(1)
        if step % self.every == 0 or skipped:
            scalars = {"train/loss": loss, "train/loss_smoothed": smooth, "train/lr": lr}
            if grad_norm is not None:
                scalars["train/grad_norm"] = grad_norm
            self.scalars(step, scalars)
            rate = self.bar.format_dict.get("rate")
            log.info("step %d: loss %.5f (smoothed %.5f), lr %.3g%s%s%s", step, loss, smooth, lr,
                     f", grad norm {grad_norm:.4g}" if grad_norm is not None else "",
                     f", {rate:.2f} it/s" if rate else "", " [skipped: non-finite]" if skipped else "")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
        for tracker in self.trackers:
            tracker.log(dict(values), step=step)

    def image(self, tag: str, image, step: int) -> None:
        """A PIL image to TensorBoard (HWC uint8) and the trackers."""
        if self.writer is not None:
            import numpy as np

            self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")
        for tracker in self.trackers:
            tracker.log_images({tag: [image.convert("RGB")]}, step=step)

    def message(self, text: str, level: int = logging.INFO) -> None:
        """A line for the console (above the bar) and the log file."""
        if self.enabled:
            log.log(level, text)

    def fatal(self, error: BaseException) -> None:
        """Write the error that ends the run into train.log only (the caller shows it on the console):
        a one-line SdloraError as it is, anything else with its traceback."""
        if self._handler is None or self._fatal_logged:
            return
        self._fatal_logged = True
        if isinstance(error, SdloraError):
            text = f"stopped: {error}"
        elif isinstance(error, KeyboardInterrupt):
            text = "stopped at once by a second Ctrl-C (the newest checkpoint is the one to resume from)"
        else:
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
            text = f"stopped by an unexpected error: {type(error).__name__}: {error}\n{trace}"
        self._handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, text, None, None))

    def close(self) -> None:
        """Release the bar, TensorBoard and the log file; an exception being handled is logged first."""
        error = sys.exc_info()[1]
        if error is not None:
            self.fatal(error)
        self.end_bar()
        if self.writer is not None:
            self.writer.close()
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
        if self._handler is not None:
            logging.getLogger("sdlora").removeHandler(self._handler)
            self._handler.close()


def check_wandb() -> None:
    """log.wandb needs the wandb package: say so before the model loads."""
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise SdloraError("log.wandb: the wandb package is not installed; `pip install sdlora[wandb]`, "
                          "or set log.wandb = false")


WANDB_ID_FILE = Path("wandb") / "sdlora-run-id"  # in the run folder: the W&B run a resume continues


def wandb_run_id(run_dir: str | Path, resuming: bool) -> str:
    """The W&B run id for this run: the one the folder's run started with when resuming (a resumed run
    continues the same W&B run, its charts one line), a new one otherwise (a new run in the folder)."""
    path = Path(run_dir) / WANDB_ID_FILE
    if resuming and is_regular(path):
        with open(path, "rb") as handle:  # a regular file (checked); at most 65 bytes of it are read
            run_id = handle.read(65).decode("ascii", errors="replace").strip()
        if run_id.isascii() and run_id.isalnum() and len(run_id) <= 64:
            return run_id
        log.warning("%s does not hold a W&B run id; the resumed run starts a new W&B run", path)
    run_id = secrets.token_hex(4)  # 8 characters of [0-9a-f], like W&B's own ids
    atomic_write_text(path, run_id + "\n")
    return run_id


def wandb_tracker(run_dir: str | Path, *, project: str, name: str, config: dict, resuming: bool = False):
    """A started accelerate WandBTracker writing under run_dir/wandb (WANDB_MODE=offline: only there)."""
    import wandb
    from accelerate.tracking import WandBTracker

    try:
        run_id = wandb_run_id(run_dir, resuming)
    except OSError as exc:
        raise SdloraError(f"{Path(run_dir) / WANDB_ID_FILE}: cannot write the W&B run id ({exc.strerror or exc}); "
                          "choose a writable --output") from None
    tracker = WandBTracker(project, name=name, dir=str(run_dir), config=config, id=run_id, resume="allow",
                           settings=wandb.Settings(console="off"))  # tqdm and our log own the console
    try:
        tracker.start()
    except Exception as exc:  # no API key, no network, a bad project: one line, nothing trained yet
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdloraError(f"log.wandb: could not start the W&B run ({first}); run `wandb login`, or set "
                          "WANDB_MODE=offline (upload later with `wandb sync`), or set log.wandb = false") from None
    return tracker


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def start_summary(*, params: int, modules: dict[str, int], steps: int, start: int = 0, batch_size: int,
                  grad_accum: int = 1, processes: int = 1, precision: str, device: str) -> str:
    """The run in words: "training 325,632 LoRA parameters in 84 UNet modules, 30 steps, batch 1,
    fp32 on the CPU" (modules: {"unet": n, "text_encoder": n}; precision as a person reads it)."""
    names = {"unet": "UNet", "text_encoder": "text-encoder"}
    parts = [f"{n:,} {names.get(c, c)}" for c, n in modules.items() if n]
    where = " and ".join(parts) + (" module" if sum(modules.values()) == 1 else " modules")
    todo = plural(steps, "step") + (f" (continuing at step {start:,})" if start else "")
    batch = f"batch {batch_size}" + (f" x {grad_accum} accumulated" if grad_accum > 1 else "")
    if processes > 1:
        batch += f" on each of {processes} processes"
    kind = str(device).split(":")[0]
    on = "the CPU" if kind == "cpu" else f"the GPU ({device})" if kind == "cuda" else str(device)
    return f"training {plural(params, 'LoRA parameter')} in {where}, {todo}, {batch}, {precision} on {on}"


def continue_command(run_dir: str | Path, argv: list[str] | None = None) -> str:
    """The command that continues an interrupted run: the `sdlora train ...` command line that started it
    with `--resume <run dir>` (replacing any --resume it had), or the shortest one when not run from it."""
    import shlex

    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name if argv else ""
    if program in ("sdlora", "__main__.py") and "train" in argv[1:2]:
        args = argv[2:]
        kept, skip = [], False
        for arg in args:
            if skip:
                skip = False
            elif arg == "--resume":
                skip = True
            elif not arg.startswith("--resume="):
                kept.append(arg)
        return shlex.join(["sdlora", "train", *kept, "--resume", str(run_dir)])
    return shlex.join(["sdlora", "train", "--resume", str(run_dir)])
