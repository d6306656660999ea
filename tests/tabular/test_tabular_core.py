"""Rows of a table: Shapley values against their definition, LIME against a linear model, the
table's checks, targets, seeds, progress and save/load."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from seethrough.attribution import FeatureExplanation, FeatureExplanations
from seethrough.errors import (
    CancelledError,
    InvalidInputError,
    InvalidParameterError,
    InvalidTargetError,
    UnknownClassError,
)
from seethrough.tabular import explain_tabular

RNG = np.random.default_rng(0)
BACKGROUND = RNG.normal(size=(12, 7))
ROW = RNG.normal(size=7) * 2


def interacting(rows: np.ndarray) -> np.ndarray:
    """Two outputs with products and maxima of up to four features: no feature's effect is
    additive, and interactions of every order up to four."""
    x = np.asarray(rows, dtype=np.float64)
    a = x[:, 0] * x[:, 1] * x[:, 2] + np.max(x[:, 3:7], axis=1) + np.sin(x[:, 4]) * x[:, 5]
    b = x[:, 0] - 2 * x[:, 3] * x[:, 6] + x[:, 1] ** 2
    return np.stack([a, b], 1)


def shapley_by_orders(f, row: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Shapley values from their definition: the mean marginal contribution over all n! orders
    of the game v(S) = mean over background rows of f(row on S, background elsewhere)."""
    n = len(row)

    def v(kept: frozenset) -> np.ndarray:
        rows = background.copy()
        for j in kept:
            rows[:, j] = row[j]
        return f(rows).mean(0)

    cache: dict[frozenset, np.ndarray] = {}
    phi = np.zeros((2, n))
    for order in itertools.permutations(range(n)):
        kept: frozenset = frozenset()
        before = cache.setdefault(kept, v(kept))
        for j in order:
            kept = kept | {j}
            after = cache.setdefault(kept, v(kept))
            phi[:, j] += after - before
            before = after
    return phi / math.factorial(n)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return shapley_by_orders(interacting, ROW, BACKGROUND)


def test_exact_shapley_equals_the_definition_and_is_efficient(reference):
    e = explain_tabular(interacting, BACKGROUND, ROW, "exact_shapley", target=1)
    np.testing.assert_allclose(e.all_values, reference, rtol=1e-10, atol=1e-12)
    assert e.target == 1 and e.values.tolist() == e.all_values[1].tolist()
    full = interacting(ROW[None])[0, 1]
    assert e.prediction == pytest.approx(full)
    assert e.base_value == pytest.approx(interacting(BACKGROUND).mean(0)[1])
    assert e.base_value + e.values.sum() == pytest.approx(e.prediction, abs=1e-10)
    assert e.evaluations == 2**7 * len(BACKGROUND)


def test_kernel_shap_is_exact_when_every_coalition_fits_and_converges_when_sampled(reference):
    exact = explain_tabular(interacting, BACKGROUND, ROW, "kernelshap", n_samples=200)
    np.testing.assert_allclose(exact.all_values, reference, rtol=1e-8, atol=1e-10)
    errors = []
    for n in (24, 60, 110):  # 2^7 - 2 = 126 coalitions: these sample
        runs = [
            explain_tabular(interacting, BACKGROUND, ROW, "kernelshap", n_samples=n, seed=s)
            for s in range(6)
        ]
        for e in runs:  # efficiency is enforced whatever the samples
            assert e.base_value + e.values.sum() == pytest.approx(e.prediction, abs=1e-9)
        errors.append(np.mean([np.abs(e.all_values - reference).mean() for e in runs]))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.4 * errors[0], errors  # about 1 / sqrt(samples)


def test_permutation_shap_is_efficient_and_converges(reference):
    errors = []
    for n in (1, 4, 32):
        e = explain_tabular(interacting, BACKGROUND, ROW, "permutation_shap", n_permutations=n)
        assert e.base_value + e.values.sum() == pytest.approx(e.prediction, abs=1e-9)
        assert e.evaluations == (2 + n * 2 * 6) * len(BACKGROUND)
        errors.append(np.abs(e.all_values - reference).mean())
    assert errors[2] < errors[0] and errors[2] < 0.1 * np.abs(reference).mean(), errors


