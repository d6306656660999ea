"""Tiny models with known structure for the perturbation tests (float64 unless said otherwise)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn

DT = torch.float64


def grid_labels(h: int, w: int, rows: int, cols: int, seed: int | None = None) -> np.ndarray:
    """A rows x cols grid of rectangular features (labels 0..F-1, optionally shuffled)."""
    r = np.arange(h) * rows // h
    c = np.arange(w) * cols // w
    labels = (r[:, None] * cols + c[None, :]).astype(np.int64)
    if seed is not None:
        perm = np.random.default_rng(seed).permutation(rows * cols)
        labels = perm[labels]
    return labels


class SmallMLP(nn.Module):
    """A nonlinear classifier: tanh MLP plus a product of two linear forms (strong interactions)."""

    def __init__(
        self, in_features: int, classes: int = 3, hidden: int = 12, seed: int = 0, gain: float = 3.0
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        scale = gain / math.sqrt(in_features)
        self.w1 = nn.Parameter(torch.randn(hidden, in_features, generator=g, dtype=DT) * scale)
        self.b1 = nn.Parameter(torch.randn(hidden, generator=g, dtype=DT) * 0.1)
        self.w2 = nn.Parameter(
            torch.randn(classes, hidden, generator=g, dtype=DT) / math.sqrt(hidden)
        )
        self.u = nn.Parameter(
            torch.randn(classes, in_features, generator=g, dtype=DT) / math.sqrt(in_features)
        )
        self.v = nn.Parameter(
            torch.randn(classes, in_features, generator=g, dtype=DT) / math.sqrt(in_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        h = torch.tanh(f @ self.w1.T + self.b1)
        return h @ self.w2.T + (f @ self.u.T) * (f @ self.v.T)


class SegmentMeanLinear(nn.Module):
    """logit_k = sum_f c[k, f] * (mean of x over the channels and pixels of segment f)."""

    def __init__(self, labels: np.ndarray, c: torch.Tensor) -> None:
        super().__init__()
        lab = torch.as_tensor(labels).flatten()
        n = int(lab.max()) + 1
        ind = torch.zeros(n, lab.numel(), dtype=DT)
        ind[lab, torch.arange(lab.numel())] = 1.0
        self.register_buffer("avg", ind / ind.sum(1, keepdim=True))
        self.c = nn.Parameter(c.to(DT).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(1).flatten(1) @ self.avg.T  # (N, F)
        return means @ self.c.T


class WeightedSum(nn.Module):
    """Output (N, 2) = [sum(x * a), -sum(x * a)]: linear in the input; optionally records inputs."""

    def __init__(self, a: torch.Tensor, record: bool = False) -> None:
        super().__init__()
        self.a = nn.Parameter(a.to(DT).clone())
        self.record = record
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record:
            self.seen.append(x.detach().clone())
        s = (x * self.a).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


class TinyConv(nn.Module):
    """conv - batchnorm - relu - pool - linear (float32 by default), for determinism/state tests."""

    def __init__(self, classes: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, classes)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)
        self.to(dtype).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))


def masked_inputs(x: torch.Tensor, hidden: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """x * m + hidden * (1 - m) for masks (M, H, W): (M, C, H, W)."""
    m = masks[:, None].to(x.dtype)
    return x * m + hidden * (1 - m)


def brute_force_shapley(
    model: nn.Module, x: torch.Tensor, hidden: torch.Tensor, labels: np.ndarray, cls: int
) -> tuple[np.ndarray, float, float]:
    """Exact Shapley values of the features of ``labels`` for logit ``cls``, by enumeration.

    v(S) = logit of the input whose features outside S are replaced by ``hidden``; returns
    (phi, v(all), v(empty)).
    """
    n = int(labels.max()) + 1
    subsets = list(itertools.product((0, 1), repeat=n))
    z = torch.tensor(subsets, dtype=DT)  # (2^F, F)
    seg = torch.as_tensor(labels).long()
    with torch.no_grad():
        v_all = model(masked_inputs(x, hidden, z[:, seg]))[:, cls].numpy()
    v = {s: float(val) for s, val in zip(subsets, v_all, strict=True)}
    phi = np.zeros(n)
    for i in range(n):
        for s in subsets:
            if s[i]:
                continue
            k = sum(s)
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            with_i = s[:i] + (1,) + s[i + 1 :]
            phi[i] += weight * (v[with_i] - v[s])
    return phi, v[(1,) * n], v[(0,) * n]


class UnanimityGame(nn.Module):
    """logit 0 = sum_k c_k prod_{f in A_k} z_f, with z_f read back from the masked input.

    With hide=0 a kept feature's segment mean equals the clean one and a hidden one's is 0, so
    ``z_f = mean_f(input) / mean_f(clean input)`` is the coalition indicator. The Shapley value
    of feature i is known in closed form: sum over the sets A_k containing i of c_k / |A_k|.
    """

    def __init__(
        self, labels: np.ndarray, x0: torch.Tensor, sets: list[tuple[int, ...]], coefs: list[float]
    ) -> None:
        super().__init__()
        n = int(labels.max()) + 1
        self.seg = SegmentMeanLinear(labels, torch.eye(n))
        with torch.no_grad():
            self.register_buffer("m0", self.seg(x0[None].to(DT))[0])
        self.sets = [list(a) for a in sets]
        self.coefs = list(coefs)

    def shapley(self) -> np.ndarray:
        phi = np.zeros(self.m0.shape[0])
        for a, c in zip(self.sets, self.coefs, strict=True):
            phi[a] += c / len(a)
        return phi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.seg(x) / self.m0
        v = sum(c * z[:, a].prod(1) for a, c in zip(self.sets, self.coefs, strict=True))
        return torch.stack([v, torch.zeros_like(v)], 1)
