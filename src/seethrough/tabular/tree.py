"""Exact interventional Tree SHAP for scikit-learn's trees, and shap's for other tree models.

Lundberg et al., "From local explanations to global understanding with explainable AI for
trees", Nature Machine Intelligence 2020 (interventional Tree SHAP). The game is the one of
:class:`~seethrough.tabular.sampling.BackgroundGame`: ``v(S) = mean_b f(x_S, b_rest)``, the
model's output with the features outside ``S`` taken from each background row ``b``. A tree
ensemble's output is a sum of leaf values, so ``v`` is a sum of leaf indicator games, each with
closed-form Shapley values. For a row ``x``, one background row ``b`` and one leaf, take every
feature ``j`` that the leaf's path tests:

- ``x`` and ``b`` both satisfy the path's tests on ``j``: ``j`` does not matter;
- only ``x`` does: ``j`` must come from ``x`` (``j`` in ``A``);
- only ``b`` does: ``j`` must come from ``b`` (``j`` in ``B``);
- neither does: no coalition reaches the leaf.

The leaf is reached by exactly the coalitions ``S`` with ``A ⊆ S`` and ``S ∩ B = ∅``, a game
whose Shapley values are, with ``a = |A|`` and ``m = |B|``::

    phi_i = (a - 1)! m! / (a + m)!      for i in A
    phi_i = -a! (m - 1)! / (a + m)!     for i in B

times the leaf's value (scaled: a forest's mean over trees, gradient boosting's learning rate),
averaged over the background rows and summed over the leaves. No sampling, no approximation:
the values are the exact Shapley values of the game, computed in float64 with the rows compared
with the thresholds exactly as scikit-learn does (its trees read rows as float32 and go left
when ``x <= threshold``; histogram gradient boosting reads float64). The work is
``N x L x D`` comparisons and sums per row (background rows, leaves, distinct features on a
path), vectorised with numpy; the leaves and the background rows' tests are kept between rows
while the model's trees and the background stay the same.

Read exactly: ``DecisionTree*``, ``ExtraTree*``, ``RandomForest*``, ``ExtraTrees*`` (regression
and ``predict_proba``), ``GradientBoosting*`` and ``HistGradientBoosting*`` (``predict`` of a
squared-error regressor and a classifier's ``decision_function``, the sum of the trees; a
classifier's ``predict_proba`` passes that sum through a link function and is refused). Before
the values are returned, the trees as read are checked against the model's own output on the
row and on every background row.

Other tree models (XGBoost, LightGBM, ...) go through shap's compiled ``TreeExplainer`` (extra
``tabular``), whose values are checked by efficiency against the model's output to a looser
tolerance: shap is not exact on scikit-learn's trees. It compares in float32, so a threshold
that scikit-learn puts (in float64) halfway between two adjacent float32 values can round onto the
upper one, and rows at that value then go left in shap but right in scikit-learn (a 10-tree forest
on diabetes: values off by 0.3 of 24, efficiency by 0.13); elsewhere it differs by about 1e-6.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..attribution.estimators import Attribution
from ..errors import MethodNotApplicableError, MissingDependencyError
from .model import ScoreFunction
from .table import Table

__all__ = ["tree_shap", "TreeLeaves", "BackgroundTests", "read_trees", "shapley_values"]

_SHAP_TOLERANCE = 1e-2  # shap compares in float32: a forest of 10 trees is off by up to 0.15
_EXACT_TOLERANCE = 1e-7  # our reading against the model's own output (float64 sums)
_OUTPUTS_HINT = (
    "explain the output the trees sum to (output='predict_proba' for a forest classifier, "
    "'decision_function' for a boosted classifier, 'predict' for a regressor), or use kernelshap"
)
_CHUNK = 1 << 22  # most (background row, leaf, test) triples computed at once
_HELD = 1 << 25  # most (background row, leaf, test) triples kept between rows


@dataclass(frozen=True)
class TreeLeaves:
    """Every leaf of a tree ensemble, with its path's tests merged per feature.

    Leaf ``l`` is reached by a row ``r`` iff ``lower[l, k] < r[feature[l, k]] <= upper[l, k]``
    for every ``k`` (unused slots are ``(-inf, inf]``); the ensemble's output is a constant
    plus the sum of ``value`` over the leaves reached.

    Attributes:
        feature: ``(L, D)`` the features tested on each leaf's path (padded with 0).
        lower: ``(L, D)`` the largest threshold the path goes right of, per feature.
        upper: ``(L, D)`` the smallest threshold the path goes left of (``x <= t``).
        value: ``(L, T)`` each leaf's contribution to each output, scaled.
        float32: whether the model compares rows cast to float32 (scikit-learn's trees).
        boosted: whether the trees sum to a raw score behind a link (gradient boosting).
    """

    feature: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    value: np.ndarray
    float32: bool
    boosted: bool

    def cast(self, rows: np.ndarray) -> np.ndarray:
        """Rows as the trees compare them, in float64."""
        rows = np.asarray(rows, dtype=np.float64)
        return rows.astype(np.float32).astype(np.float64) if self.float32 else rows


@dataclass(frozen=True)
class _Tree:
    """One tree in a common form: children ``-1`` at leaves, each node's values ``(n, T)``."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray


def _sklearn_tree(estimator: Any, scale: float, classifier: bool) -> _Tree:
    tree = estimator.tree_
    if tree.n_outputs != 1 and classifier:
        raise MethodNotApplicableError(
            "tree_shap explains one output per classifier: a multi-output classifier's "
            "predict_proba is a list of tables; use kernelshap"
        )
    value = np.asarray(tree.value, dtype=np.float64)  # (nodes, outputs, classes)
    if classifier:  # predict_proba: each node's class weights normalised, as scikit-learn does
        value = value[:, 0, :]
        total = value.sum(1, keepdims=True)
        value = value / np.where(total == 0, 1.0, total)
    else:
        value = value[:, :, 0]
    return _Tree(
        tree.children_left.astype(np.int64),
        tree.children_right.astype(np.int64),
        tree.feature.astype(np.int64),
        tree.threshold.astype(np.float64),
        value * scale,
    )


def _hist_tree(predictor: Any) -> _Tree:
    nodes = predictor.nodes
    if np.any(nodes["is_categorical"]):
        raise MethodNotApplicableError(
            "tree_shap reads numeric splits: this HistGradientBoosting model splits on "
            "categorical features; use kernelshap"
        )
    leaf = nodes["is_leaf"].astype(bool)
    return _Tree(
        np.where(leaf, -1, nodes["left"].astype(np.int64)),
        np.where(leaf, -1, nodes["right"].astype(np.int64)),
        nodes["feature_idx"].astype(np.int64),
        nodes["num_threshold"].astype(np.float64),
        nodes["value"].astype(np.float64)[:, None],
    )


def _stagewise(trees: list[list[_Tree]], outputs: int) -> list[_Tree]:
    """Boosting's trees, each stage one tree per output, as trees of ``outputs`` values."""
    out = []
    for stage in trees:
        for k, tree in enumerate(stage):
            value = np.zeros((len(tree.value), outputs))
            value[:, k] = tree.value[:, 0]
            out.append(_Tree(tree.left, tree.right, tree.feature, tree.threshold, value))
    return out


def read_trees(model: Any) -> TreeLeaves | None:
    """The leaves of a scikit-learn tree model, or ``None`` for a model not read here.

    Raises:
        MethodNotApplicableError: a scikit-learn tree model with what is not read exactly
            (categorical splits, a multi-output classifier).
    """
    try:
        from sklearn import ensemble, tree
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return None
    if not hasattr(model, "n_features_in_"):
        return None  # not fitted, or not an estimator: shap's path says so
    n = int(model.n_features_in_)
    classifier = hasattr(model, "classes_")
    if isinstance(model, tree.BaseDecisionTree):
        return _leaves([_sklearn_tree(model, 1.0, classifier)], n, True, False)
    forests = (
        ensemble.RandomForestRegressor,
        ensemble.RandomForestClassifier,
        ensemble.ExtraTreesRegressor,
        ensemble.ExtraTreesClassifier,
    )
    if isinstance(model, forests):
        scale = 1.0 / len(model.estimators_)
        trees = [_sklearn_tree(e, scale, classifier) for e in model.estimators_]
        return _leaves(trees, n, True, False)
    if isinstance(model, (ensemble.GradientBoostingRegressor, ensemble.GradientBoostingClassifier)):
        rate = float(model.learning_rate)
        stages = [[_sklearn_tree(e, rate, False) for e in stage] for stage in model.estimators_]
        return _leaves(_stagewise(stages, model.estimators_.shape[1]), n, True, True)
    hist = (ensemble.HistGradientBoostingRegressor, ensemble.HistGradientBoostingClassifier)
    if isinstance(model, hist):
        stages = [[_hist_tree(p) for p in stage] for stage in model._predictors]
        outputs = len(model._predictors[0]) if model._predictors else 1
        return _leaves(_stagewise(stages, outputs), n, False, True)
    return None


def _leaves(trees: list[_Tree], n_features: int, float32: bool, boosted: bool) -> TreeLeaves:
    """Every leaf's path, walked up to the root for all leaves of all trees at once."""
    offsets = np.cumsum([0] + [len(t.left) for t in trees])
    left = np.concatenate(
        [np.where(t.left >= 0, t.left + o, -1) for t, o in zip(trees, offsets[:-1], strict=True)]
    )
    right = np.concatenate(
        [np.where(t.right >= 0, t.right + o, -1) for t, o in zip(trees, offsets[:-1], strict=True)]
    )
    feature = np.concatenate([t.feature for t in trees])
    threshold = np.concatenate([t.threshold for t in trees])
    value = np.concatenate([t.value for t in trees])
    parent = np.full(len(left), -1)
    went_left = np.zeros(len(left), dtype=bool)
    inner = np.flatnonzero(left >= 0)
    parent[left[inner]] = inner
    parent[right[inner]] = inner
    went_left[left[inner]] = True
    leaves = np.flatnonzero(left < 0)

    # one test per (leaf, ancestor): its feature, threshold and side
    tests: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    node, index = leaves, np.arange(len(leaves))
    while len(node):
        up = parent[node]
        has = up >= 0
        node, index, up = node[has], index[has], up[has]
        tests.append((index, feature[up], threshold[up], went_left[node]))
        node = up
    if tests:
        leaf_of, feat, thr, goes_left = (np.concatenate(c) for c in zip(*tests, strict=True))
    else:
        leaf_of = feat = np.zeros(0, dtype=np.int64)
        thr, goes_left = np.zeros(0), np.zeros(0, dtype=bool)

    # merge a path's tests on one feature into one interval (lower, upper]
    key, slot = np.unique(leaf_of * n_features + feat, return_inverse=True)
    lower_u = np.full(len(key), -np.inf)
    upper_u = np.full(len(key), np.inf)
    np.maximum.at(lower_u, slot[~goes_left], thr[~goes_left])
    np.minimum.at(upper_u, slot[goes_left], thr[goes_left])
    leaf_u, feat_u = key // n_features, key % n_features
    counts = np.bincount(leaf_u, minlength=len(leaves))
    depth = max(1, int(counts.max(initial=0)))
    column = np.arange(len(key)) - (np.cumsum(counts) - counts)[leaf_u]  # keys sorted by leaf
    shape = (len(leaves), depth)
    out_feature = np.zeros(shape, dtype=np.int64)
    out_lower = np.full(shape, -np.inf)
    out_upper = np.full(shape, np.inf)
    out_feature[leaf_u, column] = feat_u
    out_lower[leaf_u, column] = lower_u
    out_upper[leaf_u, column] = upper_u
    return TreeLeaves(out_feature, out_lower, out_upper, value[leaves], float32, boosted)


def _weights(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The leaf game's Shapley weights by ``(a, m)``: ``(a-1)! m! / (a+m)!`` for a feature in
    ``A`` and ``-a! (m-1)! / (a+m)!`` for one in ``B`` (0 where the set is empty)."""
    w_a = np.zeros((depth + 1, depth + 1))
    w_b = np.zeros((depth + 1, depth + 1))
    f = math.factorial
    for a in range(depth + 1):
        for m in range(depth + 1):
            if a:
                w_a[a, m] = f(a - 1) * f(m) / f(a + m)
            if m:
                w_b[a, m] = -f(a) * f(m - 1) / f(a + m)
    return w_a, w_b


@dataclass(frozen=True)
class BackgroundTests:
    """The background rows against every leaf's tests, which do not depend on the row explained.

    Attributes:
        rows: ``(N, F)`` the rows as the trees compare them.
        passes: ``(N, L, D)`` whether each row passes each test of each leaf (``None``: too
            large to hold; computed again per row, a slice of leaves at a time).
        at: ``(N, T)`` the trees' sums at each row (without the model's constant).
    """

    rows: np.ndarray
    passes: np.ndarray | None
    at: np.ndarray

    @classmethod
    def of(cls, leaves: TreeLeaves, background: np.ndarray) -> BackgroundTests:
        rows = leaves.cast(background)
        keep = rows.shape[0] * leaves.feature.size <= _HELD
        passes = []
        at = np.zeros((len(rows), leaves.value.shape[1]))
        for part in _slices(leaves, len(rows)):
            inside = _passes(leaves, part, rows)
            at += inside.all(-1) @ leaves.value[part]
            if keep:
                passes.append(inside)
        return cls(rows, np.concatenate(passes, 1) if keep else None, at)


def _slices(leaves: TreeLeaves, n_rows: int) -> list[slice]:
    n_leaves, depth = leaves.feature.shape
    step = max(1, _CHUNK // max(1, n_rows * depth))
    return [slice(i, i + step) for i in range(0, n_leaves, step)]


def _passes(leaves: TreeLeaves, part: slice, rows: np.ndarray) -> np.ndarray:
    """``(..., l, D)``: whether ``rows`` (``(F,)`` or ``(N, F)``) pass the leaves' tests."""
    values = rows[..., leaves.feature[part]]
    return (values > leaves.lower[part]) & (values <= leaves.upper[part])


def shapley_values(
    leaves: TreeLeaves, x: np.ndarray, background: BackgroundTests
) -> tuple[np.ndarray, np.ndarray]:
    """Exact interventional Shapley values of the trees' sum at ``x`` against a background.

    For one leaf and one background row: the tests ``x`` fails must all be passed by the
    background row (else no coalition reaches the leaf), and they are ``B`` (``m = |B|`` is
    the same for every background row); ``A`` is the tests ``x`` passes and the background
    row fails.

    Args:
        leaves: the ensemble's leaves (:func:`read_trees`).
        x: ``(F,)`` the row explained, as the trees compare it (:meth:`TreeLeaves.cast`).
        background: the background rows' tests (:meth:`BackgroundTests.of`).

    Returns:
        ``values`` ``(T, F)`` and the trees' sum at ``x`` ``(T,)`` (without the constant).
    """
    n_leaves, depth = leaves.feature.shape
    n_rows = len(background.rows)
    w_a, w_b = _weights(depth)
    coefficient = np.zeros((n_leaves, depth))
    at_x = np.zeros(leaves.value.shape[1])
    for part in _slices(leaves, n_rows):
        in_x = _passes(leaves, part, x)  # (l, D)
        if background.passes is None:
            in_b = _passes(leaves, part, background.rows)  # (N, l, D)
        else:
            in_b = background.passes[:, part]
        live = (in_b | in_x).all(-1)  # (N, l): the row passes every test x fails
        a = (in_x & ~in_b).sum(-1, dtype=np.intp)  # (N, l)
        m = (~in_x).sum(-1, dtype=np.intp)  # (l,)
        pair = a * (depth + 1) + m
        weight_a = np.take(w_a, pair) * live
        weight_b = (np.take(w_b, pair) * live).sum(0)  # (l,)
        # a test x passes: A's weight for the rows failing it; a test x fails: B's weight
        fails = weight_a.sum(0)[:, None] - np.einsum("nld,nl->ld", in_b, weight_a)
        coefficient[part] = np.where(in_x, fails, weight_b[:, None]) / n_rows
        at_x += in_x.all(-1) @ leaves.value[part]
    contribution = coefficient[:, :, None] * leaves.value[:, None, :]  # (L, D, T)
    index = leaves.feature.ravel()
    flat = contribution.reshape(-1, leaves.value.shape[1])
    n_features = background.rows.shape[1]
    values = np.stack([np.bincount(index, weights=w, minlength=n_features) for w in flat.T])
    return values, at_x


@dataclass
class _Read:
    """A model's leaves, kept while its fitted trees are the same objects, with the tests of
    the last background it was explained against (per output explained)."""

    fitted: tuple[Any, int]
    leaves: TreeLeaves
    background: dict[tuple[bytes, tuple[int, ...], str], tuple[BackgroundTests, np.ndarray]]


_READ: weakref.WeakKeyDictionary[Any, _Read] = weakref.WeakKeyDictionary()


def _fitted(model: Any) -> tuple[Any, int]:
    """What changes when a model is fitted again (its trees: new objects, or more of them)."""
    trees = getattr(model, "tree_", None)
    if trees is None:
        trees = getattr(model, "estimators_", None)
    if trees is None:
        trees = getattr(model, "_predictors", None)
    return trees, len(trees) if isinstance(trees, (list, np.ndarray)) else 1


def _read(model: Any) -> _Read | None:
    try:
        held = _READ.get(model)
    except TypeError:  # not weakly referable
        held = None
    fitted = _fitted(model)
    if held is not None and held.fitted[0] is fitted[0] and held.fitted[1] == fitted[1]:
        return held
    leaves = read_trees(model)
    if leaves is None:
        return None
    held = _Read(fitted, leaves, {})
    try:
        _READ[model] = held
    except TypeError:
        pass
    return held


def _exact(
    read: _Read,
    model: Any,
    score: ScoreFunction,
    table: Table,
    row: np.ndarray,
    background: np.ndarray,
) -> Attribution:
    leaves = read.leaves
    name = type(model).__name__
    if leaves.boosted and score.output == "predict_proba":
        raise MethodNotApplicableError(
            f"tree_shap explains {name}'s trees, whose sum is the raw score: predict_proba "
            "passes it through a link function, which no sum over trees gives. Use "
            "output='decision_function' (the log-odds), or kernelshap for probabilities"
        )
    key = (hashlib.sha1(background.tobytes()).digest(), background.shape, score.output)
    if key not in read.background:
        want_background = score(table.to_model(background))
        if want_background.shape[1] != leaves.value.shape[1]:
            raise MethodNotApplicableError(
                f"tree_shap: {name}'s trees give {leaves.value.shape[1]} outputs, its "
                f"{score.output} gives {want_background.shape[1]}: {_OUTPUTS_HINT}"
            )
        read.background.clear()  # one background at a time
        read.background[key] = (BackgroundTests.of(leaves, background), want_background)
    tests, want_background = read.background[key]
    want = score(table.to_model(row[None]))[0]
    values, at_x = shapley_values(leaves, leaves.cast(row), tests)
    # the model is a constant plus the trees: checked on the row and every background row
    constant = (want_background - tests.at).mean(0)
    gaps = np.abs(np.vstack([want_background - tests.at, want - at_x]) - constant)
    scale = max(1.0, float(np.abs(want_background).max()), float(np.abs(want).max()))
    if gaps.max() > _EXACT_TOLERANCE * scale:
        raise MethodNotApplicableError(
            f"tree_shap explains the sum of {name}'s trees, which is not its {score.output} "
            f"(off by {gaps.max():.3g}): {_OUTPUTS_HINT}"
        )
    base = want_background.mean(0)
    stats = {
        "efficiency_gap": float(np.abs(values.sum(1) - (want - base)).max()),
        "leaves": float(len(leaves.value)),
    }
    return Attribution(values, base, want, 0, stats)


def _explainer(model: Any, background: np.ndarray, model_output: str) -> Any:
    try:
        import shap
    except ImportError:
        raise MissingDependencyError(
            f"tree_shap reads scikit-learn's trees itself; for a {type(model).__name__} it "
            "needs shap: pip install 'seethrough[tabular]'"
        ) from None
    try:
        return shap.TreeExplainer(
            model,
            data=background,
            feature_perturbation="interventional",
            model_output=model_output,
        )
    except Exception as exc:  # shap raises bare Exceptions for unsupported models
        raise MethodNotApplicableError(
            f"tree_shap explains tree ensembles (scikit-learn forests and gradient boosting, "
            f"XGBoost, LightGBM): {type(model).__name__} is not one ({str(exc).splitlines()[0]})"
        ) from None


def _through_shap(
    model: Any, score: ScoreFunction, table: Table, row: np.ndarray, background: np.ndarray
) -> Attribution:
    """shap's TreeExplainer, accepted when efficiency holds to :data:`_SHAP_TOLERANCE`."""
    x = row.astype(np.float32).astype(np.float64)[None]  # as the trees see it
    bg = background.astype(np.float32).astype(np.float64)
    want = score(table.to_model(row[None]))[0]
    base_want = score(table.to_model(background)).mean(0)
    explainer = _explainer(model, bg, "raw")
    values = np.asarray(explainer.shap_values(x, check_additivity=False), dtype=np.float64)
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    values = values.reshape(1, len(table.columns), -1)[0].T  # (T, F)
    if values.shape[0] != len(want) and values.shape[0] == 1 and len(want) == 2:
        values = np.stack([-values[0], values[0]])  # one score for two classes
    if values.shape[0] == len(want) and len(base) == len(want):
        gap = np.abs(base + values.sum(1) - want).max()
        base_gap = np.abs(base - base_want).max()
        if gap < _SHAP_TOLERANCE * max(1.0, float(np.abs(want).max())) and base_gap < 1e-4:
            stats = {"efficiency_gap": float(np.abs(values.sum(1) - (want - base)).max())}
            return Attribution(values, base, want, 0, stats)
    raise MethodNotApplicableError(
        f"tree_shap computes the trees' raw output, which is not the {score.output} being "
        "explained: choose output='decision_function' to match, or use kernelshap"
    )


def tree_shap(
    model: Any, score: ScoreFunction, table: Table, row: np.ndarray, background: np.ndarray
) -> Attribution:
    """Interventional Tree SHAP values of ``row`` for every output of ``score``.

    Exact (the Shapley values of the background game, to float64 rounding) for scikit-learn's
    trees, forests and gradient boosting, read here; shap's TreeExplainer, checked by
    efficiency, for other tree models. See the module's docstring for the algorithm.

    Raises:
        MethodNotApplicableError: not a tree model, categorical columns or groups (the trees
            see single numeric columns), or an output the trees do not sum to (a boosted
            classifier's ``predict_proba``; checked against ``score``).
        MissingDependencyError: shap is not installed, for a tree model not read here.
    """
    if not table.numeric or any(len(cols) > 1 for cols in table.groups):
        raise MethodNotApplicableError(
            "tree_shap explains single numeric columns: use kernelshap for categorical "
            "columns or groups"
        )
    read = _read(model)
    if read is None:
        module = type(model).__module__.split(".")[0]
        if module in ("sklearn", "seethrough", "torch") or not hasattr(model, "predict"):
            raise MethodNotApplicableError(
                f"tree_shap explains tree models (scikit-learn's trees, forests and gradient "
                f"boosting; XGBoost, LightGBM through shap): {type(model).__name__} is not "
                "one; use kernelshap or exact_shapley"
            )
        return _through_shap(model, score, table, row, background)
    return _exact(read, model, score, table, row, background)
