"""Text-encoder path conversion, both ways, for a flat (transformers 5) and a nested (transformers 4) model."""
import pytest
from torch import nn

from sdlora.models.names import canonical_te_path, is_nested, model_te_path
from sdlora.models.skeleton import tiny_text_encoder

# (flat path as transformers 5 names it, canonical path as files name it)
PAIRS = [
    ("encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.0.self_attn.q_proj"),
    ("encoder.layers.11.mlp.fc2.weight", "text_model.encoder.layers.11.mlp.fc2.weight"),
    ("embeddings.token_embedding", "text_model.embeddings.token_embedding"),
    ("final_layer_norm.bias", "text_model.final_layer_norm.bias"),
    ("", "text_model"),
]


class NestedCLIP(nn.Module):
    """The transformers-4 layout: the same modules one level down, under `text_model`."""

    def __init__(self, flat: nn.Module):
        super().__init__()
        self.text_model = flat


@pytest.fixture(scope="module")
def flat():
    return tiny_text_encoder()


@pytest.mark.parametrize("flat_path, canonical", PAIRS)
def test_canonical_adds_prefix_and_is_idempotent(flat_path, canonical):
    assert canonical_te_path(flat_path) == canonical
    assert canonical_te_path(canonical) == canonical


@pytest.mark.parametrize("flat_path, canonical", PAIRS)
def test_model_path_for_flat_model_round_trips(flat, flat_path, canonical):
    assert model_te_path(flat, canonical) == flat_path
    assert model_te_path(flat, flat_path) == flat_path
    assert canonical_te_path(model_te_path(flat, canonical)) == canonical


@pytest.mark.parametrize("flat_path, canonical", PAIRS)
def test_model_path_for_nested_model_keeps_prefix(flat, flat_path, canonical):
    nested = NestedCLIP(flat)
    assert model_te_path(nested, canonical) == canonical
    assert model_te_path(nested, flat_path) == canonical


def test_every_live_module_resolves_in_both_layouts(flat):
    nested = NestedCLIP(flat)
    assert not is_nested(flat) and is_nested(nested)
    flat_modules, nested_modules = dict(flat.named_modules()), dict(nested.named_modules())
    for path, module in flat.named_modules():
        canonical = canonical_te_path(path)
        assert flat_modules[model_te_path(flat, canonical)] is module
        assert nested_modules[model_te_path(nested, canonical)] is module


def test_a_prefix_lookalike_is_not_treated_as_canonical():
    assert canonical_te_path("text_model_extra.weight") == "text_model.text_model_extra.weight"
