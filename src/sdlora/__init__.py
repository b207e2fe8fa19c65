"""sdlora: LoRA fine-tuning for Stable Diffusion 1.4, written from scratch in PyTorch.

This module re-exports the public API only; see docs/architecture.md for the layout.
"""
from sdlora.errors import SdloraError

__version__ = "0.1.0"
__all__ = ["SdloraError", "__version__"]