def test_a_linear_model_has_its_textbook_shapley_values():
    w = np.array([1.5, -2.0, 0.0, 3.0])
    back = RNG.normal(size=(40, 4))
    row = np.array([1.0, 2.0, -1.0, 0.5])
    e = explain_tabular(lambda x: np.asarray(x) @ w, back, row, "exact_shapley")
    np.testing.assert_allclose(e.values, w * (row - back.mean(0)), atol=1e-12)  # w_i (x_i - E x_i)


def test_lime_recovers_the_coefficients_of_standardised_features():
    w = np.array([1.0, -2.0, 0.5, 3.0])
    back = RNG.normal(size=(2000, 4)) * [1.0, 2.0, 3.0, 0.5] + [0, 1, -1, 2]
    e = explain_tabular(
        lambda x: np.asarray(x) @ w, back, back[0], "lime", n_samples=4000, max_background=2000
    )
    np.testing.assert_allclose(e.values, w * back.std(0), rtol=0.03)
    assert e.stats["r2"] > 0.99


def test_groups_and_categorical_columns_are_one_feature_each():
    pd = pytest.importorskip("pandas")
    colours = ["red", "green", "blue"]
    frame = pd.DataFrame(
        {
            "age": RNG.integers(20, 70, 30).astype(float),
            "colour": RNG.choice(colours, 30),
            "a": RNG.integers(0, 2, 30),
            "b": RNG.integers(0, 2, 30),
        }
    )

    def model(rows):
        assert list(rows.columns) == ["age", "colour", "a", "b"]  # a DataFrame, as given
        red = (rows["colour"] == "red").to_numpy(float)
        return (0.1 * rows["age"] + 2 * red + rows["a"] * rows["b"]).to_numpy(float)

    row = {"age": 50.0, "colour": "red", "a": 1, "b": 1}
    e = explain_tabular(model, frame, row, "exact_shapley", groups={"ab": ["a", "b"]})
    assert e.features == ["age", "colour", "ab"] and e.shown == ["50", "red", "a, b"]
    back = frame.to_numpy(dtype=object)
    # three players: age, colour, and the pair (a, b) moved together
    players = [[0], [1], [2, 3]]
    ref = np.zeros(3)
    for order in itertools.permutations(range(3)):
        rows = back.copy()
        before = model(pd.DataFrame(rows, columns=frame.columns).astype(frame.dtypes)).mean()
        for p in order:
            for c in players[p]:
                rows[:, c] = list(row.values())[c]
            after = model(pd.DataFrame(rows, columns=frame.columns).astype(frame.dtypes)).mean()
            ref[p] += (after - before) / 6
            before = after
    np.testing.assert_allclose(e.values, ref, atol=1e-10)
    with pytest.raises(InvalidInputError, match="column 'colour' has the category 'purple'"):
        explain_tabular(model, frame, {**row, "colour": "purple"}, "kernelshap")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (np.ones(6), "6 columns, but the table has 7"),
        (np.array([1, 2, np.nan, 4, 5, 6, 7.0]), "column 'x2' is nan in row 0"),
        ([1, 2, 3, "four", 5, 6, 7], "column 'x3' holds 'four' in row 0, not a number"),
        (np.ones((0, 7)), "expected rows of values"),
    ],
)
def test_bad_rows_get_a_typed_error_naming_the_column(row, message):
    with pytest.raises(InvalidInputError, match=message):
        explain_tabular(interacting, BACKGROUND, row)


