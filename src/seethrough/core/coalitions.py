"""Coalitions of features and the linear fits on them: what LIME and Kernel SHAP compute, for
superpixels of an image, columns of a table and words of a text alike.

A coalition ``z`` in {0, 1}^F keeps feature ``i`` where ``z_i = 1``; whoever owns the features
says what hiding one means (a fill colour for a superpixel, a background row's value for a
column, dropping a word). Everything here works on the coalitions and the model's scores ``y``
``(M, T)`` for ``T`` targets, nothing else.
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = [
    "complements",
    "kernel_shap_coalitions",
    "kernel_shap_fit",
    "lime_coalitions",
    "weighted_ridge",
    "shapley_from_values",
    "all_coalitions",
    "permutation_coalitions",
    "shapley_from_permutations",
]


def complements(z: torch.Tensor) -> torch.Tensor:
    """``z`` followed by its complements ``1 - z``: antithetic pairs of coalitions."""
    return torch.cat([z, 1 - z])


def all_coalitions(n_features: int) -> torch.Tensor:
    """Every coalition of ``n_features`` features, ``(2^F, F)`` float64, in binary order (row
    ``k`` keeps feature ``i`` where bit ``F - 1 - i`` of ``k`` is set)."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n_features)), dtype=torch.float64)


def kernel_shap_coalitions(
    n_features: int, n_samples: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalitions ``(M, F)`` and Shapley-kernel regression weights ``(M,)`` for Kernel SHAP.

    Rows 0 and 1 keep all and no features (weight 0: the constraint uses them). Every other
    coalition ``z`` of size ``s`` has the kernel weight ``pi(z) = (F - 1) / (C(F, s) s (F - s))``,
    so the sizes ``s`` and ``F - s`` together hold a share of the total weight proportional to
    ``1 / (s (F - s))``: most of it on the smallest and largest coalitions. Within the budget
    of ``n_samples - 2`` coalitions:

    - when every coalition fits they are all enumerated (the result is exact);
    - otherwise whole sizes are enumerated, from the heaviest pair of sizes (1 and F - 1) on,
      as long as the budget that their share of the remaining weight buys covers all their
      coalitions (Lundberg & Lee's reference implementation does the same); each keeps its
      exact kernel weight;
    - the rest of the budget samples the sizes left, each size drawn in proportion to its
      share of the remaining weight and a coalition of that size uniformly, with its
      complement (antithetic pairs); a coalition drawn again is evaluated once with its weight
      counted twice, and drawing goes on until the budget holds that many distinct coalitions
      (or four times as many draws were made). Each draw carries an equal share of the weight
      left, so the weighted design estimates the exact one without bias from the drawn sizes.
    """
    f, budget = n_features, n_samples - 2
    ends = torch.stack([torch.ones(f), torch.zeros(f)]).double()
    if f < 2:
        return ends, torch.zeros(2, dtype=torch.float64)
    if 2**f - 2 <= budget:
        z = all_coalitions(f)
        z = z[(z.sum(1) > 0) & (z.sum(1) < f)]
        size = z.sum(1)
        binom = torch.tensor([math.comb(f, int(k)) for k in size], dtype=torch.float64)
        weights = (f - 1) / (binom * size * (f - size))
        return torch.cat([ends, z]), torch.cat([torch.zeros(2, dtype=torch.float64), weights])
    mass = {s: (f - 1) / (s * (f - s)) for s in range(1, f)}  # kernel weight of all of size s
    rows: list[torch.Tensor] = []
    weights_: list[torch.Tensor] = []
    left, remaining = budget, sum(mass.values())
    low = 1
    while low <= f - low:
        sizes = (low,) if low == f - low else (low, f - low)
        count = sum(math.comb(f, s) for s in sizes)
        share = sum(mass[s] for s in sizes)
        if count > left or left * share / remaining < count - 1e-9:
            break
        for s in sizes:
            z = torch.zeros(math.comb(f, s), f, dtype=torch.float64)
            for i, members in enumerate(itertools.combinations(range(f), s)):
                z[i, list(members)] = 1.0
            rows.append(z)
            weights_.append(torch.full((len(z),), mass[s] / math.comb(f, s), dtype=torch.float64))
        left -= count
        remaining -= share
        low += 1
    if left >= 2 and low <= f - low:
        sampled, counts = _draw_pairs(f, low, mass, left, generator)
        rows.append(sampled)
        weights_.append(counts * (remaining / counts.sum()))
    z = torch.cat(rows)
    weights = torch.cat(weights_)
    return torch.cat([ends, z]), torch.cat([torch.zeros(2, dtype=torch.float64), weights])


def _draw_pairs(
    f: int, low: int, mass: dict[int, float], budget: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct coalitions of sizes ``low .. F - low`` drawn in complementary pairs (sizes by
    ``mass``), at most ``budget`` of them, and how many times each was drawn."""
    sizes = torch.arange(low, f - low + 1, dtype=torch.float64)
    p = torch.tensor([mass[int(s)] for s in sizes], dtype=torch.float64)
    seen: dict[bytes, int] = {}
    found: list[torch.Tensor] = []
    counts: list[float] = []
    draws, max_draws = 0, 4 * budget
    while len(found) < budget and draws < max_draws:
        n = max(1, (budget - len(found) + 1) // 2)
        k = sizes[torch.multinomial(p / p.sum(), n, replacement=True, generator=generator)]
        ranks = torch.rand(n, f, generator=generator, dtype=torch.float64).argsort(1).argsort(1)
        first = (ranks < k[:, None]).double()
        pairs = torch.stack([first, 1 - first], 1).reshape(-1, f)  # z, 1 - z, next z, ...
        for z in pairs:
            draws += 1
            key = z.numpy().tobytes()
            if key in seen:
                counts[seen[key]] += 1.0
            else:
                seen[key] = len(found)
                found.append(z)
                counts.append(1.0)
                if len(found) == budget:
                    break
    return torch.stack(found), torch.tensor(counts, dtype=torch.float64)


def kernel_shap_fit(
    z: torch.Tensor, weights: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Kernel SHAP's weighted least squares with the efficiency constraint eliminated.

    ``z``, ``weights`` as :func:`kernel_shap_coalitions` returns them (rows 0 and 1: all kept,
    none kept), ``y`` the scores ``(M, T)``. Solves, for each target,
    ``min_phi sum_z pi(z) (f(z) - f(0) - phi.z)^2`` subject to ``sum_i phi_i = f(1) - f(0)``
    (the last feature's value is eliminated through the constraint, which then holds exactly).
    Returns ``phi`` ``(T, F)`` and the stats ``base_value`` (``f(0)``), ``full_value``
    (``f(1)``) and ``efficiency_gap`` of the first target.
    """
    full, empty = y[0], y[1]
    total = full - empty
    f = z.shape[1]
    if f == 1:
        coef = total[:, None]
    else:
        zs, ys, w = z[2:], y[2:] - empty, weights[2:].sqrt()[:, None]
        a = (zs[:, :-1] - zs[:, -1:]) * w
        b = (ys - zs[:, -1:] * total) * w
        head = torch.linalg.lstsq(a, b, driver="gelsd").solution  # (F-1, T)
        coef = torch.cat([head, total[None] - head.sum(0, keepdim=True)]).T
    gap = (coef.sum(1) - total).abs().max()
    stats = {
        "base_value": float(empty[0]),
        "full_value": float(full[0]),
        "efficiency_gap": float(gap),
    }
    return coef, stats


def lime_coalitions(
    n_features: int,
    n_samples: int,
    generator: torch.Generator,
    *,
    paired: bool = True,
    kernel_width: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LIME's coalitions and weights: each feature kept with probability 1/2, the first
    coalition full, in complementary pairs unless ``paired=False``; weights
    ``sqrt(exp(-d^2 / width^2))`` with ``d`` the cosine distance to the all-ones coalition."""
    draws = (n_samples + 1) // 2 if paired else n_samples
    z = (torch.rand(draws, n_features, generator=generator, dtype=torch.float64) < 0.5).double()
    z[0] = 1
    if paired:
        z = complements(z)[:n_samples]
    kept = z.sum(1)
    cosine = torch.where(kept > 0, kept.sqrt() / n_features**0.5, torch.zeros_like(kept))
    distance = 1 - cosine
    return z, torch.exp(-(distance**2) / kernel_width**2).sqrt()


def weighted_ridge(
    z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted ridge regression with an unpenalised intercept, for every column of ``y``.

    Minimises ``sum_i w_i (y_i - b - z_i beta)^2 + alpha |beta|^2`` (what scikit-learn's
    ``Ridge(alpha).fit(z, y, sample_weight=w)`` solves; with ``alpha = 0`` and a
    rank-deficient design, the minimum-norm solution). Returns ``(coef (T, F), intercept (T,),
    r2 (T,))`` with ``r2`` the weighted coefficient of determination on the samples.
    """
    wn = w / w.sum()
    zm, ym = wn @ z, wn @ y
    zc, yc = z - zm, y - ym
    gram = zc.T @ (w[:, None] * zc) + alpha * torch.eye(z.shape[1], dtype=z.dtype)
    # least squares on the normal equations: also defined when alpha = 0 and they are singular
    beta = torch.linalg.lstsq(gram, zc.T @ (w[:, None] * yc), driver="gelsd").solution  # (F, T)
    ss_res = (wn[:, None] * (yc - zc @ beta) ** 2).sum(0)
    ss_tot = (wn[:, None] * yc**2).sum(0)
    r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300), torch.zeros_like(ss_tot))
    return beta.T, ym - zm @ beta, r2


def shapley_from_values(values: torch.Tensor, n_features: int) -> torch.Tensor:
    """Exact Shapley values from the value of every coalition.

    ``values`` ``(2^F, T)`` in the order of :func:`all_coalitions`. For each feature ``i``::

        phi_i = sum_{S not containing i} |S|! (F - |S| - 1)! / F!  (v(S + i) - v(S))

    Returns ``(T, F)``.
    """
    f = n_features
    z = all_coalitions(f)
    size = z.sum(1)
    weight = torch.tensor(  # used for coalitions without the feature: |S| < F
        [
            math.factorial(int(s)) * math.factorial(f - int(s) - 1) / math.factorial(f)
            if s < f
            else 0.0
            for s in size
        ],
        dtype=torch.float64,
    )
    phi = torch.zeros(values.shape[1], f, dtype=torch.float64)
    index = torch.arange(len(z))
    for i in range(f):
        bit = 1 << (f - 1 - i)
        without = (index & bit) == 0
        gain = values[index[without] | bit] - values[index[without]]  # (2^(F-1), T)
        phi[:, i] = (weight[without][:, None] * gain).sum(0)
    return phi


def permutation_coalitions(
    n_features: int, n_permutations: int, generator: torch.Generator
) -> torch.Tensor:
    """The coalitions that Shapley value sampling evaluates, ``(1 + P F, F)`` float64.

    Row 0 is the empty coalition; then, for each of ``P = n_permutations`` random orders of the
    features (``torch.randperm`` from ``generator``, one per permutation, as Captum draws them
    from the global generator), the ``F`` coalitions that add the features one at a time in that
    order: row ``1 + p F + k`` keeps the first ``k + 1`` features of permutation ``p`` (the
    last row of every permutation keeps them all).
    """
    f = n_features
    perms = torch.stack([torch.randperm(f, generator=generator) for _ in range(n_permutations)])
    rank = perms.argsort(1)  # (P, F): the step at which each feature is added
    steps = torch.arange(f)
    z = (rank[:, None, :] <= steps[None, :, None]).double()  # (P, steps, F)
    return torch.cat([torch.zeros(1, f, dtype=torch.float64), z.reshape(-1, f)])


def shapley_from_permutations(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Shapley value sampling estimates from the coalitions of :func:`permutation_coalitions`
    and their scores ``y`` ``(1 + P F, T)``; returns ``(T, F)``.

    Castro, Gomez & Tejada (2009); Strumbelj & Kononenko (2010). For permutations ``pi_1 ..
    pi_P`` and ``Pre_p(i)`` the features before ``i`` in ``pi_p``::

        phi_i = 1/P sum_p [v(Pre_p(i) + i) - v(Pre_p(i))]

    Each permutation's marginal contributions telescope to ``v(all) - v(empty)``, so the
    estimate is efficient for any ``P``. The permutations are read back from ``z`` (feature
    ``i`` is added at the step ``F - (rows of its permutation that keep it)``).
    """
    f = z.shape[1]
    p = (z.shape[0] - 1) // f
    block = z[1:].reshape(p, f, f)
    order = (f - block.sum(1)).long().argsort(1)  # (P, F): the feature added at each step
    steps = y[1:].reshape(p, f, -1)  # (P, F, T)
    before = torch.cat([y[:1].expand(p, 1, -1), steps[:, :-1]], 1)
    gains = steps - before  # gains[p, k] belongs to feature order[p, k]
    phi = torch.zeros(y.shape[1], f, dtype=y.dtype)
    phi.index_add_(1, order.reshape(-1), gains.reshape(p * f, -1).T)
    return phi / p
