"""Eigen-CAM: the first principal direction of the activations."""

from __future__ import annotations

import torch

from ...registry import register_method
from .base import CAMMethod, CAMState

__all__ = ["EigenCAM", "top_component"]


@register_method
class EigenCAM(CAMMethod):
    """Projection of the activations on their first right singular vector (class-agnostic).

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN
    2020. With ``M`` the ``(h*w, C)`` matrix of activations and ``M = U S V^T``::

        raw = M v_1                 (reshaped to (h, w))
        map = ReLU(raw)

    As in the paper, ``M`` is not mean-centred. The sign of a singular vector is arbitrary; it
    is chosen so that ``raw`` sums to a non-negative value. The map does not depend on the
    target (the target's score is still reported). One forward pass, no gradient.
    """

    name = "eigencam"
    title = "Eigen-CAM"
    rank = 80
    paper = "Muhammad & Yeasin, IJCNN 2020"
    needs_gradients = False
    class_specific = False

    def combine(self, s: CAMState) -> torch.Tensor:
        """First-principal-component projection per sample (:meth:`project`), its sign
        chosen by :meth:`sign`."""
        n, c, h, w = s.activations.shape
        proj = self.project(s.activations.reshape(n, c, h * w).transpose(1, 2))
        return (proj * self.sign(proj)).reshape(n, h, w).to(s.activations.dtype)

    def sign(self, proj: torch.Tensor) -> torch.Tensor:
        """``(N, 1)`` signs making each projection ``(N, h*w)`` sum to a non-negative value."""
        return torch.where(proj.sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(proj.dtype)

    def project(self, m: torch.Tensor) -> torch.Tensor:
        """``M v_1`` of each ``(h*w, C)`` matrix of ``m`` ``(N, h*w, C)``, float64 ``(N, h*w)``.

        ``M v_1 = sigma_1 u_1``, and ``u_1`` is the top eigenvector of the small ``(h*w, h*w)``
        Gram matrix ``M M^T`` (``sigma_1^2`` its eigenvalue): one symmetric eigendecomposition
        of a matrix the size of the map instead of an SVD of ``M``.
        """
        # the small Gram product in the activations' precision, the eigenproblem in float64
        if m.shape[1] <= m.shape[2]:
            return top_component(m @ m.transpose(1, 2))
        m = m.double()
        _, vectors = torch.linalg.eigh(m.transpose(1, 2) @ m)
        return torch.bmm(m, vectors[..., -1:]).squeeze(2)


def top_component(gram: torch.Tensor) -> torch.Tensor:
    """``sqrt(lambda_1) u_1`` of each symmetric ``(L, L)`` matrix of ``gram`` ``(N, L, L)``: the
    first principal component's score of each of the ``L`` points whose Gram (or centred
    kernel) matrix it is; float64 ``(N, L)``, sign arbitrary."""
    values, vectors = torch.linalg.eigh(gram.double())
    return vectors[..., -1] * values[:, -1:].clamp_min(0).sqrt()
