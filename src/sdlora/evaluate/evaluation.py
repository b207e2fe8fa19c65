"""`sdlora evaluate`: the comparison grid plus the metrics papers report, per column (base, and each
LoRA at each weight), written as evaluate.json and in the HTML report.

The encoders are loaded before anything is generated: when none is on the machine the command stops
at once (saying how to get them); one that is missing is skipped with a note saying how to provide
it, and the grid, the report and every metric that can be computed are still written.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from sdlora.data.files import shown
from sdlora.data.images import IMAGE_EXTENSIONS, BadImage, load_rgb
from sdlora.errors import SdloraError
from sdlora.evaluate import metrics as M
from sdlora.evaluate.compare import CompareJob, CompareResult, run_compare, summary, write_json
from sdlora.evaluate.features import DEFAULT_CLIP, DEFAULT_DINO, MissingWeights, load_clip, load_dino
from sdlora.evaluate.report import write_report
from sdlora.generate.sampling import resolve_device
from sdlora.models import SDComponents

log = logging.getLogger(__name__)
MAX_IMAGE_PIXELS = 100_000_000  # as data.max_image_pixels' default


@dataclass
class EvaluateJob:
    compare: CompareJob
    train_images: Path | None = None  # CLIP-I and DINO are similarities to these
    reference: Path | None = None  # FD/KID reference folder (optional)
    clip_model: str = DEFAULT_CLIP
    dino_model: str = DEFAULT_DINO
    fid_features: str = "dino"  # which encoder's features FD/KID use: "dino" or "clip"
    kid_subsets: int = 100


@dataclass
class EvaluateResult:
    compare: CompareResult
    metrics: dict
    notes: list[str] = field(default_factory=list)
    json_path: Path | None = None
    report_path: Path | None = None


def load_image_folder(path: Path, what: str) -> list[Image.Image]:
    """Every image directly in `path` (sorted by name), as RGB, decoded as the training loader does
    (sdlora.data.images: format allowlist, pixel limit, regular files only); a bad file is skipped
    with its reason, SdloraError when none is left."""
    if not path.is_dir():
        raise SdloraError(f"{what} {shown(path)}: folder not found")
    images = []
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        try:
            images.append(load_rgb(file, max_pixels=MAX_IMAGE_PIXELS))
        except BadImage as exc:
            log.warning("%s: skipped (%s)", shown(file), exc.reason)
    if not images:
        raise SdloraError(f"{what} {shown(path)}: no readable images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images


def load_encoders(job: EvaluateJob, device: torch.device, notes: list[str]) -> dict:
    """{"clip": ClipFeatures, "dino": DinoFeatures}, leaving out (with a note) those not available;
    SdloraError when neither is (there would be nothing to measure)."""
    encoders, missing = {}, []
    for key, loader, name in (("clip", load_clip, job.clip_model), ("dino", load_dino, job.dino_model)):
        try:
            encoders[key] = loader(name, device)
        except MissingWeights as exc:
            missing.append(str(exc))
            notes.append(f"{exc}. Skipped: {'CLIP-T, CLIP-I' if key == 'clip' else 'DINO'}"
                         + (" and FD/KID" if key == job.fid_features else "") + ".")
    if not encoders:
        raise SdloraError("no metric can be computed: " + "; ".join(missing)
                          + " (`sdlora compare` makes the grid and report without metrics)")
    return encoders


def column_metrics(result: CompareResult, encoders: dict, train: list[Image.Image] | None,
                   reference: list[Image.Image] | None, job: EvaluateJob, notes: list[str]) -> dict:
    """{column label: {metric name: value}} over every image of each column."""
    columns = [[row[c].image for row in result.samples] for c in range(len(result.columns))]
    prompts = [row.spec.prompt for row in result.rows]
    feats = {key: [enc.images(images) for images in columns] for key, enc in encoders.items()}
    refs = {key: {"train": enc.images(train) if train else None,
                  "reference": enc.images(reference) if reference else None} for key, enc in encoders.items()}
    text = encoders["clip"].texts(prompts) if "clip" in encoders else None
    fid_key, tag = job.fid_features, job.fid_features.upper()
    if reference and len(prompts) < 2:
        notes.append("FD/KID need at least 2 images per column (use more prompts or --num-images); skipped.")
    out: dict[str, dict[str, float]] = {}
    for c, column in enumerate(result.columns):
        values: dict[str, float] = {}
        if text is not None:
            values["CLIP-T"] = float(M.paired_cosine(feats["clip"][c], text).mean())
        for key, name in (("clip", "CLIP-I"), ("dino", "DINO")):
            if key in feats and train:
                values[name] = M.mean_similarity(feats[key][c], refs[key]["train"])
        if "dino" in feats and c > 0:
            values["DINO vs base"] = float(M.paired_cosine(feats["dino"][c], feats["dino"][0]).mean())
        if fid_key in feats and reference and len(prompts) >= 2 and len(reference) >= 2:
            values[f"FD_{tag}"] = M.frechet_distance(feats[fid_key][c], refs[fid_key]["reference"])
            values[f"KID_{tag}"], values[f"KID_{tag} std"] = M.kernel_inception_distance(
                feats[fid_key][c], refs[fid_key]["reference"], subsets=job.kid_subsets)
        out[column.label] = values
    return out


def descriptions(job: EvaluateJob, encoders: dict, n_train: int, n_ref: int) -> dict[str, str]:
    names = {key: enc.name for key, enc in encoders.items()}
    text = {"CLIP-T": f"cosine similarity of image and prompt, CLIP ({names.get('clip')}); higher follows the prompt better",
            "CLIP-I": f"mean cosine similarity to the {n_train} training images, CLIP image features ({names.get('clip')})",
            "DINO": f"mean cosine similarity to the {n_train} training images, DINO CLS features ({names.get('dino')})",
            "DINO vs base": "DINO similarity to the base model's image with the same prompt and seed (1 = unchanged)"}
    tag, extractor = job.fid_features.upper(), names.get(job.fid_features)
    text[f"FD_{tag}"] = (f"Frechet distance to {n_ref} reference images in {extractor} features "
                         f"(not Inception FID: numbers are not comparable with published FID)")
    text[f"KID_{tag}"] = (f"kernel inception distance (unbiased, polynomial kernel) in {extractor} features, "
                          "mean over subsets")
    return text


def evaluate(job: EvaluateJob, components: SDComponents | None = None) -> EvaluateResult:
    """`sdlora evaluate`: compare's outputs plus metrics, as evaluate.json and report.html."""
    if job.fid_features not in ("dino", "clip"):
        raise SdloraError(f"--fid-features {job.fid_features!r}: choose dino or clip")
    train = load_image_folder(job.train_images, "--train-images") if job.train_images else None
    reference = load_image_folder(job.reference, "--reference") if job.reference else None
    notes: list[str] = []
    encoders = load_encoders(job, resolve_device(job.compare.device), notes)  # before generating anything
    for note in notes:
        log.warning("%s", note)
    result = run_compare(job.compare, components)
    values = column_metrics(result, encoders, train, reference, job, notes)
    metrics = {"columns": values, "descriptions": {k: v for k, v in descriptions(
        job, encoders, len(train or []), len(reference or [])).items()
        if any(k in col for col in values.values())},
        "feature_extractors": {key: enc.name for key, enc in encoders.items()}}
    out = job.compare.out_dir
    data = {**summary(result), "metrics": metrics, "notes": notes}
    return EvaluateResult(result, metrics, notes, write_json(out / "evaluate.json", data),
                          write_report(out / "report.html", result, title="sdlora evaluate", metrics=metrics, notes=notes))
