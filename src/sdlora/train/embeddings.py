"""Pivotal tuning in a run: new tokens learned as textual-inversion embeddings together with the LoRA.

    install       the tokens added to the tokenizer (before captions are tokenized) and their vectors
                  spliced into the text encoder (sdlora.models.new_tokens), from a word or random
    mark_trainable  after the LoRA phase froze the text encoder: only the new rows train
    split_groups  the new rows in their own optimizer group (embeddings.lr, and the stop step)
    trained       {token: (1, D)} for the files (train/export.py bundles and writes them)

The original embedding table is never written (the new rows are a separate parameter), so it stays
bit-exact. The text encoder runs every step (text outputs cannot be cached: the rows change), and its
new rows are saved with every training state like the LoRA's tensors, so a resume restores them.
"""
from __future__ import annotations

import torch
from torch import nn

from sdlora.config import RunConfig
from sdlora.models.components import SDComponents
from sdlora.models.new_tokens import ExtendedEmbedding, add_tokens, base_table, token_vectors, word_vector
from sdlora.train import rng

GROUP = "embeddings"


def enabled(cfg: RunConfig) -> bool:
    return bool(cfg.embeddings.tokens)


def initial_vectors(cfg: RunConfig, components: SDComponents) -> torch.Tensor:
    """(N, D) float32: every token starts at embeddings.init_word's vector, or random (seeded by train.seed)
    with the standard deviation of the embedding table."""
    tokens, te = cfg.embeddings.tokens, components.text_encoder
    table = base_table(te).weight.detach().float()
    if cfg.embeddings.init_word:
        vector = word_vector(components.tokenizer, te, cfg.embeddings.init_word, "embeddings.init_word")
        return vector.expand(len(tokens), -1).clone()
    g = rng.generator(cfg.train.seed, "embeddings")
    return torch.randn(len(tokens), table.shape[1], generator=g) * table.std().cpu()


def install(cfg: RunConfig, components: SDComponents) -> ExtendedEmbedding | None:
    """Add embeddings.tokens to the tokenizer and text encoder (trainable rows); None when off."""
    if not enabled(cfg):
        return None
    vectors = initial_vectors(cfg, components)
    return add_tokens(components.tokenizer, components.text_encoder, list(cfg.embeddings.tokens), vectors,
                      trainable=True, what="embeddings.tokens")


def table(components: SDComponents) -> ExtendedEmbedding | None:
    found = components.text_encoder.get_input_embeddings()
    return found if isinstance(found, ExtendedEmbedding) else None


def mark_trainable(cfg: RunConfig, components: SDComponents) -> None:
    """The new rows train (the LoRA phase freezes everything else in the text encoder)."""
    found = table(components) if enabled(cfg) else None
    if found is not None:
        found.added.weight.requires_grad_(True)


def split_groups(groups: list[dict], cfg: RunConfig, components: SDComponents) -> list[dict]:
    """Move the new rows out of the text encoder's group into their own (lr embeddings.lr; `stop_step`
    read by the LR schedule, train/optim.py). Groups left empty are dropped."""
    found = table(components) if enabled(cfg) else None
    if found is None:
        return groups
    rows = found.added.weight
    kept = [{**g, "params": [p for p in g["params"] if p is not rows]} for g in groups]
    kept = [g for g in kept if g["params"]]
    stop = cfg.embeddings.stop_step or None
    return kept + [{"params": [rows], "lr": cfg.embeddings.lr, "name": GROUP, "stop_step": stop}]


def trainable_models(cfg: RunConfig, components: SDComponents, models: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The run's trainable networks: the text encoder joins when its new rows train."""
    if enabled(cfg) and "text_encoder" not in models:
        models = {**models, "text_encoder": components.text_encoder}
    return models


def trained(components: SDComponents) -> dict[str, torch.Tensor]:
    """{token: (1, D) float32} of the new tokens ({} when none)."""
    return token_vectors(components.text_encoder)
