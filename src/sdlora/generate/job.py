"""`sdlora generate` as a library call: load a model once, attach LoRA files, sample every prompt,
write PNGs with their parameters embedded and a contact sheet."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from sdlora import __version__
from sdlora.config import DEFAULT_MODEL
from sdlora.errors import SdloraError
from sdlora.generate import loras as lora_files
from sdlora.generate.loras import LoadedLora, LoraSpec
from sdlora.generate.prediction import NoiseSettings, settings_from_metadata
from sdlora.generate.pngmeta import Parameters, format_pairs, format_parameters, save_png
from sdlora.generate.prompts import PromptSpec
from sdlora.generate.sampling import Sample, Sampler, resolve_device, resolve_dtype
from sdlora.generate.schedulers import check_sampleable, sampler_label
from sdlora.imaging import contact_sheet
from sdlora.models import SDComponents

log = logging.getLogger(__name__)


@dataclass
class GenerateJob:
    """Everything `sdlora generate` needs; the CLI fills it from its flags."""

    prompts: list[PromptSpec]
    out_dir: Path
    model: str = DEFAULT_MODEL
    loras: list[LoraSpec] = field(default_factory=list)
    num_images: int = 1  # per prompt, seeds seed .. seed + num_images - 1
    batch_size: int = 1
    merge: bool = False  # fold the LoRAs into the weights: no per-step overhead, weights fixed
    dtype: str = "auto"
    device: str | None = None
    contact_sheet: bool = True
    noise: NoiseSettings | None = None  # what it leaves unsaid: what the LoRA files' metadata says


@dataclass
class GenerateResult:
    images: list[Path]
    contact_sheet: Path | None
    loras: list[LoadedLora]


def load_model(model: str, dtype: str = "auto", device: str | None = None) -> SDComponents:
    """The base model on `device` in `dtype` (names resolved as in resolve_device/resolve_dtype)."""
    from sdlora.models import load_components

    where = resolve_device(device)
    return load_components(model, dtype=resolve_dtype(dtype, where), device=where)


def prepare_out_dir(path: Path) -> Path:
    """Create the output folder before anything is generated; SdloraError when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SdloraError(f"{path}: is a file; give a folder to write into") from None
    except OSError as exc:
        raise SdloraError(f"{path}: cannot create the output folder ({exc.strerror})") from None
    return path


def prepare(components: SDComponents, specs: list[LoraSpec], merge: bool = False) -> list[LoadedLora]:
    """Attach every LoRA file at its weight, then optionally merge them into the weights."""
    loaded = lora_files.attach_loras(components, specs)
    if merge and loaded:
        from sdlora.formats import apply

        apply.merge(components)
    return loaded


def model_label(source: str) -> str:
    """What A1111 writes as `Model:`: a file's stem, a folder's name, a hub id as it is."""
    path = Path(source)
    return path.stem if path.suffix in (".safetensors", ".ckpt") else source.rstrip("/").split("/")[-1] or source


def parameters(sample: Sample, model: str, loaded: list[LoadedLora], weights: dict[str, float] | None = None,
               lbw: dict | None = None) -> Parameters:
    """The A1111 `parameters` of one image; `weights` and `lbw` (adapter -> 26 block weights) override
    the LoRA weights and block weights (compare sweeps)."""
    spec = sample.spec
    fields: dict[str, object] = {
        "Steps": spec.steps, "Sampler": sampler_label(spec.scheduler), "CFG scale": spec.cfg,
        "Seed": sample.seed, "Size": f"{spec.width}x{spec.height}", "Model": model,
    }
    if loaded:
        weights = weights or {item.adapter: item.spec.weight for item in loaded}
        fields["Lora hashes"] = format_pairs({item.adapter: item.hash for item in loaded})
        fields["Lora weights"] = format_pairs({item.adapter: weights[item.adapter] for item in loaded})
        blocks = block_labels(loaded, weights, lbw)
        if blocks:
            fields["Lora block weights"] = format_pairs(blocks)
    fields["Version"] = f"sdlora {__version__}"
    return Parameters(spec.prompt, spec.negative_prompt, fields)


def block_labels(loaded: list[LoadedLora], weights: dict[str, float], lbw: dict | None) -> dict[str, str]:
    """adapter -> its block weights (a preset name, or the numbers space-separated) for the LoRAs in use."""
    from sdlora.generate.blocks import label

    lbw = lbw if lbw is not None else {item.adapter: item.spec.lbw for item in loaded}
    return {a: label(v).replace(",", " ") for a, v in lbw.items() if v is not None and weights.get(a)}


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe prefix of a prompt: `A cat, on a mat!` -> `a_cat_on_a_mat`."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].rstrip("_") or "image"


def generate(job: GenerateJob, components: SDComponents | None = None) -> GenerateResult:
    """Run `job`; `components` (already loaded, without LoRA) skips loading `job.model`."""
    if not job.prompts:
        raise SdloraError("no prompts: give --prompt TEXT or --prompts FILE")
    lora_files.check_files(job.loras)
    prepare_out_dir(job.out_dir)
    components = components or load_model(job.model, job.dtype, job.device)
    loaded = prepare(components, job.loras, job.merge)
    detected = settings_from_metadata([(str(item.spec.path), item.metadata) for item in loaded])
    noise = (job.noise or NoiseSettings()).over(detected)
    if noise.overrides():
        log.info("sampling for %s (the LoRA files' training settings unless given)", noise.describe())
    for spec in job.prompts:
        check_sampleable(spec.scheduler, noise)  # before the first image is written
    sampler = Sampler(components, noise=noise)
    label = model_label(components.source)
    paths, samples = [], []
    jobs = [(spec, spec.seed + i) for spec in job.prompts for i in range(job.num_images)]

    def save(batch: list) -> None:  # each batch is written as soon as it is sampled
        for sample in batch:
            name = f"{len(paths):05d}-{sample.seed}-{slug(sample.spec.prompt)}.png"
            paths.append(save_png(sample.image, job.out_dir / name, format_parameters(parameters(sample, label, loaded))))
            samples.append(sample)
        log.info("image %d/%d: %s", len(paths), len(jobs), batch[-1].spec.prompt)

    sampler.many(jobs, job.batch_size, done=save)
    sheet = None
    if job.contact_sheet:
        sheet = job.out_dir / "contact_sheet.png"
        contact_sheet([s.image for s in samples], [f"seed {s.seed}: {s.spec.prompt}" for s in samples]).save(sheet)
    log.info("wrote %d images to %s", len(paths), job.out_dir)
    return GenerateResult(paths, sheet, loaded)
