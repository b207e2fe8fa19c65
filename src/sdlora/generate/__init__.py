"""Image generation with SD 1.x and LoRA files: prompts (kohya prompt-file syntax), the scheduler
table, A1111-style PNG parameters, attaching/merging LoRAs, sampling, and `generate()`."""
from sdlora.generate.loras import LoadedLora, LoraSpec, parse_lora_arg
from sdlora.generate.pngmeta import Parameters, format_parameters, parse_parameters, read_parameters
from sdlora.generate.prompts import PromptSpec, parse_prompt_line, read_prompt_file
from sdlora.generate.job import GenerateJob, GenerateResult, generate, load_model
from sdlora.generate.sampling import Sample, Sampler
from sdlora.generate.schedulers import SCHEDULERS, make_scheduler

__all__ = ["GenerateJob", "GenerateResult", "LoadedLora", "LoraSpec", "Parameters", "PromptSpec", "SCHEDULERS",
           "Sample", "Sampler", "format_parameters", "generate", "load_model", "make_scheduler",
           "parse_lora_arg", "parse_parameters", "parse_prompt_line", "read_parameters", "read_prompt_file"]
