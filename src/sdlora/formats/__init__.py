"""LoRA files: kohya/A1111/ComfyUI, diffusers/PEFT and sdlora's native format, all converted to and from
one canonical in-memory dict (see sdlora.formats.canonical), and applied to a model with sdlora's own
LoRA layers (sdlora.formats.apply). See docs/architecture.md."""
from sdlora.formats.detect import detect_format
from sdlora.formats.io import FORMATS, convert_lora_file, load_lora_file, save_lora_file

__all__ = ["FORMATS", "convert_lora_file", "detect_format", "load_lora_file", "save_lora_file"]
