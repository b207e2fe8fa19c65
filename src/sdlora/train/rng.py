"""Seeding: every random draw of a training step comes from a seed derived from (seed, step, ...).

Nothing carries random state from one step to the next, so a run resumed at step k draws exactly
what an uninterrupted run draws at step k (bitwise on CPU). The global RNG states are still saved
with a checkpoint (`capture` / `restore`) for anything outside the loop that draws from them.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

_MASK = (1 << 63) - 1


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed from `seed` and any parts (step, micro-batch, process rank, a purpose string).

    Hash-based, so nearby inputs give unrelated streams (seed+step would make run seed=1 at step 0
    equal run seed=0 at step 1).
    """
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _MASK


def generator(seed: int, *parts: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh torch.Generator on `device` seeded with derive_seed(seed, *parts)."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *parts))
    return g


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Reseed the global RNGs for one optimizer step (LoRA dropout draws from torch's global RNG)."""
    seed_all(derive_seed(seed, "step", step, rank))


def capture() -> dict:
    """The global RNG states as plain tensors/lists (loadable with torch.load(weights_only=True))."""
    state = {"torch": torch.get_rng_state(), "python": _python_state(), "numpy": _numpy_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _numpy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
