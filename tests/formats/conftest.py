"""Fixtures for the formats tests: random LoRAs on the tiny SD model, output probes, a max-difference helper.

pytest runs in importlib mode, so helpers reach the tests as fixtures (session-scoped, returning functions).
"""
from __future__ import annotations

import pytest
import torch

from sdlora.formats import canonical as C
from sdlora.formats.modules import lora_paths
from sdlora.lora import resolve_targets
from sdlora.models import tiny_components
from sdlora.models.names import canonical_te_path


def make_lora(components, unet_presets=("unet-attn",), *, text_encoder=True, seed=0, ranks=(4, 2),
              alphas=(3.0, 1.5), up_std=0.2, dora=False) -> dict[str, torch.Tensor]:
    """A canonical LoRA with random non-zero up weights, per-module ranks and alpha != rank.

    Module i gets rank ranks[i % len] and alpha alphas[i % len]; DoRA magnitudes (when asked) are the
    base row norms times a random factor, so DoRA changes the output.
    """
    gen = torch.Generator().manual_seed(seed)
    sites = [("unet", components.unet, p) for p in resolve_targets(list(unet_presets), lora_paths(components.unet))]
    if text_encoder:
        te = components.text_encoder
        sites += [("text_encoder", te, p) for p in resolve_targets("text-encoder", lora_paths(te))]
    lora = {}
    for i, (component, model, path) in enumerate(sites):
        weight = model.get_submodule(path).weight  # (out, in) or (out, in, kh, kw)
        rank, alpha = ranks[i % len(ranks)], alphas[i % len(alphas)]
        name = path if component == "unet" else canonical_te_path(path)
        down = torch.randn((rank,) + tuple(weight.shape[1:]), generator=gen) / weight[0].numel() ** 0.5
        up = torch.randn((weight.shape[0], rank) + (1,) * (weight.dim() - 2), generator=gen) * up_std
        lora[C.join_key(component, name, C.DOWN)] = down
        lora[C.join_key(component, name, C.UP)] = up
        lora[C.join_key(component, name, C.ALPHA)] = torch.tensor(alpha)
        if dora:
            norm = weight.detach().flatten(1).norm(dim=1)
            factor = 1 + 0.2 * torch.randn(norm.shape, generator=gen)
            lora[C.join_key(component, name, C.DORA)] = (norm * factor).reshape((-1,) + (1,) * (weight.dim() - 1))
    return lora


class Probe:
    """Fixed inputs for the tiny UNet and text encoder; returns their outputs."""

    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.sample = torch.randn(2, 4, 8, 8, generator=gen)
        self.context = torch.randn(2, 77, 32, generator=gen)
        self.ids = torch.randint(0, 49408, (2, 77), generator=gen)

    @torch.no_grad()
    def __call__(self, unet, text_encoder) -> tuple[torch.Tensor, torch.Tensor]:
        u = unet(self.sample, 10, encoder_hidden_states=self.context).sample
        t = text_encoder(self.ids)[0]
        return u, t


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@pytest.fixture(scope="session")
def lora_maker():
    """make_lora(components, unet_presets, ...) -> a random canonical LoRA (see make_lora)."""
    return make_lora


@pytest.fixture(scope="session")
def diff():
    """max |a - b| as a float."""
    return max_diff


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def tiny():
    return tiny_components(0)


