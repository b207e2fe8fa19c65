"""Training data: scanning sources, safe decoding, captions, aspect-ratio buckets, sampling, caching.
See docs/architecture.md (`sdlora.data`) for the contract the trainer relies on."""
from sdlora.data.build import build_datasets
from sdlora.data.cache import cache_latents, encode_latents, vae_factor
from sdlora.data.dataset import LoRADataset
from sdlora.data.sampler import BucketBatchSampler, collate
from sdlora.data.text_cache import cache_text

__all__ = ["BucketBatchSampler", "LoRADataset", "build_datasets", "cache_latents", "cache_text", "collate",
           "encode_latents", "vae_factor"]
