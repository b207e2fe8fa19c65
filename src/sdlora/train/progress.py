"""What a run reports: a progress bar, TensorBoard scalars and images, and a plain-text log file.

Only the main process reports (the others get a disabled Progress), so every line and event is
written once. The bar shows step, smoothed loss, learning rate, it/s and ETA (tqdm computes the last
two); scalars go to TensorBoard and train.log every `log.every_n_steps` steps.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from tqdm.auto import tqdm

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
    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True, every: int = 10):
        self.enabled, self.every = enabled, max(1, every)
        self.loss = SmoothedValue()
        self.bar = None
        self.writer = None
        self._handler = None
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

    def image(self, tag: str, image, step: int) -> None:
        """A PIL image to TensorBoard (HWC uint8)."""
        if self.writer is not None:
            import numpy as np

            self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def message(self, text: str, level: int = logging.INFO) -> None:
        """A line for the console (above the bar) and the log file."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.clear()
        log.log(level, text)
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self._handler is not None:
            logging.getLogger("sdlora").removeHandler(self._handler)
            self._handler.close()
