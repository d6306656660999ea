"""Our tabular Shapley values and LIME against the reference implementations, shap's
KernelExplainer and PermutationExplainer and lime's LimeTabularExplainer, on the same game: the
same model output, the same background rows, no link function and no regularisation.

Where both enumerate every coalition the values are equal to rounding; where both sample they
agree within sampling error, checked against exact values enumerated on wine's 13 features.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seethrough.tabular import explain_tabular

shap = pytest.importorskip("shap")
lime_tabular = pytest.importorskip("lime.lime_tabular")

pytestmark = pytest.mark.filterwarnings("ignore")

WINE_X, WINE_Y = load_wine(return_X_y=True)
BACKGROUND = WINE_X[::9][:20]  # 20 rows of every class, shared by every implementation
ROWS = WINE_X[[3, 70, 140]]  # one row of each class
F = WINE_X.shape[1]


@pytest.fixture(scope="module")
def mlp():
    """A small MLP on wine: a model with interactions between every feature."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=1000, random_state=0))
        return model.fit(WINE_X, WINE_Y)


@pytest.fixture(scope="module")
def exact(mlp) -> list[np.ndarray]:
    """Our exact Shapley values of each row's predicted class (checked against shap below)."""
    return [
        explain_tabular(mlp, BACKGROUND, row, "exact_shapley", target=_top(mlp, row)).values
        for row in ROWS
    ]


def _top(model, row: np.ndarray) -> int:
    return int(np.argmax(model.predict_proba(row[None])[0]))


def _one_output(model, target: int):
    return lambda rows: model.predict_proba(rows)[:, target]


def _kernel_explainer(fn, row: np.ndarray, nsamples: int, seed: int) -> np.ndarray:
    np.random.seed(seed)  # KernelExplainer samples with numpy's global generator
    explainer = shap.KernelExplainer(fn, BACKGROUND, link="identity")
    return np.asarray(
        explainer.shap_values(row[None], nsamples=nsamples, l1_reg=False, silent=True)
    )


def _relative_error(values: np.ndarray, reference: np.ndarray) -> float:
    """Root mean square error over the largest absolute reference value."""
    return float(np.sqrt(np.mean((values - reference) ** 2)) / np.abs(reference).max())


def test_exact_shapley_equals_shap_kernel_explainer_enumerating_every_coalition(mlp):
    row = ROWS[1]
    ours = explain_tabular(mlp, BACKGROUND, row, "exact_shapley")
    kernel = explain_tabular(mlp, BACKGROUND, row, "kernelshap", n_samples=2**F)  # enumerates
    theirs = _kernel_explainer(mlp.predict_proba, row, nsamples=2**F, seed=0)[0].T  # (3, F)
    assert theirs.shape == ours.all_values.shape == (3, F)
    assert np.abs(theirs).max() > 0.05  # a row whose values are not all near zero
    np.testing.assert_allclose(ours.all_values, theirs, atol=1e-6)
    np.testing.assert_allclose(kernel.all_values, theirs, atol=1e-6)
    base = mlp.predict_proba(BACKGROUND).mean(0)[ours.target]
    assert ours.base_value == pytest.approx(base, abs=1e-12)


