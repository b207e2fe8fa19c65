"""Token embeddings bundled in LoRA files are taught to the model when the file is attached (generate,
compare): the prompt's token samples with the file's vectors."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sdlora.formats import save_lora_file
from sdlora.generate.loras import LoraSpec, attach_loras
from sdlora.generate.prompts import PromptSpec
from sdlora.generate.sampling import Sampler
from sdlora.models import tiny_components

from .conftest import random_lora

SPEC = PromptSpec("a <sks> square", "", seed=3, steps=2, cfg=4.0, width=32, height=32)


@pytest.fixture(scope="module")
def lora():
    return random_lora(tiny_components(0), 1, text_encoder=False)


def write(tmp_path, name, lora, emb):
    return save_lora_file(tmp_path / f"{name}.safetensors", lora, {}, "kohya", torch.float32, embeddings=emb)


def vector(seed: int, n: int = 1) -> torch.Tensor:
    return torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))


def test_bundled_tokens_are_attached_and_used_when_sampling(tmp_path, lora):
    images = []
    for seed in (1, 2):
        components = tiny_components(0)
        path = write(tmp_path, f"style{seed}", lora, {"<sks>": vector(seed)})
        loaded = attach_loras(components, [LoraSpec(path, 0.0)])  # weight 0: only the token differs
        assert loaded[0].tokens == ["<sks>"]
        token = components.tokenizer.convert_tokens_to_ids("<sks>")
        row = components.text_encoder.get_input_embeddings()(torch.tensor([[token]]))[0, 0]
        assert torch.equal(row, vector(seed)[0])
        images.append(Sampler(components).arrays(SPEC, [SPEC.seed]))
    assert not np.array_equal(images[0], images[1])


def test_multi_vector_tokens_expand_in_prompts_and_a_repeated_token_keeps_its_first_meaning(tmp_path, lora,
                                                                                            caplog):
    components = tiny_components(0)
    first = write(tmp_path, "first", lora, {"<x>": vector(3, n=2)})
    again = write(tmp_path, "again", lora, {"<x>": vector(4)})
    with caplog.at_level(logging.WARNING):
        loaded = attach_loras(components, [LoraSpec(first), LoraSpec(again)])
    assert [item.tokens for item in loaded] == [["<x>", "<x>_1"], []]
    assert "token <x> is already known" in caplog.text
    rows = components.text_encoder.get_input_embeddings().added.weight
    assert torch.equal(rows, vector(3, n=2))
    pipeline = Sampler(components).pipeline
    assert pipeline.maybe_convert_prompt("a <x> style", components.tokenizer) == "a <x> <x>_1 style"
