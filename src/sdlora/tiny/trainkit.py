"""Small pieces shared by sd-tiny's two pretraining stages: stage options, a clock that ends a
stage on a step count or a time budget (whichever comes first), a learning-rate schedule that
follows the same progress, an EMA of weights, and progress lines."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch


@dataclass
class StageOptions:
    """One stage's knobs. The stage stops after `steps` steps or `time_budget` seconds."""

    steps: int
    batch_size: int
    lr: float
    time_budget: float = math.inf
    warmup: int = 100
    log_every: int = 100


class StageClock:
    """Progress in [0, 1] of a stage: the larger of steps done and time spent, as fractions."""

    def __init__(self, options: StageOptions):
        self.options = options
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def progress(self, step: int) -> float:
        by_steps = step / max(self.options.steps, 1)
        by_time = self.elapsed / self.options.time_budget if math.isfinite(self.options.time_budget) else 0.0
        return min(max(by_steps, by_time), 1.0)

    def done(self, step: int) -> bool:
        return self.progress(step) >= 1.0


def lr_at(options: StageOptions, step: int, progress: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 10% of `lr` at progress 1."""
    warm = min(1.0, (step + 1) / max(options.warmup, 1))
    return options.lr * warm * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of parameters (fp32 shadow copies); `decay` ramps up early on."""

    def __init__(self, modules: list[torch.nn.Module], decay: float = 0.999):
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for p, s in zip(self.params, self.shadow):
            p.copy_(s.to(p.dtype))


def log_line(stage: str, step: int, clock: StageClock, **values: float) -> str:
    parts = " ".join(f"{k}={v:.4f}" for k, v in values.items())
    line = f"[{stage}] step {step} {parts} elapsed={clock.elapsed:.1f}s"
    print(line, flush=True)
    return line


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
