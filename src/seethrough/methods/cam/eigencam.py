"""Eigen-CAM: the first principal direction of the activations."""

from __future__ import annotations

import torch

from ...registry import register_method
from .base import CAMMethod, CAMState


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
        """First-principal-component projection per sample.

        ``M v_1 = sigma_1 u_1``, and ``u_1`` is the top eigenvector of the small ``(h*w, h*w)``
        Gram matrix ``M M^T`` (``sigma_1^2`` its eigenvalue): one symmetric eigendecomposition
        of a matrix the size of the map instead of an SVD of ``M``.
        """
        n, c, h, w = s.activations.shape
        m = s.activations.reshape(n, c, h * w).transpose(1, 2)
        # the small Gram product in the activations' precision, the eigenproblem in float64
        if h * w <= c:
            values, vectors = torch.linalg.eigh((m @ m.transpose(1, 2)).double())
            proj = vectors[..., -1] * values[:, -1:].clamp_min(0).sqrt()
        else:
            m = m.double()
            _, vectors = torch.linalg.eigh(m.transpose(1, 2) @ m)
            proj = torch.bmm(m, vectors[..., -1:]).squeeze(2)
        sign = torch.where(proj.sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(proj.dtype)
        return (proj * sign).reshape(n, h, w).to(s.activations.dtype)
