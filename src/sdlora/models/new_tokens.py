"""New words for the CLIP text encoder (textual inversion, pivotal tuning): the tokenizer learns the
tokens, and a small table of their vectors is spliced in after the frozen embedding table.

    id <  V   the original table (V rows, frozen and never written: bit-exact by construction)
    id >= V   row id - V of `added.weight` (N, D): trainable while training, fixed when generating

`ExtendedEmbedding` wraps the text encoder's input embedding (through get/set_input_embeddings, so
the transformers 4/5 module layouts do not matter) and keeps the original module as `.base`. Each
token is one vector; several tokens (`<s0><s1>`) make a multi-vector concept.
"""
from __future__ import annotations

import torch
from torch import nn

from sdlora.errors import SdloraError


class AddedRows(nn.Module):
    """The new rows (N, D), in a child module registered after `base`, so that the text encoder's first
    parameter (what `text_encoder.dtype` reports) stays the original table's."""

    def __init__(self, vectors: torch.Tensor, trainable: bool):
        super().__init__()
        self.weight = nn.Parameter(vectors.detach().clone(), requires_grad=trainable)


class ExtendedEmbedding(nn.Module):
    """An nn.Embedding of V rows followed by N added rows; only the added rows can train."""

    def __init__(self, base: nn.Embedding, tokens: list[str], vectors: torch.Tensor, trainable: bool = False):
        super().__init__()
        self.base = base
        self.tokens = list(tokens)
        self.added = AddedRows(vectors, trainable)

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings + len(self.tokens)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vocab = self.base.num_embeddings
        new = ids >= vocab  # (B, T)
        out = self.base(torch.where(new, torch.zeros_like(ids), ids))  # (B, T, D)
        rows = self.added.weight.to(out.dtype)[(ids - vocab).clamp(min=0, max=len(self.tokens) - 1)]
        return torch.where(new.unsqueeze(-1), rows, out)


def known_token(tokenizer, token: str) -> bool:
    """True when `token` already means something to the tokenizer (a word, a word piece, an added token)."""
    vocab = tokenizer.get_vocab()
    return token in vocab or token.lower() in vocab or f"{token.lower()}</w>" in vocab


def add_tokens(tokenizer, text_encoder: nn.Module, tokens: list[str], vectors: torch.Tensor, *,
               trainable: bool = False, what: str = "token") -> ExtendedEmbedding:
    """Teach `tokenizer` the new `tokens` and splice their `vectors` (N, D) into `text_encoder`.

    Tokens already attached extend the same table (several LoRA files with embeddings). SdloraError,
    naming `what`, for a token the tokenizer already knows or vectors of the wrong width."""
    current = text_encoder.get_input_embeddings()
    base = current.base if isinstance(current, ExtendedEmbedding) else current
    if vectors.dim() != 2 or vectors.shape != (len(tokens), base.embedding_dim):
        raise SdloraError(f"{what}: {len(tokens)} token(s) need vectors of shape ({len(tokens)}, "
                          f"{base.embedding_dim}) for this text encoder, got {tuple(vectors.shape)}")
    for token in tokens:
        if known_token(tokenizer, token) or tokens.count(token) > 1:
            raise SdloraError(f"{what}: {token!r} is already a token of this tokenizer (or given twice); "
                              "choose a new word such as `<sks>`")
    old_tokens, old_rows = ([], None) if current is base else (current.tokens, current.added.weight.detach())
    first = base.num_embeddings + len(old_tokens)
    if len(tokenizer) != first:
        raise SdloraError(f"{what}: the tokenizer has {len(tokenizer)} entries but the text encoder "
                          f"{first}; new tokens need the two to agree")
    tokenizer.add_tokens(list(tokens))
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if ids != list(range(first, first + len(tokens))):
        raise SdloraError(f"{what}: the tokenizer gave {tokens} the ids {ids}, expected {first}.. in order")
    rows = vectors.to(torch.float32 if trainable else base.weight.dtype)
    if old_rows is not None:
        rows = torch.cat([old_rows.to(rows.dtype), rows])
    wrapper = ExtendedEmbedding(base, old_tokens + list(tokens), rows.to(base.weight.device), trainable)
    text_encoder.set_input_embeddings(wrapper)
    return wrapper


def token_vectors(text_encoder: nn.Module) -> dict[str, torch.Tensor]:
    """{token: (1, D) float32 CPU copy} of every added token, in id order ({} when none)."""
    table = text_encoder.get_input_embeddings()
    if not isinstance(table, ExtendedEmbedding):
        return {}
    rows = table.added.weight.detach().to("cpu", torch.float32)
    return {token: rows[i:i + 1].clone() for i, token in enumerate(table.tokens)}


def word_vector(tokenizer, text_encoder: nn.Module, word: str, what: str = "word") -> torch.Tensor:
    """The mean input embedding (D,) float32 of the tokens `word` is made of (without start/end tokens)."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise SdloraError(f"{what}: {word!r} has no tokens; give a word such as `painting`")
    table = text_encoder.get_input_embeddings()
    with torch.no_grad():
        rows = table(torch.tensor([ids], device=base_table(text_encoder).weight.device))[0]
    return rows.float().mean(0).cpu()


def base_table(text_encoder: nn.Module) -> nn.Embedding:
    """The original embedding table (V, D), whether or not tokens were added."""
    table = text_encoder.get_input_embeddings()
    return table.base if isinstance(table, ExtendedEmbedding) else table
