"""One typed config tree for a training run: every default lives here, every field is documented.

A run is a TOML file whose tables mirror the dataclasses below (`[model]`, `[lora]`, `[data]`,
`[[data.sources]]`, `[train]`, `[save]`, `[validation]`, `[log]`). Presets and recipes list only what
differs. Unknown keys and wrong types raise `SdloraError` naming the dotted key; the resolved config is
written next to every output (`to_toml`). The loading machinery is generic: it reads the dataclass
type hints, so adding a field is one line here.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from sdlora.errors import SdloraError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def opt(default: Any, doc: str) -> Any:
    """A documented field. Mutable defaults (lists, dicts) are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


Precision = Literal["auto", "no", "fp16", "bf16"]


@dataclass
class ModelConfig:
    name: str = opt("CompVis/stable-diffusion-v1-4",
                    "SD 1.x to train on: a hub id, a diffusers folder, a single .ckpt/.safetensors, or `tiny` (bundled sd-tiny).")
    revision: str | None = opt(None, "Hub revision (branch, tag or commit) when `name` is a hub id.")


@dataclass
class RankOverride:
    pattern: str = opt("", "Regular expression matched (fullmatch) against module paths, e.g. `unet\\.up_blocks\\.3\\..*`.")
    rank: int | None = opt(None, "Rank for matching modules (default: lora.rank).")
    alpha: float | None = opt(None, "Alpha for matching modules (default: their rank).")


@dataclass
class LoRAConfig:
    unet_preset: str = opt("unet-transformer",
                           "UNet targets: `unet-attn` (q/k/v/out, 128 modules), `unet-transformer` (kohya default, 192 modules).")
    conv: bool = opt(False, "Also adapt resnet and sampler convolutions (LoCon, the `unet-conv` preset).")
    conv_rank: int | None = opt(None, "Rank of conv adapters (default: lora.rank).")
    conv_alpha: float | None = opt(None, "Alpha of conv adapters (default: their rank).")
    rank: int = opt(16, "LoRA rank (dimension of the low-rank update).")
    alpha: float | None = opt(None, "LoRA alpha; the update is scaled by alpha/rank. Default: equal to rank (scale 1).")
    rs_scaling: bool = opt(False, "Rank-stabilised scaling alpha/sqrt(rank) instead of alpha/rank.")
    dora: bool = opt(False, "Weight-decomposed LoRA (DoRA): learn a magnitude vector per output channel.")
    init: Literal["kaiming", "gaussian"] = opt("kaiming", "Init of `down` (`up` always starts at zero).")
    dropout: float = opt(0.0, "Input dropout on the adapter path (training only).")
    rank_dropout: float = opt(0.0, "Per-sample dropout over rank channels, rescaled (training only).")
    module_dropout: float = opt(0.0, "Probability of skipping a whole adapter for a step (training only).")
    overrides: list[RankOverride] = opt([], "Per-module rank/alpha by pattern ([[lora.overrides]] tables).")
    train_text_encoder: bool = opt(False, "Also train a LoRA on the CLIP text encoder (72 modules).")
    text_encoder_rank: int | None = opt(None, "Rank of text-encoder adapters (default: lora.rank).")


@dataclass
class SourceConfig:
    path: str = opt("", "Folder of images (required). Sidecar captions, metadata.jsonl/csv and kohya `N_name` folders are detected.")
    role: Literal["instance", "class"] = opt("instance", "`class`: DreamBooth regularisation images for prior preservation.")
    prompt: str | None = opt(None, "Caption for images without one (DreamBooth instance/class prompt, e.g. `a photo of sks person`).")
    caption_extension: str = opt(".txt", "Sidecar caption extension (kohya uses `.caption`).")
    repeats: int = opt(1, "How many times each image is seen per epoch.")
    caption_prefix: str = opt("", "Text put before every caption (a trigger word), e.g. `sks style, `.")
    caption_suffix: str = opt("", "Text put after every caption.")
    num_images: int = opt(0, "For role=class: generate images with the base model until the folder holds this many.")


