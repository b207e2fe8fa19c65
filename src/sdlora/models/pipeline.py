"""A diffusers StableDiffusionPipeline around SDComponents, for generation."""
from __future__ import annotations

from sdlora.models.components import SDComponents


def build_pipeline(components: SDComponents, scheduler=None, *, safety_checker=None, feature_extractor=None):
    """StableDiffusionPipeline sharing the components' modules (nothing is copied).

    `scheduler` replaces the components' noise scheduler for sampling (e.g. DDIM or Euler); no safety
    checker unless one is passed (with its feature extractor).
    """
    # Imported here: the pipeline module pulls in CLIP image processors that plain model loading never needs.
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=scheduler if scheduler is not None else components.scheduler,
        safety_checker=safety_checker,
        feature_extractor=feature_extractor,
        requires_safety_checker=safety_checker is not None,
    )
