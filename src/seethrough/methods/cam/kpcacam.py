"""KPCA-CAM: the first kernel principal component of the activations."""

from __future__ import annotations

import torch

from ...registry import Param, register_method
from ..params import RELU
from .eigencam import EigenCAM, top_component

KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


@register_method
class KPCACAM(EigenCAM):
    """Eigen-CAM with kernel PCA: the activations' first component in a kernel feature space.

    Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models using
    Kernel PCA", 2024 (as pytorch-grad-cam's ``KPCA_CAM``). With ``M`` the ``(h*w, C)``
    activations centred over positions, ``K[i, j] = k(M_i, M_j)`` the kernel matrix of the
    ``h*w`` positions, ``1`` the ``(h*w, h*w)`` matrix of ``1/(h*w)`` and ``Kc = K - 1K - K1 +
    1K1`` its centred form, with top eigenpair ``(lambda_1, u_1)``::

        raw = sqrt(lambda_1) u_1           (reshaped to (h, w); kernel PCA's first score)
        map = ReLU(raw)

    Kernels (``gamma`` = 0: ``1/C``): ``sigmoid`` ``tanh(gamma <a, b> + 1)`` (the default, as
    pytorch-grad-cam), ``rbf`` ``exp(-gamma |a - b|^2)``, ``poly`` ``(gamma <a, b> + 1)^3``,
    ``linear`` ``<a, b>`` (centred Eigen-CAM) and ``cosine``. Kernel-PCA scores sum to 0, so the sign is
    chosen to make the entry of largest magnitude positive (as scikit-learn's ``KernelPCA``).
    Class-agnostic; one forward pass, no gradient.
    """

    name = "kpcacam"
    title = "KPCA-CAM"
    rank = 85
    paper = "Karmani et al., 2024"
    params = (
        RELU,
        Param("kernel", "sigmoid", "kernel of the kernel PCA", str, choices=KERNELS),
        Param("gamma", 0.0, "kernel coefficient (0: 1 / channels)", float, min=0.0),
    )

    def project(self, m: torch.Tensor) -> torch.Tensor:
        """First kernel-PCA score of each position, from the centred kernel matrix."""
        m = m.double()
        m = m - m.mean(dim=1, keepdim=True)
        k = kernel_matrix(m, self.config["kernel"], self.config["gamma"] or 1.0 / m.shape[2])
        k = k - k.mean(dim=1, keepdim=True)  # K - 1K
        k = k - k.mean(dim=2, keepdim=True)  # ... - K1 + 1K1
        return top_component(k)

    def sign(self, proj: torch.Tensor) -> torch.Tensor:
        """``(N, 1)`` signs making each projection's entry of largest magnitude positive."""
        peak = proj.gather(1, proj.abs().argmax(dim=1, keepdim=True))
        return torch.where(peak < 0, -1.0, 1.0).to(proj.dtype)


def kernel_matrix(m: torch.Tensor, kernel: str, gamma: float) -> torch.Tensor:
    """``K[n, i, j] = k(m[n, i], m[n, j])`` for ``m`` ``(N, L, C)``."""
    dots = m @ m.transpose(1, 2)
    if kernel == "linear":
        return dots
    if kernel == "sigmoid":
        return torch.tanh(gamma * dots + 1)
    if kernel == "poly":
        return (gamma * dots + 1) ** 3
    if kernel == "rbf":
        sq = dots.diagonal(dim1=1, dim2=2)
        return torch.exp(-gamma * (sq[:, :, None] + sq[:, None, :] - 2 * dots).clamp_min(0))
    norms = m.norm(dim=2).clamp_min(1e-300)  # cosine
    return dots / (norms[:, :, None] * norms[:, None, :])