@dataclass
class DataConfig:
    sources: list[SourceConfig] = opt([], "Image sources ([[data.sources]] tables); several can be combined.")
    resolution: int = opt(512, "Training resolution: buckets keep about resolution^2 pixels.")
    buckets: bool = opt(True, "Aspect-ratio buckets; false: center/random crop to a square.")
    bucket_step: int = opt(64, "Bucket side lengths are multiples of this.")
    min_bucket_side: int = opt(256, "Smallest bucket side.")
    max_bucket_side: int = opt(1024, "Largest bucket side.")
    crop: Literal["center", "random"] = opt("center", "How an image is cropped to its bucket after resizing to cover it.")
    flip: bool = opt(False, "Random horizontal flip (do not use for asymmetric subjects such as text or faces with a part).")
    no_upscale: bool = opt(False, "Skip images smaller than their bucket instead of upscaling them.")
    background: str = opt("white", "Colour composited behind transparent images (name or #rrggbb).")
    max_image_pixels: int = opt(100_000_000, "Images with more pixels are skipped (decompression-bomb guard).")
    shuffle_tags: bool = opt(False, "Shuffle comma-separated tags each time a caption is used.")
    keep_tokens: int = opt(0, "Number of leading tags kept in place when shuffling (e.g. the trigger).")
    tag_dropout: float = opt(0.0, "Probability of dropping each tag (not the kept ones).")
    caption_dropout: float = opt(0.0, "Probability of training on an empty caption (helps classifier-free guidance).")
    validation_split: float = opt(0.0, "Fraction of images held out for validation loss.")
    cache_latents: Literal["off", "memory", "disk"] = opt("memory", "Cache VAE latents (the VAE is then freed from the device).")
    cache_text: bool = opt(True, "Cache text-encoder outputs when the text encoder is frozen and tags are neither shuffled nor dropped (caption dropout is fine).")
    cache_dir: str | None = opt(None, "Where disk caches go (default: <output_dir>/cache).")
    num_workers: int = opt(2, "Worker processes for decoding images and caching.")


@dataclass
class TrainConfig:
    seed: int = opt(42, "Random seed: same seed, same data and same settings give the same LoRA.")
    steps: int = opt(1500, "Optimizer steps to train (ignored when `epochs` is set).")
    epochs: int | None = opt(None, "Train for this many epochs instead of `steps`.")
    batch_size: int = opt(1, "Images per step and process.")
    grad_accum: int = opt(1, "Gradient accumulation steps (effective batch = batch_size * grad_accum * processes).")
    lr: float = opt(1e-4, "Learning rate of UNet adapters.")
    text_encoder_lr: float = opt(5e-5, "Learning rate of text-encoder adapters.")
    loraplus_ratio: float = opt(0.0, "LoRA+: `up` weights get lr * ratio (e.g. 16); 0 disables.")
    optimizer: Literal["adamw", "adamw8bit", "prodigy"] = opt("adamw", "adamw8bit needs `pip install sdlora[bnb]`, prodigy `sdlora[prodigy]`.")
    weight_decay: float = opt(1e-2, "AdamW weight decay.")
    betas: list[float] = opt([0.9, 0.999], "Adam betas.")
    eps: float = opt(1e-8, "Adam epsilon.")
    lr_scheduler: Literal["constant", "cosine", "linear", "cosine_with_restarts"] = opt("constant", "Learning-rate schedule after warmup.")
    warmup_steps: int = opt(0, "Linear warmup steps.")
    lr_cycles: int = opt(1, "Restarts for cosine_with_restarts.")
    max_grad_norm: float = opt(1.0, "Gradient-norm clipping; 0 disables.")
    mixed_precision: Precision = opt("auto", "auto: bf16 where the hardware computes bf16 natively (most CUDA GPUs, CPUs with AVX512-BF16/AMX), else fp16 on CUDA, fp32 otherwise.")
    gradient_checkpointing: bool = opt(False, "Recompute UNet activations in backward: much less VRAM, ~30% slower.")
    channels_last: bool = opt(False, "UNet weights and activations in channels-last memory format (faster convolutions on recent GPUs in bf16/fp16).")
    compile: bool = opt(False, "torch.compile the UNet with its LoRA: faster steps on GPUs; the first step (and each new batch shape, e.g. a bucket) compiles for a while.")
    compile_backend: str = opt("inductor", "torch.compile backend (see torch._dynamo.list_backends(); `aot_eager` compiles without code generation).")
    prediction_type: Literal["epsilon", "v_prediction"] = opt("epsilon", "Training target; SD 1.4 predicts epsilon.")
    min_snr_gamma: float | None = opt(None, "Min-SNR loss weighting gamma (5.0 is common); unset disables.")
    noise_offset: float = opt(0.0, "Noise offset (e.g. 0.05) for darker darks and brighter brights.")
    timestep_min: int = opt(0, "Smallest training timestep.")
    timestep_max: int = opt(1000, "Largest training timestep (exclusive).")
    prior_loss_weight: float = opt(1.0, "Weight of the prior-preservation loss on class images.")
    max_nonfinite_steps: int = opt(10, "Stop after this many consecutive steps with a NaN/inf loss.")


