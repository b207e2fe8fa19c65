"""Tiny models built in code for the LoRA tests (milliseconds to build and run)."""
import pytest
import torch
from torch import nn


class Block(nn.Module):
    """An attention + feed-forward block with diffusers-like names (to_q, to_out.0, ff.net.2)."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, t):  # (B, T, C)
        q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
        attn = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)  # (B, T, T)
        t = t + self.to_out[1](self.to_out[0](attn @ v))
        return t + self.ff(t)


class TinyNet(nn.Module):
    """conv 3x3 -> 1x1 conv -> two transformer blocks over pixels -> LayerNorm -> conv 3x3."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv_in = nn.Conv2d(4, channels, 3, padding=1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.blocks = nn.ModuleList([Block(channels) for _ in range(2)])
        self.norm = nn.LayerNorm(channels)
        self.conv_out = nn.Conv2d(channels, 4, 3, padding=1)

    def forward(self, x):  # (B, 4, H, W)
        h = self.proj(self.conv_in(x))  # (B, C, H, W)
        b, c, height, width = h.shape
        t = h.flatten(2).transpose(1, 2)  # (B, HW, C)
        for block in self.blocks:
            t = block(t)
        h = self.norm(t).transpose(1, 2).reshape(b, c, height, width)
        return self.conv_out(h)


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def tiny_input():
    return torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))


def randomize_lora(model, scale: float = 0.3, seed: int = 0):
    """Give every adapter non-zero up weights (and perturbed DoRA magnitudes) so deltas are visible."""
    from sdlora.lora import lora_modules

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wrapper in lora_modules(model).values():
            for ad in wrapper.adapters.values():
                ad.up.weight.copy_(torch.randn(ad.up.weight.shape, generator=gen) * scale)
                if ad.magnitude is not None:
                    ad.magnitude.mul_(1 + 0.2 * torch.rand(ad.magnitude.shape, generator=gen))
    return model


@pytest.fixture
def randomize():
    return randomize_lora


@pytest.fixture
def make_net():
    """A fresh TinyNet with the given seed (for tests needing two identical models)."""
    def make(seed: int = 0):
        torch.manual_seed(seed)
        return TinyNet().eval()
    return make
