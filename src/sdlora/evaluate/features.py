"""Image and text features for the metrics: CLIP (transformers CLIPModel) and DINO (ViTModel /
Dinov2Model, CLS token), loaded from a local folder or the Hugging Face cache only, never downloaded.

Preprocessing is done here with PIL/numpy (resize the short side with bicubic filtering, centre crop,
normalise), the same recipe as the CLIP and DINO image processors, so it needs no torchvision and
does not change with the transformers version. torch is imported where it is used, so the defaults
below can be read (e.g. for `--help`) without it.
"""
from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from sdlora.errors import SdloraError

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_CLIP = "openai/clip-vit-large-patch14"  # SD 1.4's text encoder is this model's text tower
DEFAULT_DINO = "facebook/dino-vits16"  # the DINO ViT-S/16 DreamBooth reports
BATCH = 16

if TYPE_CHECKING:
    import torch


class MissingWeights(SdloraError):
    """Encoder weights are not on this machine; the message says how to provide them."""


def preprocess(images: list[Image.Image], size: int, mean, std) -> torch.Tensor:
    """PIL images -> float32 (N, 3, size, size): short side to `size` (bicubic), centre crop, normalise."""
    out = []
    for image in images:
        image = image.convert("RGB")
        scale = size / min(image.size)
        w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out.append((array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
    import torch

    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


class ClipFeatures:
    """CLIP image and text embeddings (projected, as CLIP compares them), (N, projection_dim)."""

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.size = model.config.vision_config.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def images(self, images: list[Image.Image]) -> torch.Tensor:
        import torch

        chunks = []
        with torch.no_grad():
            for i in range(0, len(images), BATCH):
                pixels = preprocess(images[i:i + BATCH], self.size, CLIP_MEAN, CLIP_STD).to(self.device)
                # vision_model + projection, rather than get_image_features, whose return type differs
                # between transformers 4 (tensor) and 5 (model output).
                pooled = self.model.vision_model(pixel_values=pixels).pooler_output
                chunks.append(self.model.visual_projection(pooled).float().cpu())
        return torch.cat(chunks)

    def texts(self, texts: list[str]) -> torch.Tensor:
        import torch

        tokens = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt",
                                max_length=self.model.config.text_config.max_position_embeddings)
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            pooled = self.model.text_model(**tokens).pooler_output
            return self.model.text_projection(pooled).float().cpu()


class DinoFeatures:
    """DINO image embeddings: the CLS token of the last layer, (N, hidden_size)."""

    def __init__(self, model, name: str, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.model, self.name, self.mean, self.std = model.eval(), name, mean, std
        size = model.config.image_size
        self.size = size if isinstance(size, int) else size[0]

    def images(self, images: list[Image.Image]) -> torch.Tensor:
        import torch

        device = next(self.model.parameters()).device
        chunks = []
        with torch.no_grad():
            for i in range(0, len(images), BATCH):
                pixels = preprocess(images[i:i + BATCH], self.size, self.mean, self.std).to(device)
                chunks.append(self.model(pixel_values=pixels).last_hidden_state[:, 0].float().cpu())
        return torch.cat(chunks)


def download_command() -> str:
    """The download command of the installed huggingface_hub: `hf download` (0.34 and later; the docs'
    command) or the older `huggingface-cli download`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("huggingface_hub").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "hf download"
    return "hf download" if (major, minor) >= (0, 34) else "huggingface-cli download"


def missing_message(what: str, name: str, flag: str) -> str:
    if Path(name).expanduser().is_absolute() or name.startswith("."):
        return f"{flag} {name}: no {what} model there (a folder with config.json and weights is expected)"
    return (f"{what} weights {name!r} are not on this machine (nothing is downloaded): fetch them once with "
            f"`{download_command()} {name}`, or pass {flag} PATH to a local copy")


def local_folder(name: str, what: str, flag: str) -> Path:
    """`name` as a local folder: itself if it is one, else its snapshot in the Hugging Face cache.

    Resolving the cache ourselves (rather than from_pretrained(hub_id, local_files_only=True)) keeps
    transformers from probing the network for optional files such as adapter_config.json.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name.startswith(".") or name.count("/") > 1:
        raise MissingWeights(missing_message(what, name, flag))
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, or an invalid repo id: either way not available
        raise MissingWeights(missing_message(what, name, flag)) from None


def load_clip(name: str = DEFAULT_CLIP, device: str | torch.device = "cpu") -> ClipFeatures:
    """CLIPModel + tokenizer from a folder or the hub cache; MissingWeights when absent."""
    from transformers import CLIPModel, CLIPTokenizer

    folder = local_folder(name, "CLIP", "--clip-model")
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingWeights(f"{missing_message('CLIP', name, '--clip-model')} ({exc})") from None
    return ClipFeatures(model.to(device), tokenizer, name)


def load_dino(name: str = DEFAULT_DINO, device: str | torch.device = "cpu") -> DinoFeatures:
    """A DINO/DINOv2 ViT (transformers AutoModel) from a folder or the hub cache; MissingWeights when absent."""
    from transformers import AutoModel

    folder = local_folder(name, "DINO", "--dino-model")
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingWeights(f"{missing_message('DINO', name, '--dino-model')} ({exc})") from None
    return DinoFeatures(model.to(device), name)