@dataclass
class SaveConfig:
    output_dir: str = opt("runs/lora", "Run folder: LoRA files, checkpoints, logs, samples, resolved config.")
    name: str = opt("", "File name stem of the saved LoRA; empty: the run folder's name (runs/me -> me.safetensors).")
    every_n_steps: int = opt(0, "Save a checkpoint every N steps; 0 disables.")
    every_n_epochs: int = opt(1, "Save a checkpoint every N epochs; 0 disables.")
    keep_last: int = opt(3, "Keep this many intermediate checkpoints (the final LoRA is always kept); 0 keeps all.")
    formats: list[Literal["kohya", "diffusers", "native"]] = opt(["kohya"], "File formats written: kohya (A1111/ComfyUI/diffusers), diffusers (PEFT keys), native.")
    precision: Literal["fp32", "fp16", "bf16"] = opt("fp16", "dtype of the saved LoRA weights.")
    save_state: bool = opt(True, "Save the full training state with each checkpoint, for --resume.")


@dataclass
class ValidationConfig:
    prompts: list[str] = opt([], "Prompts sampled during training (also once with the base model at step 0).")
    negative_prompt: str = opt("", "Negative prompt for validation samples.")
    seed: int = opt(1234, "Seed of validation samples (the same at every step, so grids are comparable).")
    every_n_steps: int = opt(0, "Sample every N steps (and at the end); 0: only at the end.")
    num_inference_steps: int = opt(30, "Sampling steps.")
    guidance_scale: float = opt(7.5, "Classifier-free guidance scale.")
    width: int | None = opt(None, "Sample width (default: data.resolution).")
    height: int | None = opt(None, "Sample height (default: data.resolution).")
    loss_every_n_steps: int = opt(0, "Validation loss on the held-out split with fixed noise/timesteps; 0 disables.")


@dataclass
class LogConfig:
    tensorboard: bool = opt(True, "Write TensorBoard logs under <output_dir>/logs.")
    every_n_steps: int = opt(10, "Log scalars every N steps.")


@dataclass
class RunConfig:
    model: ModelConfig = opt(None, "The base model.")
    lora: LoRAConfig = opt(None, "What is trained and how big it is.")
    data: DataConfig = opt(None, "Images, captions, buckets, caching.")
    train: TrainConfig = opt(None, "Optimisation.")
    save: SaveConfig = opt(None, "Outputs.")
    validation: ValidationConfig = opt(None, "Samples and validation loss during training.")
    log: LogConfig = opt(None, "Logging.")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None:
                setattr(self, f.name, _hints(type(self))[f.name]())


