"""Caching CLIP text-encoder outputs, for a frozen text encoder and static captions.

Each distinct caption (a DreamBooth run has one or two) is encoded once; items then carry
`encoder_hidden_states` (77, D) instead of `input_ids`. Kept in memory, on the CPU, in `dtype`
(default: the text encoder's).
"""
from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from sdlora.errors import SdloraError

log = logging.getLogger("sdlora.data")


@torch.no_grad()
def encode_captions(tokenizer, text_encoder, captions: list[str], *, batch_size: int = 32,
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """caption -> last hidden state (77, D) on the CPU."""
    param = next(text_encoder.parameters())
    out: dict[str, torch.Tensor] = {}
    for start in tqdm(range(0, len(captions), batch_size), desc="caching text", disable=not progress):
        chunk = captions[start:start + batch_size]
        ids = tokenizer(chunk, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids  # (B, 77)
        hidden = text_encoder(ids.to(param.device))[0]  # (B, 77, D)
        out.update({c: h.to("cpu").contiguous() for c, h in zip(chunk, hidden)})
    return out


def cache_text(dataset, text_encoder, *, device=None, dtype=None, batch_size: int = 32,
               progress: bool = True) -> bool:
    """Encode every caption of `dataset` once (and "" under caption dropout) and switch its items to
    `encoder_hidden_states`. Returns False (and changes nothing) when tags are shuffled or dropped."""
    if not dataset.captions_cacheable:
        log.info("text-encoder outputs not cached: captions change per step (shuffle_tags or tag_dropout)")
        return False
    if dataset.tokenizer is None:
        raise SdloraError("cache_text needs a dataset built with a tokenizer")
    if device is not None or dtype is not None:
        text_encoder.to(device=device, dtype=dtype)
    text_encoder.eval()
    captions = dataset.cacheable_captions()
    dataset.text_cache = encode_captions(dataset.tokenizer, text_encoder, captions, batch_size=batch_size,
                                         progress=progress)
    log.info("text: %d distinct captions cached", len(captions))
    return True
