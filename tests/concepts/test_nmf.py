"""The torch NMF: monotone error, recovery of known factors, determinism, batching."""

from __future__ import annotations

import pytest
import torch

from seethrough.errors import InvalidParameterError
from seethrough.methods.concepts import nmf, nmf_batched

K = 3


def known_factors(n: int = 60, m: int = 20, seed: int = 0):
    """Sparse non-negative W0 (n, K), H0 (K, m), separable: K pure rows in W0 and columns in H0."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.rand(n, K, generator=g, dtype=torch.float64)
    h0 = torch.rand(K, m, generator=g, dtype=torch.float64)
    w0[w0 < 0.5] = 0
    h0[h0 < 0.5] = 0
    w0[:K] = torch.eye(K, dtype=torch.float64)
    h0[:, :K] = torch.eye(K, dtype=torch.float64)
    return w0, h0


def best_correlations(truth: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    """For each column of ``truth``, its best correlation with a column of ``found``."""
    corr = torch.corrcoef(torch.cat([truth.T, found.T]))[:K, K:]
    assert corr.argmax(dim=1).unique().numel() == K, "two true factors matched the same one"
    return corr.max(dim=1).values


def test_error_never_increases():
    g = torch.Generator().manual_seed(3)
    v = torch.rand(40, 30, generator=g, dtype=torch.float64) ** 3  # not of low rank
    v[v < 0.05] = 0
    _, _, errors = nmf(v, 6, n_iter=300, tol=0)
    assert len(errors) == 301
    steps = torch.tensor(errors).diff()
    assert (steps <= 1e-12).all(), f"error rose by {steps.max():.3g}"
    assert errors[-1] < 0.9 * errors[0]


def test_recovers_known_factors_up_to_permutation_and_scale():
    w0, h0 = known_factors()
    w, h, errors = nmf(w0 @ h0, K, n_iter=2000, tol=0)
    assert (w >= 0).all() and (h >= 0).all()
    assert errors[-1] < 1e-3
    assert torch.linalg.matrix_norm(w0 @ h0 - w @ h) / torch.linalg.matrix_norm(w0 @ h0) < 1e-3
    assert (best_correlations(w0, w) > 0.99).all()
    assert (best_correlations(h0.T, h.T) > 0.99).all()


def test_stops_when_the_error_settles():
    w0, h0 = known_factors()
    _, _, errors = nmf(w0 @ h0, K, n_iter=5000, tol=1e-3)
    assert len(errors) < 5001
    assert abs(errors[-2] - errors[-1]) < 1e-3 * errors[-2]


def test_deterministic_and_dtype_kept():
    w0, h0 = known_factors()
    v = (w0 @ h0).float()
    a, b = nmf(v, K), nmf(v, K)
    assert a[0].dtype == torch.float32 and a[0].shape == (60, K) and a[1].shape == (K, 20)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


def test_batch_gives_each_matrix_its_own_result():
    v = torch.stack([torch.mm(*known_factors(seed=s)) for s in (0, 1)])
    w, h, errors = nmf_batched(v, K, n_iter=400, tol=1e-6)
    for i in range(2):
        wi, hi, ei = nmf(v[i], K, n_iter=400, tol=1e-6)
        torch.testing.assert_close(w[i], wi, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(h[i], hi, rtol=1e-9, atol=1e-12)
        assert errors[i] == pytest.approx(ei, rel=1e-9)


def test_zero_matrix_and_bad_arguments():
    w, h, errors = nmf(torch.zeros(5, 4), 2)
    assert torch.equal(w @ h, torch.zeros(5, 4)) and errors[-1] == 0
    with pytest.raises(InvalidParameterError, match="non-negative"):
        nmf(-torch.ones(5, 4), 2)
    with pytest.raises(InvalidParameterError, match="rank"):
        nmf(torch.ones(5, 4), 5)
