"""Loading Stable Diffusion 1.4 (hub id, diffusers folder, single .ckpt/.safetensors, bundled sd-tiny)
and its stand-ins (full-size random skeleton, tiny random models). See docs/architecture.md."""
from sdlora.models.components import SDComponents
from sdlora.models.skeleton import tiny_components
from sdlora.models.tokenizer import load_tokenizer

__all__ = ["SDComponents", "load_tokenizer", "tiny_components"]
