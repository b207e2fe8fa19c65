"""Captions: reading sidecar files and the per-sample transforms (pure functions over a caption).

Tag-style captions are comma-separated (`1girl, blue hair, school uniform`). The transform order is:
caption dropout (whole caption -> "", prefix and suffix included, for classifier-free guidance),
then tag dropout and shuffling of the tags after the first `keep_tokens`, then prefix + caption +
suffix. The prefix (a trigger word) is therefore never shuffled or dropped.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from sdlora.data.files import MAX_CAPTION_BYTES, read_text

# CLIP's context is 77 tokens including the start and end tokens.
MAX_CAPTION_TOKENS = 75


def read_caption_file(path: str | Path) -> str:
    """A sidecar caption: UTF-8 (BOM tolerated, undecodable bytes replaced), lines joined by spaces.
    Raises files.FileRefused for what the reading policy will not read (FIFO, folder, over 1 MiB...)."""
    text = read_text(path, MAX_CAPTION_BYTES)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def split_tags(caption: str) -> list[str]:
    """`a, b ,, c` -> [a, b, c] (empty tags dropped)."""
    return [t.strip() for t in caption.split(",") if t.strip()]


def tag_frequency(captions: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """(folder name, caption) pairs, one per image -> {folder name: {tag: count}}, as kohya's
    `ss_tag_frequency`: tags are the comma-separated parts, stripped and lower-cased; every occurrence
    counts, repeats do not."""
    out: dict[str, Counter] = {}
    for folder, caption in captions:
        out.setdefault(folder, Counter()).update(t.lower() for t in split_tags(caption))
    return {folder: dict(sorted(tags.items())) for folder, tags in out.items()}


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def join_parts(prefix: str, caption: str, suffix: str) -> str:
    """Concatenate prefix + caption + suffix as written by the user (their separators kept)."""
    return f"{prefix}{caption}{suffix}".strip()


@dataclass(frozen=True)
class CaptionTransform:
    """What happens to a caption each time a sample is drawn (settings from DataConfig/SourceConfig)."""

    prefix: str = ""
    suffix: str = ""
    shuffle_tags: bool = False
    keep_tokens: int = 0
    tag_dropout: float = 0.0
    caption_dropout: float = 0.0

    @property
    def is_static(self) -> bool:
        """True when a caption always comes out the same."""
        return self.cacheable and self.caption_dropout == 0

    @property
    def cacheable(self) -> bool:
        """True when a caption comes out as its full form or, with caption dropout, "" (a fixed set
        of texts, so text-encoder outputs can be cached)."""
        return not (self.shuffle_tags or self.tag_dropout > 0)

    def static(self) -> "CaptionTransform":
        """The same prefix/suffix without randomness (validation)."""
        return CaptionTransform(prefix=self.prefix, suffix=self.suffix)

    def full(self, caption: str) -> str:
        """The caption as seen without dropout or shuffling (for token-length checks and reports)."""
        return join_parts(self.prefix, caption, self.suffix)

    def __call__(self, caption: str, rng: np.random.Generator) -> str:
        if self.is_static:
            return self.full(caption)
        if self.caption_dropout > 0 and rng.random() < self.caption_dropout:
            return ""
        if self.shuffle_tags or self.tag_dropout > 0:
            caption = join_tags(transform_tags(split_tags(caption), rng, keep=self.keep_tokens,
                                               shuffle=self.shuffle_tags, dropout=self.tag_dropout))
        return self.full(caption)


def transform_tags(tags: list[str], rng: np.random.Generator, *, keep: int, shuffle: bool,
                   dropout: float) -> list[str]:
    """Keep the first `keep` tags in place; drop each other tag with probability `dropout`, then
    shuffle the rest when `shuffle`."""
    head, tail = tags[:keep], tags[keep:]
    if dropout > 0:
        tail = [t for t, r in zip(tail, rng.random(len(tail))) if r >= dropout]
    if shuffle and len(tail) > 1:
        tail = [tail[i] for i in rng.permutation(len(tail))]
    return head + tail


def token_counts(tokenizer, captions: list[str]) -> list[int]:
    """Number of BPE tokens of each caption, without the start/end tokens."""
    if not captions:
        return []
    return [len(ids) for ids in tokenizer(captions, add_special_tokens=False)["input_ids"]]


def too_long(tokenizer, captions: list[str], limit: int = MAX_CAPTION_TOKENS) -> list[tuple[str, int]]:
    """(caption, token count) for every caption CLIP will truncate (over `limit` tokens)."""
    return [(c, n) for c, n in zip(captions, token_counts(tokenizer, captions)) if n > limit]
