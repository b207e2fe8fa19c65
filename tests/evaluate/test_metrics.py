import numpy as np
import pytest
import torch

from sdlora.evaluate.metrics import (cosine_matrix, feature_stats, frechet_distance, frechet_from_stats,
                                     kernel_inception_distance, mean_similarity, mmd2_unbiased, paired_cosine)


def gaussian(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale + shift


def test_cosine_of_a_set_with_itself_is_one_on_the_diagonal():
    x = gaussian(5, 16, 0)
    sims = cosine_matrix(x, x)
    assert sims.shape == (5, 5)
    assert torch.allclose(sims.diagonal(), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(sims, sims.T) and float(sims.abs().max()) <= 1 + 1e-12
    assert torch.allclose(paired_cosine(x, x), torch.ones(5, dtype=torch.float64))


def test_cosine_known_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [-3.0, 0.0]])
    expected = torch.tensor([[0.0, -1.0], [2 ** -0.5, -(2 ** -0.5)]], dtype=torch.float64)
    assert torch.allclose(cosine_matrix(a, b), expected)
    assert mean_similarity(a, b) == pytest.approx(float(expected.mean()))
    assert paired_cosine(a, b).tolist() == pytest.approx([0.0, -(2 ** -0.5)])


def test_frechet_of_a_set_with_itself_is_zero():
    x = gaussian(64, 8, 1)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    # For commuting (diagonal) covariances: |mu1-mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2)).
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_is_symmetric_and_grows_with_shift():
    a, b = gaussian(200, 4, 2), gaussian(200, 4, 3)
    near, far = frechet_distance(a, b + 0.5), frechet_distance(a, b + 2.0)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    assert far > near > frechet_distance(a, b)
    mu, cov = feature_stats(a)
    assert mu.shape == (4,) and cov.shape == (4, 4)


def test_kid_unbiased_estimator_averages_to_zero_for_one_distribution():
    # Many pairs of small samples from one distribution: the unbiased MMD^2 averages ~0 (within a few
    # standard errors), while keeping the kernel diagonal (the biased estimator) is clearly positive.
    values, biased = [], []
    for i in range(200):
        x, y = gaussian(10, 4, 2 * i), gaussian(10, 4, 2 * i + 1)
        values.append(mmd2_unbiased(x, y))
        kxx, kyy = ((x @ x.T) / 4 + 1) ** 3, ((y @ y.T) / 4 + 1) ** 3
        biased.append(float(kxx.mean() + kyy.mean() - 2 * (((x @ y.T) / 4 + 1) ** 3).mean()))
    mean, stderr = np.mean(values), np.std(values) / np.sqrt(len(values))
    assert abs(mean) < 4 * stderr
    assert np.mean(biased) > 10 * stderr


def test_kid_separates_distributions_and_reports_spread():
    a = gaussian(60, 8, 10)
    same_mean, same_std = kernel_inception_distance(a, gaussian(60, 8, 11), subsets=20, subset_size=30)
    shifted_mean, _ = kernel_inception_distance(a, gaussian(60, 8, 12, shift=1.0), subsets=20, subset_size=30)
    assert shifted_mean > same_mean + 5 * same_std
    assert same_std > 0
    with pytest.raises(ValueError):
        kernel_inception_distance(a[:1], a)