def test_targets_methods_and_parameters_are_checked():
    labels = ["low", "high"]
    e = explain_tabular(interacting, BACKGROUND, ROW, labels=labels, target="high", n_samples=60)
    assert (e.target, e.label) == (1, "high")
    top = int(np.argmax(interacting(ROW[None])[0]))
    assert explain_tabular(interacting, BACKGROUND, ROW, n_samples=60).target == top
    with pytest.raises(UnknownClassError, match="Did you mean: high"):
        explain_tabular(interacting, BACKGROUND, ROW, labels=labels, target="hihg")
    with pytest.raises(InvalidTargetError, match="out of range"):
        explain_tabular(interacting, BACKGROUND, ROW, target=2)
    with pytest.raises(InvalidTargetError):
        explain_tabular(interacting, BACKGROUND, ROW, target=True)
    with pytest.raises(InvalidParameterError, match="Did you mean: kernelshap"):
        explain_tabular(interacting, BACKGROUND, ROW, "kernelshapp")
    with pytest.raises(InvalidParameterError, match="n_permutations"):
        explain_tabular(interacting, BACKGROUND, ROW, "permutation_shap", n_permutations=0)
    with pytest.raises(InvalidParameterError, match="exact_shapley enumerates 2\\^17"):
        explain_tabular(
            lambda x: np.asarray(x).sum(1), np.zeros((2, 17)), np.ones(17), "exact_shapley"
        )


@pytest.mark.parametrize("method", ["kernelshap", "permutation_shap", "lime"])
def test_same_seed_same_values_other_seed_other_values(method):
    params = {"n_samples": 40} if method != "permutation_shap" else {"n_permutations": 2}
    a = explain_tabular(interacting, BACKGROUND, ROW, method, seed=3, **params)
    b = explain_tabular(interacting, BACKGROUND, ROW, method, seed=3, **params)
    c = explain_tabular(interacting, BACKGROUND, ROW, method, seed=4, **params)
    assert a.values.tolist() == b.values.tolist()
    assert a.values.tolist() != c.values.tolist()


def test_many_rows_give_one_explanation_each_and_a_global_importance():
    rows = RNG.normal(size=(5, 7))
    many = explain_tabular(interacting, BACKGROUND, rows, "exact_shapley", target=0)
    assert isinstance(many, FeatureExplanations) and len(many) == 5
    for e, row in zip(many, rows, strict=True):
        one = explain_tabular(interacting, BACKGROUND, row, "exact_shapley", target=0)
        np.testing.assert_allclose(e.values, one.values, atol=1e-12)
    importance = many.importance()
    assert list(importance.values()) == sorted(importance.values(), reverse=True)
    assert importance["x6"] == pytest.approx(np.abs(many.values[:, 6]).mean())


def test_progress_is_reported_and_cancel_stops():
    seen = []
    explain_tabular(
        interacting,
        BACKGROUND,
        ROW,
        n_samples=60,
        batch_size=len(BACKGROUND) * 8,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[0] == (0, 60) and seen[-1] == (60, 60) and len(seen) == 1 + math.ceil(60 / 8)
    with pytest.raises(CancelledError, match="cancelled after 8 of 60"):
        explain_tabular(
            interacting,
            BACKGROUND,
            ROW,
            n_samples=60,
            batch_size=len(BACKGROUND) * 8,
            progress=lambda d, t: d == 0,
        )


def test_estimators_and_torch_modules_are_wrapped_and_left_as_they_were():
    from sklearn.linear_model import LogisticRegression

    x = RNG.normal(size=(60, 3))
    y = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    clf = LogisticRegression().fit(x, y)
    e = explain_tabular(clf, x, x[0], "exact_shapley", target="yes")
    assert e.output == "predict_proba" and e.label == "yes"
    assert e.prediction == pytest.approx(clf.predict_proba(x[:1])[0, 1])
    d = explain_tabular(clf, x, x[0], "exact_shapley", output="decision_function")
    assert d.output == "decision_function" and d.label == "yes"

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    e = explain_tabular(net, x, x[0], "exact_shapley", target=1)
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        net.eval()
        want = net(torch.as_tensor(x[:1], dtype=torch.float32))[0, 1].item()
    assert e.prediction == pytest.approx(want, rel=1e-6)


def test_save_and_load_round_trip(tmp_path):
    e = explain_tabular(interacting, BACKGROUND, ROW, "kernelshap", n_samples=60, labels=["a", "b"])
    paths = e.save(tmp_path)
    again = FeatureExplanation.load(paths["json"])
    assert again.values.tolist() == e.values.tolist()
    assert again.all_values.tolist() == e.all_values.tolist()
    for field in ("features", "shown", "target", "label", "prediction", "base_value", "params"):
        assert getattr(again, field) == getattr(e, field), field
    assert "x0 = " in e.table() and "Kernel SHAP of b" in e.table()
