"""Training a LoRA: `train(cfg)` runs the loop in sdlora.train.loop; `run(...)` is what `sdlora train`
calls (config file + flags + --set). Helpers live one concern per module: noise, loss, optim, step,
checkpoint, state, setup, batches, validation, progress, guard, classgen, export."""
from sdlora.train.entry import resolve_config, run
from sdlora.train.loop import TrainResult, train

__all__ = ["TrainResult", "resolve_config", "run", "train"]