# ----------------------------------------------------------------------------- generic machinery

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    """Readable type for messages and docs: `int`, `float or none`, `"center" or "random"`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " or ".join(f'"{a}"' for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return getattr(tp, "__name__", None) or str(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type hint `tp`; return it converted (int->float, table->dataclass)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except SdloraError as exc:
                errors.append(str(exc))
        raise SdloraError(errors[0] if len(errors) == 1 else f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise SdloraError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SdloraError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise SdloraError(f"{key}: expected a table of settings, got {value!r}")
        return from_dict(tp, value, key)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise SdloraError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (TOML) dict; unknown keys and wrong types name the dotted key."""
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise SdloraError(f"unknown setting `{where}` (known here: {', '.join(sorted(known))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (["train", "lr"], 2e-4). Values are TOML; bare words are strings."""
    if "=" not in text:
        raise SdloraError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=2e-4")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in the raw config dict (numeric parts index lists: data.sources.0.path=x)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SdloraError(f"--set {text}: `{'.'.join(parts[:i + 1])}` is not an existing list index")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return data


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SdloraError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SdloraError(f"{path}: not valid TOML ({exc})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> RunConfig:
    """Defaults <- `base` dict <- TOML file <- `--set` overrides, then validated."""
    data = _merge(dict(base or {}), read_toml(path) if path else {})
    cfg = from_dict(RunConfig, apply_overrides(data, overrides or []))
    validate(cfg)
    return cfg


def _merge(into: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = _merge(dict(into[key]), value)
        else:
            into[key] = value
    return into


def validate(cfg: RunConfig) -> None:
    """Checks a type can't express; each names its key."""
    positive = {"lora.rank": cfg.lora.rank, "train.batch_size": cfg.train.batch_size,
                "train.grad_accum": cfg.train.grad_accum, "data.resolution": cfg.data.resolution,
                "data.bucket_step": cfg.data.bucket_step}
    for key, value in positive.items():
        if value <= 0:
            raise SdloraError(f"{key} must be positive, got {value}")
    for key in ("dropout", "rank_dropout", "module_dropout"):
        if not 0.0 <= getattr(cfg.lora, key) < 1.0:
            raise SdloraError(f"lora.{key} must be in [0, 1), got {getattr(cfg.lora, key)}")
    for key in ("tag_dropout", "caption_dropout", "validation_split"):
        if not 0.0 <= getattr(cfg.data, key) < 1.0:
            raise SdloraError(f"data.{key} must be in [0, 1), got {getattr(cfg.data, key)}")
    if cfg.data.resolution % 8:
        raise SdloraError(f"data.resolution must be a multiple of 8, got {cfg.data.resolution}")
    if not 0 <= cfg.train.timestep_min < cfg.train.timestep_max <= 1000:
        raise SdloraError("train.timestep_min/timestep_max must satisfy 0 <= min < max <= 1000")
    for i, source in enumerate(cfg.data.sources):
        if not source.path:
            raise SdloraError(f"data.sources[{i}].path is required")
        if source.repeats < 1:
            raise SdloraError(f"data.sources[{i}].repeats must be at least 1")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def to_toml(cfg: Any) -> str:
    """The resolved config as TOML (None values are left out: absent means default None)."""
    lines: list[str] = []
    _emit_table(to_dict(cfg), [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit_table(table: dict, path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_list(v) and v is not None}
    if path and scalars:
        lines.append(f"\n[{'.'.join(path)}]")
    lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
    for key, value in table.items():
        if _is_table(value):
            _emit_table(value, path + [key], lines)
        elif _is_table_list(value):
            for item in value:
                lines.append(f"\n[[{'.'.join(path + [key])}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def iter_fields(cls: type = RunConfig, prefix: str = ""):
    """Yield (dotted key, type name, default, doc) for every leaf field: used for the docs reference."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, key)
            continue
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        yield key, _type_name(tp), default, f.metadata.get("doc", "")
        if inner is not None and dataclasses.is_dataclass(inner):
            yield from iter_fields(inner, f"{key}[]")


def reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the dataclasses so it cannot drift."""
    lines = ["# Config reference", "",
             "Generated from `src/sdlora/config.py` by `python scripts/gen_config_docs.py`; do not edit by hand.",
             "Every key can be set in the run's TOML file or on the command line with `--set key=value`."]
    section = None
    for key, type_name, default, doc in iter_fields():
        top = key.split(".")[0]
        if top != section:
            section = top
            lines += ["", f"## [{section}]", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        shown = "" if default is None else f"`{_toml_value(default)}`".replace("|", "\\|")
        lines.append(f"| `{key}` | `{type_name}` | {shown} | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