def test_every_estimator_is_exact_on_a_linear_score_as_shap_is():
    """A logistic regression's decision function is additive: Shapley value i is
    ``w_i (x_i - mean_b x_i)``, and every estimator must find it at any budget (30 features)."""
    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    background, row = x[::40][:15], x[7]
    scaler, lr = model[0], model[1]
    textbook = lr.coef_[0] / scaler.scale_ * (row - background.mean(0))
    fn = model.decision_function
    kind = {"output": "decision_function"}
    ours = {
        "kernelshap": explain_tabular(model, background, row, "kernelshap", n_samples=100, **kind),
        "permutation_shap": explain_tabular(
            model, background, row, "permutation_shap", n_permutations=1, **kind
        ),
    }
    np.random.seed(0)
    kernel = shap.KernelExplainer(fn, background, link="identity")
    masker = shap.maskers.Independent(background, max_samples=len(background))
    theirs = {
        "shap kernel": kernel.shap_values(row[None], nsamples=100, l1_reg=False, silent=True)[0],
        "shap permutation": shap.PermutationExplainer(fn, masker, seed=0)(
            row[None], max_evals=2 * 30 + 1, silent=True
        ).values[0],
    }
    assert all(e.output == "decision_function" for e in ours.values())
    for name, values in {**{k: e.values for k, e in ours.items()}, **theirs}.items():
        np.testing.assert_allclose(values, textbook, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("row_index", range(len(ROWS)))
def test_kernel_shap_agrees_with_shap_kernel_explainer_within_sampling_error(mlp, exact, row_index):
    row, reference = ROWS[row_index], exact[row_index]
    target = _top(mlp, row)
    n = 2048  # of 8190 coalitions
    ours = [
        explain_tabular(mlp, BACKGROUND, row, "kernelshap", target=target, n_samples=n, seed=s)
        for s in range(3)
    ]
    theirs = [_kernel_explainer(_one_output(mlp, target), row, n, s)[0] for s in range(3)]
    ours_error = np.mean([_relative_error(e.values, reference) for e in ours])
    theirs_error = np.mean([_relative_error(v, reference) for v in theirs])
    assert ours_error < 0.05 and theirs_error < 0.05, (ours_error, theirs_error)
    assert ours_error < 2.5 * theirs_error + 0.005, (ours_error, theirs_error)
    mine, shaps = np.mean([e.values for e in ours], 0), np.mean(theirs, 0)
    assert np.corrcoef(mine, shaps)[0, 1] > 0.99
    assert np.abs(mine - shaps).max() < 0.1 * np.abs(reference).max()
    assert all(e.evaluations == n * len(BACKGROUND) for e in ours)


def test_permutation_shap_agrees_with_shap_permutation_explainer_within_sampling_error(mlp, exact):
    masker = shap.maskers.Independent(BACKGROUND, max_samples=len(BACKGROUND))
    orders = 20  # random orders, each with its reverse, for both
    for row, reference in zip(ROWS, exact, strict=True):
        target = _top(mlp, row)
        explainer = shap.PermutationExplainer(_one_output(mlp, target), masker, seed=1)
        theirs = explainer(row[None], max_evals=orders * (2 * F + 1), silent=True).values[0]
        ours = explain_tabular(
            mlp, BACKGROUND, row, "permutation_shap", target=target, n_permutations=orders
        ).values
        ours_error, theirs_error = (_relative_error(v, reference) for v in (ours, theirs))
        assert ours_error < 0.08 and theirs_error < 0.08, (ours_error, theirs_error)
        assert np.corrcoef(ours, theirs)[0, 1] > 0.97
        total = (
            mlp.predict_proba(row[None])[0, target]
            - mlp.predict_proba(BACKGROUND)[:, target].mean()
        )
        assert ours.sum() == pytest.approx(total, abs=1e-9)  # efficient, as shap's
        assert theirs.sum() == pytest.approx(total, abs=1e-6)


def _lime_values(model, row: np.ndarray, target: int, seed: int, n: int) -> np.ndarray:
    explainer = lime_tabular.LimeTabularExplainer(
        BACKGROUND,
        discretize_continuous=False,
        sample_around_instance=False,
        feature_selection="none",
        random_state=seed,
    )
    found = explainer.explain_instance(
        row, model.predict_proba, labels=(target,), num_features=F, num_samples=n
    )
    values = np.zeros(F)
    for feature, slope in found.local_exp[target]:
        values[feature] = slope
    return values


def test_lime_agrees_with_lime_tabular_explainer_within_sampling_error():
    """The same local linear model: samples drawn from the background's normal approximation,
    slopes on standardised features, lime's kernel and ridge; two lime seeds say how far apart
    two estimates may be."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(WINE_X, WINE_Y)
    n = 5000
    for row in ROWS:
        target = _top(model, row)
        ours = explain_tabular(model, BACKGROUND, row, "lime", target=target, n_samples=n).values
        theirs = [_lime_values(model, row, target, seed, n) for seed in (0, 1)]
        scale = np.abs(theirs[0]).max()
        spread = np.abs(theirs[1] - theirs[0]).max()
        gap = min(np.abs(ours - t).max() for t in theirs)
        assert gap < 2 * spread and gap < 0.1 * scale, (gap, spread, scale)
        assert np.corrcoef(ours, theirs[0])[0, 1] > 0.99
