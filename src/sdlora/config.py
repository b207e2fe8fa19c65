"""One typed config tree for a training run: every default and every allowed range lives here.

A run is a TOML file whose tables mirror the dataclasses below (`[model]`, `[lora]`, `[embeddings]`, `[data]`,
`[[data.sources]]`, `[train]`, `[save]`, `[validation]`, `[log]`, `[ema]`). Presets and recipes list only what
differs. Unknown keys, wrong types and values outside a field's declared rules (`ge=`, `lt=`,
`length=`, `pattern=`... see `sdlora.typedtree`) raise `SdloraError` naming the dotted key when the
config loads; `validate` adds the few checks that relate two fields. The resolved config is written
next to every output (`to_toml`); docs/config.md is generated from the same declarations.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdlora.errors import SdloraError
from sdlora.typedtree import (apply_overrides, from_dict, hints, leaves, merge_tables, opt, parse_override, read_toml,
                              rule_text, to_dict, to_toml, toml_value, tomllib)

__all__ = ["RunConfig", "ModelConfig", "LoRAConfig", "RankOverride", "SourceConfig", "DataConfig", "TrainConfig",
           "SaveConfig", "ValidationConfig", "LogConfig", "EMAConfig", "EmbeddingsConfig", "load_config", "read_toml",
           "apply_overrides",
           "parse_override", "validate", "from_dict", "to_dict", "to_toml", "iter_fields", "reference_markdown", "tomllib"]

# Upper bounds: far above any sensible run, low enough that nothing downstream overflows.
MAX_RANK, MAX_ALPHA, MAX_SIDE, MAX_REPEATS = 4096, 65536.0, 8192, 10_000
MAX_STEPS, MAX_SEED, MAX_LR = 1_000_000_000, 2**63 - 1, 100.0
MAX_LR_WEIGHT = 1000.0  # per-block learning-rate multipliers (lora.*_lr_weight)
# kohya's block lr-weight presets (the table is sdlora.lora.blocks.LR_PRESETS), with an optional `+base`
LR_WEIGHT_PRESET = r"(?:linear|reverse_linear|sine|cosine|zeros|ramp_up|ramp_down)(?:\+\d+(?:\.\d*)?)?"
FILE_STEM = r"(?!\.{1,2}$)[^/\\\x00-\x1f]{1,200}"  # one path component: no folder, not `.`/`..`
EXTENSION = r"\.[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,30}"  # `.txt`, `.caption`, `.en.txt`


Precision = Literal["auto", "no", "fp16", "bf16"]
OptimizerArg = bool | int | float | str | list[bool | int | float | str]  # a TOML value of train.optimizer_args
OPTIMIZER = r"adamw|adamw8bit|prodigy|lion|adafactor|adamw_schedulefree|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+"
DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"  # the one default model id (models.hub, generate read it)


@dataclass
class ModelConfig:
    name: str = opt(DEFAULT_MODEL,
                    "SD 1.x to train on: a hub id, a diffusers folder, a single .ckpt/.safetensors, or `tiny` (bundled sd-tiny).")
    revision: str | None = opt(None, "Hub revision (branch, tag or commit) when `name` is a hub id.")


@dataclass
class RankOverride:
    pattern: str = opt("", "Regular expression matched (fullmatch) against module paths, e.g. `unet\\.up_blocks\\.3\\..*`.")
    rank: int | None = opt(None, "Rank for matching modules (default: lora.rank); 0 leaves them out.", ge=0, le=MAX_RANK)
    alpha: float | None = opt(None, "Alpha for matching modules (default: their rank).", ge=0.0, le=MAX_ALPHA)


@dataclass
class LoRAConfig:
    unet_preset: str = opt("unet-transformer",
                           "UNet targets: `unet-attn` (q/k/v/out, 128 modules), `unet-transformer` (kohya default, 192 modules).")
    conv: bool = opt(False, "Also adapt resnet and sampler convolutions (LoCon, the `unet-conv` preset).")
    conv_rank: int | None = opt(None, "Rank of conv adapters (default: lora.rank).", ge=1, le=MAX_RANK)
    conv_alpha: float | None = opt(None, "Alpha of conv adapters (default: their rank).", ge=0.0, le=MAX_ALPHA)
    algorithm: Literal["lora", "loha", "lokr"] = opt("lora", "Adapter algorithm: `lora` (up @ down), `loha` (Hadamard product of two low-rank pairs), `lokr` (Kronecker product); the guide compares them.")
    rank: int = opt(16, "LoRA rank (dimension of the low-rank update).", ge=1, le=MAX_RANK)
    alpha: float | None = opt(None, "LoRA alpha; the update is scaled by alpha/rank. Default (and 0): equal to rank (scale 1).",
                                 ge=0.0, le=MAX_ALPHA)
    rs_scaling: bool = opt(False, "Rank-stabilised scaling alpha/sqrt(rank) instead of alpha/rank.")
    dora: bool = opt(False, "Weight-decomposed LoRA (DoRA): learn a magnitude vector per output channel.")
    init: Literal["kaiming", "gaussian"] = opt("kaiming", "Init of `down` (`up` always starts at zero). LoRA only: LoHa/LoKr start as LyCORIS does (one factor zero).")
    factor: int = opt(-1, "LoKr: split each dimension into (factor, dim/factor) for the Kronecker product; -1 = the most balanced split.", ge=-1, le=MAX_RANK)
    use_tucker: bool = opt(False, "LoHa/LoKr: Tucker core for 3x3 convs (`hada_t1/t2`, `lokr_t2`) instead of flattened kernels.")
    decompose_both: bool = opt(False, "LoKr: also make the small Kronecker factor low rank (`lokr_w1_a/_b`).")
    full_matrix: bool = opt(False, "LoKr: keep both Kronecker factors full (no rank; scale 1).")
    dropout: float = opt(0.0, "Input dropout on the adapter path (training only).", ge=0.0, lt=1.0)
    rank_dropout: float = opt(0.0, "Per-sample dropout over rank channels, rescaled (training only). LoHa/LoKr: drops whole output rows of the weight change, as LyCORIS does.", ge=0.0, lt=1.0)
    module_dropout: float = opt(0.0, "Probability of skipping a whole adapter for a step (training only).", ge=0.0, lt=1.0)
    overrides: list[RankOverride] = opt([], "Per-module rank/alpha by pattern ([[lora.overrides]] tables).")
    block_dims: list[int] | None = opt(None, "Rank per UNet block, kohya's 25 values IN00..IN11, MID, OUT00..OUT11 (IN00 is conv_in: never adapted); 0 leaves the block out. Replaces lora.rank block by block; lora.overrides still apply on top.",
                                       ge=0, le=MAX_RANK, length=(25, 25))
    block_alphas: list[float] | None = opt(None, "Alpha per UNet block (25 values, as block_dims; default: lora.alpha).",
                                           ge=0.0, le=MAX_ALPHA, length=(25, 25))
    conv_block_dims: list[int] | None = opt(None, "Rank of the conv (LoCon) adapters per UNet block (25 values; needs lora.conv); 0 leaves the block's convs out. Default: lora.conv_rank, else block_dims.",
                                            ge=0, le=MAX_RANK, length=(25, 25))
    conv_block_alphas: list[float] | None = opt(None, "Alpha of the conv adapters per UNet block (25 values; default: lora.conv_alpha, else block_alphas).",
                                                ge=0.0, le=MAX_ALPHA, length=(25, 25))
    down_lr_weight: str | list[float] | None = opt(None, "Learning-rate multipliers of the 12 down blocks IN00..IN11 (shallow to deep): 12 numbers or a kohya preset (`sine`, `cosine`, `linear`, `reverse_linear`, `zeros`, `ramp_up`, `ramp_down`; `+0.5` adds 0.5 to each).",
                                                   ge=0.0, le=MAX_LR_WEIGHT, length=(12, 12), pattern=LR_WEIGHT_PRESET,
                                                   pattern_doc="a preset name with an optional `+number`, or 12 numbers")
    mid_lr_weight: float | None = opt(None, "Learning-rate multiplier of the middle block.", ge=0.0, le=MAX_LR_WEIGHT)
    up_lr_weight: str | list[float] | None = opt(None, "Learning-rate multipliers of the 12 up blocks OUT00..OUT11 (deep to shallow), as down_lr_weight.",
                                                 ge=0.0, le=MAX_LR_WEIGHT, length=(12, 12), pattern=LR_WEIGHT_PRESET,
                                                 pattern_doc="a preset name with an optional `+number`, or 12 numbers")
    block_lr_zero_threshold: float = opt(0.0, "Blocks whose lr weight is at or below this get weight 0: they are left out of the LoRA.",
                                         ge=0.0, le=MAX_LR_WEIGHT)
    train_text_encoder: bool = opt(False, "Also train a LoRA on the CLIP text encoder (72 modules).")
    text_encoder_rank: int | None = opt(None, "Rank of text-encoder adapters (default: lora.rank).", ge=1, le=MAX_RANK)


@dataclass
class EmbeddingsConfig:
    tokens: list[str] = opt([], "New tokens learned together with the LoRA (pivotal tuning: textual inversion + LoRA), "
                            "e.g. `[\"<sks>\"]` or `[\"<s0>\", \"<s1>\"]` (one vector each); write them in captions and "
                            "prompts. Empty: off.", length=(0, 64), pattern=r"[^\s.]{1,64}",
                            pattern_doc="words of 1-64 characters without spaces or `.`, e.g. `<sks>`")
    init_word: str = opt("", "Word whose embedding starts every new token (a word of several tokens: their mean); "
                         "empty: random, with the spread of the embedding table.")
    lr: float = opt(5e-3, "Learning rate of the new tokens' embeddings.", ge=0.0, le=MAX_LR)
    stop_step: int = opt(0, "The embeddings stop changing after this optimizer step (the LoRA trains on); 0: never.",
                         ge=0, le=MAX_STEPS)
    bundle: bool = opt(True, "Bundle the embeddings into the kohya LoRA file (`bundle_emb.<token>.string_to_param.*`: "
                       "A1111 and ComfyUI load them with the LoRA; so do `sdlora generate` and `compare`).")
    standalone: bool = opt(True, "Also write `<name>.emb.safetensors` (an A1111 embedding; diffusers' "
                           "load_textual_inversion reads it).")


@dataclass
class SourceConfig:
    path: str = opt("", "Folder of images (required). Sidecar captions, metadata.jsonl/csv and kohya `N_name` folders are detected.")
    role: Literal["instance", "class"] = opt("instance", "`class`: DreamBooth regularisation images for prior preservation.")
    prompt: str | None = opt(None, "Caption for images without one (DreamBooth instance/class prompt, e.g. `a photo of sks person`).")
    caption_extension: str = opt(".txt", "Sidecar caption extension (kohya uses `.caption`).",
                                 pattern=EXTENSION, pattern_doc="a file extension such as `.txt`")
    repeats: int = opt(1, "How many times each image is seen per epoch.", ge=1, le=MAX_REPEATS)
    caption_prefix: str = opt("", "Text put before every caption (a trigger word), e.g. `sks style, `.")
    caption_suffix: str = opt("", "Text put after every caption.")
    num_images: int = opt(0, "For role=class: generate images with the base model until the folder holds this many.",
                         ge=0, le=100_000)
    class_prompts: list[str] = opt([], "For role=class: generate the images from these prompts in turn instead of "
                                   "`prompt`, each written with a caption file holding its prompt; e.g. the class "
                                   "and its variants as the instance captions show them without the trigger "
                                   "(`a dog`, `a brown dog`).", length=(0, 1000), pattern=r"\S.{0,999}",
                                   pattern_doc="a prompt of 1-1000 characters, not starting with a space")
    mask_dir: str | None = opt(None, "This source's mask folder for `data.masks = \"folder\"` (default: data.mask_dir).")


@dataclass
class DataConfig:
    sources: list[SourceConfig] = opt([], "Image sources ([[data.sources]] tables); several can be combined.")
    resolution: int = opt(512, "Training resolution: buckets keep about resolution^2 pixels.",
                          ge=8, le=MAX_SIDE, multiple_of=8)
    buckets: bool = opt(True, "Aspect-ratio buckets; false: center/random crop to a square.")
    bucket_step: int = opt(64, "Bucket side lengths are multiples of this (of the model's size step: 64 for SD 1.x).",
                           ge=8, le=MAX_SIDE, multiple_of=8)
    min_bucket_side: int = opt(256, "Smallest bucket side.", ge=8, le=MAX_SIDE)
    max_bucket_side: int = opt(1024, "Largest bucket side.", ge=8, le=MAX_SIDE)
    crop: Literal["center", "random"] = opt("center", "How an image is cropped to its bucket after resizing to cover it.")
    flip: bool = opt(False, "Random horizontal flip (do not use for asymmetric subjects such as text or faces with a part).")
    no_upscale: bool = opt(False, "Skip images smaller than their bucket instead of upscaling them.")
    background: str = opt("white", "Colour composited behind transparent images (name or #rrggbb).")
    masks: Literal["off", "alpha", "folder"] = opt("off", "Per-image loss masks (white = train, black = ignore, grey = weight): `alpha` uses each image's alpha channel (the pixels are still composited on `background`), `folder` reads `<mask_dir>/<image's path in its source, as .png>`; images without one train everywhere.")
    mask_dir: str | None = opt(None, "Folder of mask images for `masks = \"folder\"` (sources may name their own `mask_dir`); outside the source folders.")
    max_image_pixels: int = opt(100_000_000, "Images with more pixels are skipped (decompression-bomb guard).",
                                ge=1, le=1_000_000_000)
    shuffle_tags: bool = opt(False, "Shuffle comma-separated tags each time a caption is used.")
    keep_tokens: int = opt(0, "Number of leading tags kept in place when shuffling (e.g. the trigger).",
                          ge=0, le=1000)
    tag_dropout: float = opt(0.0, "Probability of dropping each tag (not the kept ones).", ge=0.0, lt=1.0)
    caption_dropout: float = opt(0.0, "Probability of training on an empty caption (helps classifier-free guidance).",
                                ge=0.0, lt=1.0)
    validation_split: float = opt(0.0, "Fraction of images held out for validation loss.", ge=0.0, lt=1.0)
    cache_latents: Literal["off", "memory", "disk"] = opt("memory", "Cache VAE latents (the VAE is then freed from the device).")
    cache_text: bool = opt(True, "Cache text-encoder outputs when the text encoder is frozen and tags are neither shuffled nor dropped (caption dropout is fine).")
    cache_dir: str | None = opt(None, "Where disk caches go (default: <output_dir>/cache).")
    num_workers: int = opt(2, "Worker processes for decoding images and caching; 0 decodes in the main process.",
                           ge=0, le=256)


@dataclass
class TrainConfig:
    seed: int = opt(42, "Random seed: same seed, same data and same settings give the same LoRA.",
                    ge=0, le=MAX_SEED)
    steps: int = opt(1500, "Optimizer steps to train (ignored when `epochs` is set).", ge=1, le=MAX_STEPS)
    epochs: int | None = opt(None, "Train for this many epochs instead of `steps`.", ge=1, le=1_000_000)
    batch_size: int = opt(1, "Images per step and process.", ge=1, le=4096)
    grad_accum: int = opt(1, "Gradient accumulation steps (effective batch = batch_size * grad_accum * processes).",
                         ge=1, le=4096)
    lr: float = opt(1e-4, "Learning rate of UNet adapters.", ge=0.0, le=MAX_LR)
    text_encoder_lr: float = opt(5e-5, "Learning rate of text-encoder adapters.", ge=0.0, le=MAX_LR)
    loraplus_ratio: float = opt(0.0, "LoRA+: `up` weights get lr * ratio (e.g. 16); 0 disables.",
                                 ge=0.0, le=10_000.0)
    optimizer: str = opt("adamw", "`adamw`, `adamw8bit` (`pip install sdlora[bnb]`), `prodigy` (`sdlora[prodigy]`), `lion` (`sdlora[lion]`), `adafactor` (transformers' Adafactor; relative-step mode unless optimizer_args say otherwise), `adamw_schedulefree` (`sdlora[schedulefree]`), or any `module.Class` taking (params, lr=..., **optimizer_args).",
                         pattern=OPTIMIZER, pattern_doc="an optimizer name or a `module.Class` path")
    optimizer_args: dict[str, OptimizerArg] = opt({}, "Extra keyword arguments of the optimizer ([train.optimizer_args] table, e.g. `relative_step = false` for adafactor, `betas = [0.95, 0.98]` for lion); they win over betas/eps/weight_decay.")
    weight_decay: float = opt(1e-2, "AdamW weight decay.", ge=0.0, le=100.0)
    betas: list[float] = opt([0.9, 0.999], "Adam betas (beta1, beta2).", ge=0.0, lt=1.0, length=(2, 2))
    eps: float = opt(1e-8, "Adam epsilon.", gt=0.0, le=1.0)
    lr_scheduler: Literal["constant", "cosine", "linear", "cosine_with_restarts"] = opt("constant", "Learning-rate schedule after warmup.")
    warmup_steps: int = opt(0, "Linear warmup steps.", ge=0, le=MAX_STEPS)
    lr_cycles: int = opt(1, "Restarts for cosine_with_restarts.", ge=1, le=10_000)
    max_grad_norm: float = opt(1.0, "Gradient-norm clipping; 0 disables.", ge=0.0, le=1e6)
    mixed_precision: Precision = opt("auto", "auto: bf16 on CUDA GPUs that support it, else fp16 on CUDA; on the CPU fp32, or bf16 for a large UNet (SD 1.x) where one block of it timed both ways trains clearly faster in bf16 (it did on an AMD Zen 4, not on an Intel Xeon; emulated bf16 is never used). A resumed run keeps the precision it started in. The train.log says which and why.")
    gradient_checkpointing: bool = opt(False, "Recompute UNet activations in backward: much less VRAM, ~30% slower.")
    channels_last: bool = opt(False, "UNet weights and activations in channels-last memory format (faster convolutions on recent GPUs in bf16/fp16).")
    compile: bool = opt(False, "torch.compile the UNet with its LoRA: faster steps on GPUs; the first step (and each new batch shape, e.g. a bucket) compiles for a while.")
    compile_backend: str = opt("inductor", "torch.compile backend (see torch._dynamo.list_backends(); `aot_eager` compiles without code generation).")
    conv_backend: Literal["auto", "onednn", "native"] = opt("auto", "CPU convolution kernels of the training step: auto = native on the CPU in fp32 (PyTorch's im2col + GEMM: 1.3x faster than oneDNN for the full-size UNet at 256 px, batch 1, one thread; the same on small models); onednn; no effect on GPUs. The train.log says which.")
    low_memory: Literal["auto", "on", "off"] = opt("auto", "A lower peak memory for the CPU training step, same gradients: frozen convolutions keep no input, the top-level transformer blocks are recomputed in backward, the heap is trimmed each step. auto = on for a large UNet (>= 300M parameters, e.g. SD 1.x) on the CPU in fp32, off for small models, bf16/fp16 and GPUs. The train.log says which.")
    prediction_type: Literal["epsilon", "v_prediction"] = opt("epsilon", "Training target; SD 1.4 predicts epsilon.")
    min_snr_gamma: float | None = opt(None, "Min-SNR loss weighting gamma (5.0 is common); unset disables.",
                                       gt=0.0, le=1e6)
    noise_offset: float = opt(0.0, "Noise offset (e.g. 0.05) for darker darks and brighter brights.",
                                ge=0.0, le=10.0)
    multires_noise_iterations: int = opt(0, "Pyramid (multi-resolution) noise: add this many coarser noise levels "
                                         "(kohya suggests 6-10); 0 disables.", ge=0, le=64)
    multires_noise_discount: float = opt(0.3, "Pyramid noise: strength of each coarser level relative to the one "
                                         "before (kohya: 0.3).", ge=0.0, le=1.0)
    ip_noise_gamma: float = opt(0.0, "Input perturbation: noise of this strength (0.1 is common) added to the model's "
                                "input only, not to its target; 0 disables.", ge=0.0, le=10.0)
    zero_terminal_snr: bool = opt(False, "Rescale the betas so the last timestep is pure noise (zero terminal SNR); "
                                  "needs prediction_type = v_prediction. The LoRA file records it and `sdlora generate` "
                                  "then samples with the same schedule and trailing timesteps.")
    timestep_sampling: Literal["uniform", "logit_normal"] = opt("uniform", "How training timesteps are drawn in "
                                                               "[timestep_min, timestep_max): `uniform`, or `logit_normal` "
                                                               "(sigmoid of N(logit_mean, logit_std), SD3-style).")
    logit_mean: float = opt(0.0, "logit_normal: mean of the normal (>0 favours noisier timesteps).", ge=-10.0, le=10.0)
    logit_std: float = opt(1.0, "logit_normal: standard deviation of the normal.", gt=0.0, le=10.0)
    timestep_shift: float = opt(1.0, "Shift the drawn timesteps (u in [0, 1)) to s*u / (1 + (s-1)*u): above 1 towards "
                                "noise (composition), below 1 towards detail; 1 leaves them.", gt=0.0, le=100.0)
    loss_type: Literal["l2", "l1", "huber", "smooth_l1"] = opt("l2", "Per-element loss: `l2` (MSE), `l1`, `huber` "
                                                              "(pseudo-Huber: L2 near 0, L1 beyond huber_c; kohya's) or "
                                                              "`smooth_l1` (the same without the 2*c scale).")
    huber_schedule: Literal["constant", "exponential", "snr"] = opt("snr", "huber/smooth_l1: threshold c per timestep: "
                                                                   "`constant` huber_c, `exponential` from 1 at t=0 "
                                                                   "down to huber_c at t=T, `snr` (kohya's default) "
                                                                   "from the noise level.")
    huber_c: float = opt(0.1, "huber/smooth_l1: the threshold c (constant) or its value at the noisiest timestep.",
                         gt=0.0, le=1.0)
    debiased_estimation: bool = opt(False, "Debiased estimation loss weighting: 1/sqrt(SNR) (epsilon) or 1/(SNR+1) "
                                    "(v_prediction), SNR capped at 1000.")
    timestep_min: int = opt(0, "Smallest training timestep.", ge=0, le=999)
    timestep_max: int = opt(1000, "Largest training timestep (exclusive).", ge=1, le=1000)
    prior_loss_weight: float = opt(1.0, "Weight of the prior-preservation loss on class images.",
                                     ge=0.0, le=1000.0)
    prior_target: Literal["noise", "base"] = opt("noise", "What the class images are trained towards: `noise` "
                                                 "(DreamBooth: their own denoising target) or `base` (the frozen "
                                                 "model's prediction for the same noisy class image, prompt and "
                                                 "timestep, i.e. the LoRA is trained to change nothing there; one "
                                                 "extra forward pass over the class images a step).")
    max_nonfinite_steps: int = opt(10, "Stop after this many consecutive steps with a NaN/inf loss.",
                                  ge=1, le=1_000_000)


@dataclass
class SaveConfig:
    output_dir: str = opt("runs/lora", "Run folder: LoRA files, checkpoints, logs, samples, resolved config.")
    name: str = opt("", "File name stem of the saved LoRA (written inside output_dir); empty: the run folder's "
                    "name (runs/me -> me.safetensors).", pattern=f"(?:{FILE_STEM})?",
                    pattern_doc="a plain file name (no folder, at most 200 characters), or empty")
    every_n_steps: int = opt(0, "Save a checkpoint every N steps; 0 disables.", ge=0, le=MAX_STEPS)
    every_n_epochs: int = opt(1, "Save a checkpoint every N epochs; 0 disables.", ge=0, le=1_000_000)
    min_epoch_steps: int = opt(50, "An epoch checkpoint is skipped until this many steps have passed since the last checkpoint (or the start): a small dataset's epoch is a few steps, and a checkpoint every few steps costs time and disk for nothing; 0 saves every epoch.", ge=0, le=MAX_STEPS)
    keep_last: int = opt(3, "Keep this many intermediate checkpoints (the final LoRA is always kept); 0 keeps all.",
                         ge=0, le=1_000_000)
    formats: list[Literal["kohya", "diffusers", "native"]] = opt(["kohya"], "File formats written: kohya (A1111/ComfyUI/diffusers), diffusers (PEFT keys), native.",
        length=(1, 3))
    precision: Literal["fp32", "fp16", "bf16"] = opt("fp16", "dtype of the saved LoRA weights.")
    save_state: bool = opt(True, "Save the full training state with each checkpoint, for --resume.")


@dataclass
class ValidationConfig:
    prompts: list[str] = opt([], "Prompts sampled during training (also once with the base model at step 0).")
    negative_prompt: str = opt("", "Negative prompt for validation samples.")
    seed: int = opt(1234, "Seed of validation samples (the same at every step, so grids are comparable).",
                    ge=0, le=MAX_SEED)
    every_n_steps: int = opt(0, "Sample every N steps (and at the end); 0: only at the end.", ge=0, le=MAX_STEPS)
    num_inference_steps: int = opt(30, "Sampling steps.", ge=1, le=1000)
    guidance_scale: float = opt(7.5, "Classifier-free guidance scale.", ge=0.0, le=100.0)
    width: int | None = opt(None, "Sample width (default: data.resolution).", ge=8, le=MAX_SIDE, multiple_of=8)
    height: int | None = opt(None, "Sample height (default: data.resolution).", ge=8, le=MAX_SIDE, multiple_of=8)
    loss_every_n_steps: int = opt(0, "Validation loss on the held-out split with fixed noise/timesteps; 0 disables.",
                                    ge=0, le=MAX_STEPS)


@dataclass
class LogConfig:
    tensorboard: bool = opt(True, "Write TensorBoard logs under <output_dir>/logs.")
    every_n_steps: int = opt(10, "Log scalars every N steps.", ge=1, le=MAX_STEPS)
    wandb: bool = opt(False, "Also log scalars and sample grids to Weights & Biases (`pip install sdlora[wandb]`; "
                      "`wandb login` first, or WANDB_MODE=offline to keep the run under <output_dir>/wandb).")
    wandb_project: str = opt("sdlora", "W&B project the run is logged to.", pattern=r"[^/\\#?%:\x00-\x1f]{1,128}",
                             pattern_doc="1 to 128 characters, none of / \\ # ? % :")
    wandb_run_name: str = opt("", "W&B run name; empty: the LoRA's name (save.name, else the run folder's name).",
                              pattern=r"[^\x00-\x1f]{0,128}", pattern_doc="at most 128 printable characters")


@dataclass
class EMAConfig:
    enabled: bool = opt(False, "Keep an exponential moving average of the LoRA weights (fp32) and save it beside "
                        "the raw LoRA as `<name>-ema.safetensors` (in every save.formats, checkpoints too).")
    decay: float = opt(0.999, "EMA decay per update: shadow = decay * shadow + (1 - decay) * weights.",
                       ge=0.0, lt=1.0)
    warmup: bool = opt(True, "Warm-up: the n-th update uses min(decay, (1 + n) / (10 + n)) (n from 0), so early "
                       "updates follow the weights closely.")
    every_n_steps: int = opt(1, "Update the average every N optimizer steps.", ge=1, le=MAX_STEPS)
    on_cpu: bool = opt(False, "Keep the average in CPU memory instead of on the training device.")
    use_for_samples: bool = opt(False, "Sample validation grids with the EMA weights (samples/step-N-ema.png) "
                                "instead of the raw ones.")


@dataclass
class RunConfig:
    model: ModelConfig = opt(None, "The base model.")
    lora: LoRAConfig = opt(None, "What is trained and how big it is.")
    data: DataConfig = opt(None, "Images, captions, buckets, caching.")
    train: TrainConfig = opt(None, "Optimisation.")
    save: SaveConfig = opt(None, "Outputs.")
    validation: ValidationConfig = opt(None, "Samples and validation loss during training.")
    log: LogConfig = opt(None, "Logging.")
    ema: EMAConfig = opt(None, "Exponential moving average of the LoRA weights.")
    embeddings: EmbeddingsConfig = opt(None, "New tokens trained with the LoRA (pivotal tuning).")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None:
                setattr(self, f.name, hints(type(self))[f.name]())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> RunConfig:
    """Defaults <- `base` dict <- TOML file <- `--set` overrides, then validated."""
    data = merge_tables(dict(base or {}), read_toml(path) if path else {})
    cfg = from_dict(RunConfig, apply_overrides(data, overrides or []))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """The checks that relate two fields (single-field rules are declared on the fields); each names its key."""
    d, t = cfg.data, cfg.train
    if cfg.lora.factor == 0:
        raise SdloraError("lora.factor must be -1 (automatic) or a positive integer, got 0")
    if cfg.lora.algorithm != "lora" and "diffusers" in cfg.save.formats:
        raise SdloraError(f"save.formats: the diffusers format cannot hold lora.algorithm = {cfg.lora.algorithm!r} "
                          "(diffusers' loader reads only LoRA); write kohya (A1111, ComfyUI, LyCORIS) and, for "
                          "diffusers, `sdlora resize` the file to a plain LoRA afterwards")
    if t.zero_terminal_snr and t.prediction_type != "v_prediction":
        raise SdloraError("train.zero_terminal_snr needs train.prediction_type = \"v_prediction\": at the last "
                          "timestep the input is pure noise, so an epsilon model cannot recover the image")
    if t.timestep_min >= t.timestep_max:
        raise SdloraError(f"train.timestep_min ({t.timestep_min}) must be below train.timestep_max ({t.timestep_max})")
    if d.min_bucket_side > d.max_bucket_side:
        raise SdloraError(f"data.min_bucket_side ({d.min_bucket_side}) must not exceed data.max_bucket_side "
                          f"({d.max_bucket_side})")
    if d.buckets and d.bucket_step > d.resolution:
        raise SdloraError(f"data.bucket_step ({d.bucket_step}) must not exceed data.resolution ({d.resolution})")
    if not cfg.lora.conv:
        for key in ("conv_block_dims", "conv_block_alphas"):
            if getattr(cfg.lora, key) is not None:
                raise SdloraError(f"lora.conv must be true when lora.{key} is set (it gives conv adapters per block)")
    for i, override in enumerate(cfg.lora.overrides):
        try:
            re.compile(override.pattern)
        except re.error as exc:
            raise SdloraError(f"lora.overrides[{i}].pattern is not a valid regular expression: {exc}") from None
    for i, source in enumerate(d.sources):
        if not source.path:
            raise SdloraError(f"data.sources[{i}].path is required")
        if source.class_prompts and source.role != "class":
            raise SdloraError(f"data.sources[{i}].class_prompts is only for class images: set role = \"class\" "
                              f"or remove it")
    lowered = [t.lower() for t in cfg.embeddings.tokens]  # CLIP lower-cases prompts: <S> and <s> are one token
    if len(set(lowered)) < len(lowered):
        raise SdloraError(f"embeddings.tokens {cfg.embeddings.tokens} names a token twice (case is ignored)")


def iter_fields():
    """Yield (dotted key, type name, default, doc, allowed values in words) for every leaf field (docs)."""
    for leaf in leaves(RunConfig):
        yield leaf.key, leaf.type_name, leaf.default, leaf.doc, rule_text(leaf.rules)


def reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the dataclasses so it cannot drift."""
    lines = ["# Config reference", "",
             "Generated from `src/sdlora/config.py` by `python scripts/gen_config_docs.py`; do not edit by hand.",
             "Every key can be set in the run's TOML file or on the command line with `--set key=value`;",
             "a value outside its `allowed` range is refused, naming the key, before anything runs."]
    section = None
    for key, type_name, default, doc, allowed in iter_fields():
        top = key.split(".")[0]
        if top != section:
            section = top
            lines += ["", f"## [{section}]", "", "| key | type | default | allowed | meaning |",
                      "| --- | --- | --- | --- | --- |"]
        shown = "" if default is None else f"`{toml_value(default)}`".replace("|", "\\|")
        allowed = allowed.replace("|", "\\|")
        lines.append(f"| `{key}` | `{type_name}` | {shown} | {allowed} | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
