"""Tiny float64 models with closed-form gradients for the gradient-family tests.

Every reference computed from these models is plain numpy (no autograd): the point is that a
wrong gradient, a wrong quadrature weight or a wrong noise draw in the library cannot be
reproduced by accident in the reference.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DT = torch.float64


def close(actual: object, expected: object, rtol: float = 1e-6) -> None:
    """``actual`` (float32 from the library) equals ``expected`` to ``rtol``; entries that
    cancel to ~0 get an absolute slack of ``rtol * 1e-3 * max|expected|``."""
    expected = np.asarray(expected, dtype=np.float64)
    atol = rtol * 1e-3 * np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol)


def rand(shape: tuple[int, ...], seed: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=DT) * (hi - lo) + lo


class Quadratic(nn.Module):
    """``y_k = W_k . x + (V_k . x)^2`` (``.`` over all of C, H, W).

    ``dy_k/dx = W_k + 2 (V_k . x) V_k``; along ``b + t (x - b)`` the gradient is affine in t, so
    integrated gradients from ``b`` is ``(x - b) * (W_k + (V_k . (x + b)) V_k)``.
    """

    def __init__(self, shape: tuple[int, int, int], classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.W = nn.Parameter(rand((classes, *shape), seed))
        self.V = nn.Parameter(rand((classes, *shape), seed + 1) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        return f @ self.W.flatten(1).T + (f @ self.V.flatten(1).T) ** 2

    # numpy closed forms ---------------------------------------------------------------------
    def np_params(self) -> tuple[np.ndarray, np.ndarray]:
        return self.W.detach().numpy(), self.V.detach().numpy()

    def np_forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, K)`` logits of ``x`` ``(N, C, H, W)``."""
        W, V = self.np_params()
        f = x.reshape(len(x), -1)
        return f @ W.reshape(len(W), -1).T + (f @ V.reshape(len(V), -1).T) ** 2

    def np_grad(self, x: np.ndarray, k: int) -> np.ndarray:
        """``dy_k/dx`` for one input ``x`` ``(C, H, W)``."""
        W, V = self.np_params()
        return W[k] + 2 * np.sum(V[k] * x) * V[k]


class Linear(nn.Module):
    """``y = A . x + c``: every gradient method has an exact answer here."""

    def __init__(self, shape: tuple[int, int, int], classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.A = nn.Parameter(rand((classes, *shape), seed))
        self.c = nn.Parameter(rand((classes,), seed + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.A.flatten(1).T + self.c

    def np_A(self) -> np.ndarray:
        return self.A.detach().numpy()


class TanhMLP(nn.Module):
    """A smooth nonlinear classifier (flatten - linear - tanh - linear - tanh - linear)."""

    def __init__(self, shape: tuple[int, int, int], classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        n = int(np.prod(shape))
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n, 16),
            nn.Tanh(),
            nn.Linear(16, 12),
            nn.Tanh(),
            nn.Linear(12, classes),
        ).to(DT)
        with torch.no_grad():  # strong enough to be clearly nonlinear on inputs in [-1, 1]
            self.net[1].weight.mul_(3.0)
            self.net[3].weight.mul_(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """conv - relu - conv - relu - avgpool - linear, with separate ``nn.ReLU`` modules."""

    def __init__(self, classes: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)
        self.to(dtype).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(h).flatten(1))


class SmallStridedCNN(nn.Module):
    """conv - relu - strided conv - relu - avgpool - linear (Grad-CAM at ``conv2`` is coarser
    than the input, so Guided Grad-CAM really upsamples)."""

    def __init__(self, classes: int = 4, seed: int = 0, dtype: torch.dtype = DT) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, stride=2)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)
        self.to(dtype).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(h).flatten(1))


def ig_quadratic(quad: Quadratic, x: np.ndarray, b: np.ndarray, k: int, ab: float) -> np.ndarray:
    """IG of ``Quadratic`` from ``b`` for a rule with mean node ``ab`` (see its docstring)."""
    W, V = quad.np_params()
    d = x - b
    return d * (W[k] + 2 * (np.sum(V[k] * b) + ab * np.sum(V[k] * d)) * V[k])


SIZES = (12, 10, 8, 3)


def linears(seed: int = 0, scale: float = 1.0, scale2: float = 1.0) -> list[nn.Linear]:
    torch.manual_seed(seed)
    layers = [nn.Linear(a, b).to(DT) for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)]
    with torch.no_grad():
        layers[0].weight.mul_(scale)
        layers[1].weight.mul_(scale2)
        for lin in layers:
            lin.bias.uniform_(-0.3, 0.3)
    return layers


class SeqMLP(nn.Module):
    """``Flatten - l1 - a1 - l2 - a2 - l3`` in one ``nn.Sequential`` (``a2`` may be ``a1``)."""

    def __init__(
        self, a1: nn.Module, a2: nn.Module, seed: int = 0, scale: float = 1.0, scale2: float = 1.0
    ) -> None:
        super().__init__()
        l1, l2, l3 = linears(seed, scale, scale2)
        self.net = nn.Sequential(nn.Flatten(), l1, a1, l2, a2, l3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def layers(self) -> list[nn.Linear]:
        return [self.net[1], self.net[3], self.net[5]]
