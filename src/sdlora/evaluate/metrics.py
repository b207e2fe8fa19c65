"""The numbers LoRA/DreamBooth papers report, as pure functions over feature matrices (no models here).

- CLIP-T: cosine similarity of a generated image's CLIP embedding and its prompt's (prompt fidelity).
- CLIP-I / DINO: mean cosine similarity between generated and training images (subject fidelity;
  DreamBooth reports both, DINO being more sensitive to the subject's identity).
- Frechet distance and KID between two feature sets (FID/KID when the features are Inception's; here
  they come from whichever encoder the caller names, e.g. FD_DINO, so numbers are labelled as such).

Features are (N, D) tensors; everything is computed in float64.
"""
from __future__ import annotations

import numpy as np
import torch


def _f64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(torch.float64).cpu()


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Na, D) x (Nb, D) -> (Na, Nb) cosine similarities."""
    a, b = _f64(a), _f64(b)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ b.T


def paired_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row i of `a` with row i of `b`: (N,) cosines (CLIP-T: images with their own prompts)."""
    if a.shape != b.shape:
        raise ValueError(f"paired_cosine: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    return torch.nn.functional.cosine_similarity(_f64(a), _f64(b), dim=1)


def mean_similarity(generated: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean cosine over all (generated, reference) pairs: CLIP-I or DINO with the matching features."""
    return float(cosine_matrix(generated, reference).mean())


def feature_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, N >= 2."""
    x = _f64(features).numpy()
    if x.shape[0] < 2:
        raise ValueError("feature_stats: need at least 2 feature vectors for a covariance")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_from_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), the Frechet distance of two Gaussians.

    tr((C1 C2)^1/2) = tr((C1^1/2 C2 C1^1/2)^1/2): the inner matrix is symmetric PSD, so its square
    root comes from a real eigendecomposition (stable where scipy's sqrtm needs complex arithmetic).
    """
    root1 = _psd_sqrt(cov1)
    inner = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt, 0.0))


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between feature sets `a` (N, D) and `b` (M, D)."""
    return frechet_from_stats(*feature_stats(a), *feature_stats(b))


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel k(x, y) = (x.y / D + 1)^3."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 with the polynomial kernel: self-similarities leave out the diagonal, so the
    expectation is exactly 0 when x and y come from the same distribution (it can be negative)."""
    x, y = _f64(x), _f64(y)
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def kernel_inception_distance(a: torch.Tensor, b: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID as in Binkowski et al.: mean and std of unbiased MMD^2 over random subsets of both sets
    (subset_size is capped at the smaller set, as small evaluation sets are the norm here)."""
    a, b = _f64(a), _f64(b)
    size = min(subset_size, a.shape[0], b.shape[0])
    if size < 2:
        raise ValueError("kernel_inception_distance: need at least 2 feature vectors in each set")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[rng.choice(a.shape[0], size, replace=False)],
                            b[rng.choice(b.shape[0], size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
