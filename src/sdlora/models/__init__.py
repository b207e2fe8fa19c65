"""Loading Stable Diffusion 1.4 (hub id, diffusers folder, single .ckpt/.safetensors, bundled sd-tiny)
and its stand-ins (full-size random skeleton, tiny random models). See docs/architecture.md."""
from sdlora.models.checkpoint_io import convert_checkpoint
from sdlora.models.components import SDComponents
from sdlora.models.loader import DEFAULT_MODEL, load_components
from sdlora.models.names import canonical_te_path, model_te_path
from sdlora.models.pipeline import build_pipeline
from sdlora.models.skeleton import tiny_components
from sdlora.models.tokenizer import load_tokenizer

__all__ = [
    "DEFAULT_MODEL",
    "SDComponents",
    "build_pipeline",
    "canonical_te_path",
    "convert_checkpoint",
    "load_components",
    "load_tokenizer",
    "model_te_path",
    "tiny_components",
]
