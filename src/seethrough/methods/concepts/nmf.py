"""Non-negative matrix factorization by multiplicative updates, in torch (batched, float64).

Lee & Seung, "Algorithms for Non-negative Matrix Factorization", NIPS 2001. For ``V >= 0`` of
shape ``(N, M)`` and a rank ``k``, find ``W >= 0`` ``(N, k)`` and ``H >= 0`` ``(k, M)`` minimising
the Frobenius error ``||V - W H||_F`` with the updates::

    H <- H * (W^T V) / (W^T W H)
    W <- W * (V H^T) / (W H H^T)

Each update is the minimiser of a quadratic upper bound of the error, so the error never
increases. Denominators are clamped at ``eps`` (no 0/0 where a factor has vanished).

The start is deterministic: NNDSVDa (Boutsidis & Gallopoulos, "SVD based initialization: A head
start for nonnegative matrix factorization", Pattern Recognition 2008), the positive parts of
the leading singular pairs, zeros filled with the mean of ``V`` so that multiplicative updates
can still move them.
"""

from __future__ import annotations

import torch

from ...errors import InvalidParameterError

__all__ = ["nmf", "nmf_batched", "relative_error"]

EPS = 1e-12


def relative_error(v: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``||V - W H||_F / ||V||_F`` over the last two dimensions (0 for an all-zero ``V``)."""
    num = torch.linalg.matrix_norm(v - w @ h)
    return num / torch.linalg.matrix_norm(v).clamp_min(EPS)


def _safe(norm: torch.Tensor) -> torch.Tensor:
    return norm.clamp_min(EPS)


def _nndsvda(v: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVDa start ``(B, N, k)``, ``(B, k, M)`` of a batch ``v`` ``(B, N, M)``.

    For each singular triple ``(s_j, u_j, v_j)`` keep the sign pattern (``+`` or ``-``) whose
    positive parts have the larger norm product; it is invariant to the SVD's sign choice.
    """
    u, s, vh = torch.linalg.svd(v, full_matrices=False)
    u, s, vh = u[..., :k], s[..., :k], vh[..., :k, :]
    up, un, vp, vn = u.clamp_min(0), (-u).clamp_min(0), vh.clamp_min(0), (-vh).clamp_min(0)
    nup, nun = torch.linalg.vector_norm(up, dim=-2), torch.linalg.vector_norm(un, dim=-2)
    nvp, nvn = torch.linalg.vector_norm(vp, dim=-1), torch.linalg.vector_norm(vn, dim=-1)
    pos = nup * nvp >= nun * nvn  # (B, k)
    sigma = torch.where(pos, nup * nvp, nun * nvn)
    uu = torch.where(
        pos[..., None, :], up / _safe(nup)[..., None, :], un / _safe(nun)[..., None, :]
    )
    vv = torch.where(pos[..., None], vp / _safe(nvp)[..., None], vn / _safe(nvn)[..., None])
    scale = (s * sigma).sqrt()
    w, h = uu * scale[..., None, :], vv * scale[..., None]
    fill = v.mean(dim=(-2, -1), keepdim=True)
    return torch.where(w > EPS, w, fill), torch.where(h > EPS, h, fill)


def nmf_batched(
    v: torch.Tensor, k: int, n_iter: int = 200, tol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor, list[list[float]]]:
    """Factorize each matrix of a batch ``v`` ``(B, N, M)`` independently: ``V_b ~ W_b H_b``.

    Every matrix stops on its own (its result is the one :func:`nmf` gives for it alone):
    after ``n_iter`` updates, or once its relative error changes by less than ``tol`` relative
    to the previous value. Computed in float64; returned in ``v``'s dtype.

    Args:
        v: non-negative matrices ``(B, N, M)``.
        k: rank, at most ``min(N, M)``.
        n_iter: maximum number of updates of ``(H, W)``.
        tol: relative change of the error under which a matrix stops.

    Returns:
        ``W`` ``(B, N, k)``, ``H`` ``(B, k, M)`` and, per matrix, its relative errors
        ``||V - W H||_F / ||V||_F``: the start's, then one after each update.
    """
    if v.dim() != 3:
        raise InvalidParameterError(f"nmf_batched needs (B, N, M) matrices, got {tuple(v.shape)}")
    if not 1 <= k <= min(v.shape[-2:]):
        raise InvalidParameterError(
            f"NMF rank k={k} must lie in 1..{min(v.shape[-2:])} for {v.shape[-2]}x{v.shape[-1]} "
            "matrices"
        )
    vd = v.detach().to(torch.float64)
    if bool((vd < 0).any()) or not bool(torch.isfinite(vd).all()):
        raise InvalidParameterError("NMF needs a finite, non-negative matrix")
    w, h = _nndsvda(vd, k)
    err = relative_error(vd, w, h)
    curves = [err]
    active = torch.ones(vd.shape[0], dtype=torch.bool, device=vd.device)
    for _ in range(n_iter):
        h_new = h * (w.mT @ vd) / (w.mT @ w @ h).clamp_min(EPS)
        w_new = w * (vd @ h_new.mT) / (w @ (h_new @ h_new.mT)).clamp_min(EPS)
        h = torch.where(active[:, None, None], h_new, h)
        w = torch.where(active[:, None, None], w_new, w)
        new = relative_error(vd, w, h)
        change = (err - new).abs() / err.clamp_min(EPS)
        err = torch.where(active, new, err)
        curves.append(torch.where(active, new, torch.nan))
        active = active & (change >= tol) & (new > 0)
        if not bool(active.any()):
            break
    table = torch.stack(curves, dim=1).tolist()
    errors = [[e for e in row if e == e] for row in table]  # drop the NaNs after each stop
    return w.to(v.dtype), h.to(v.dtype), errors


def nmf(
    v: torch.Tensor, k: int, n_iter: int = 200, tol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Factorize ``V >= 0`` ``(N, M)`` as ``W H``, ``W`` ``(N, k)``, ``H`` ``(k, M)``, both ``>= 0``.

    See the module docstring for the algorithm; :func:`nmf_batched` for the arguments.

    Returns:
        ``W``, ``H`` and the relative errors ``||V - W H||_F / ||V||_F`` of the start and of
        each update (non-increasing).
    """
    if v.dim() != 2:
        raise InvalidParameterError(f"nmf needs an (N, M) matrix, got {tuple(v.shape)}")
    w, h, errors = nmf_batched(v[None], k, n_iter, tol)
    return w[0], h[0], errors[0]
