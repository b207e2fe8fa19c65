"""The five parts of a Stable Diffusion 1.x model, held together (the one type every loader returns)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer


@dataclass
class SDComponents:
    """Tokenizer, CLIP text encoder, VAE, UNet and noise scheduler of one SD 1.x model.

    `source` says where they came from (a path, a hub id, "tiny", "skeleton:...") for logs and metadata.
    """

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: Any  # a diffusers SchedulerMixin (PNDM for SD 1.4)
    source: str

    def modules(self) -> dict[str, torch.nn.Module]:
        """The three networks by component name (the names LoRA files use for unet/text_encoder)."""
        return {"text_encoder": self.text_encoder, "vae": self.vae, "unet": self.unet}

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "SDComponents":
        """Move/cast the three networks in place; returns self."""
        for module in self.modules().values():
            module.to(device=device, dtype=dtype)
        return self
