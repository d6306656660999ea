"""Tree SHAP read from scikit-learn's trees: the exact Shapley values of the background game
(what ``exact_shapley`` gets by enumerating every coalition through the model), efficiency, the
float32 comparisons scikit-learn makes, refusals, and a timing against shap's TreeExplainer."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn import ensemble, linear_model, tree
from sklearn.datasets import load_breast_cancer, load_diabetes

from seethrough.errors import MethodNotApplicableError
from seethrough.tabular import explain_tabular
from seethrough.tabular.tree import read_trees

DIABETES_X, DIABETES_Y = load_diabetes(return_X_y=True)
DIABETES_X = DIABETES_X[:, :8]
CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)
CANCER_8 = CANCER_X[:, :8]
THREE_CLASSES = np.digitize(DIABETES_Y, np.quantile(DIABETES_Y, [1 / 3, 2 / 3]))

CASES = {
    "decision tree": (
        lambda: tree.DecisionTreeRegressor(max_depth=6, random_state=0),
        "diabetes",
        "auto",
    ),
    "random forest": (
        lambda: ensemble.RandomForestRegressor(10, max_depth=4, random_state=0),
        "diabetes",
        "auto",
    ),
    "deep extra trees": (
        lambda: ensemble.ExtraTreesRegressor(5, random_state=0),
        "diabetes",
        "auto",
    ),
    "gradient boosting": (
        lambda: ensemble.GradientBoostingRegressor(n_estimators=30, random_state=0),
        "diabetes",
        "auto",
    ),
    "hist gradient boosting": (
        lambda: ensemble.HistGradientBoostingRegressor(max_iter=20, random_state=0),
        "diabetes",
        "auto",
    ),
    "forest classifier": (
        lambda: ensemble.RandomForestClassifier(10, max_depth=4, random_state=0),
        "cancer",
        "predict_proba",
    ),
    "boosted classifier": (
        lambda: ensemble.GradientBoostingClassifier(n_estimators=20, random_state=0),
        "cancer",
        "decision_function",
    ),
    "boosted three classes": (
        lambda: ensemble.GradientBoostingClassifier(n_estimators=10, random_state=0),
        "three",
        "decision_function",
    ),
    "hist boosted three classes": (
        lambda: ensemble.HistGradientBoostingClassifier(max_iter=10, random_state=0),
        "three",
        "decision_function",
    ),
}
DATA = {
    "diabetes": (DIABETES_X, DIABETES_Y),
    "cancer": (CANCER_8, CANCER_Y),
    "three": (DIABETES_X, THREE_CLASSES),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tree_shap_is_the_exact_shapley_value_of_the_background_game(case):
    make, data, output = CASES[case]
    x, y = DATA[data]
    model = make().fit(x, y)
    background, rows = x[:16], x[[1, 100, 201]]
    ours = explain_tabular(model, background, rows, "tree_shap", output=output)
    exact = explain_tabular(model, background, rows, "exact_shapley", output=output)
    for a, b in zip(ours, exact, strict=True):
        scale = np.abs(b.all_values).max()
        assert scale > 0
        np.testing.assert_allclose(a.all_values, b.all_values, rtol=0, atol=1e-9 * scale)
        assert a.base_value == pytest.approx(b.base_value, rel=1e-12)
        # efficiency: the values add up to the model's own output
        total = a.base_value + a.values.sum()
        assert abs(total - a.prediction) <= 1e-9 * max(1.0, abs(a.prediction))
        assert a.stats["efficiency_gap"] <= 1e-9 * max(1.0, abs(a.prediction))


def test_rows_are_compared_with_the_thresholds_as_scikit_learn_does():
    """A background value just above a float64 threshold, but equal to it in float32: shap's
    float32 comparison sends it left, scikit-learn (float32 row, float64 threshold) right."""
    model = tree.DecisionTreeRegressor(max_depth=3, random_state=0).fit(DIABETES_X, DIABETES_Y)
    t = model.tree_
    inner = t.feature >= 0
    value = np.float32(DIABETES_X[1, 3])
    close = inner & (t.feature == 3) & (np.float32(t.threshold) == value)
    assert close.any() and (np.float64(value) > t.threshold[close]).all()  # the edge is here
    ours = explain_tabular(model, DIABETES_X[1:2], DIABETES_X[3], "tree_shap")
    exact = explain_tabular(model, DIABETES_X[1:2], DIABETES_X[3], "exact_shapley")
    np.testing.assert_allclose(ours.values, exact.values, rtol=0, atol=1e-9)
    assert abs(ours.values[3]) > 1  # the feature whose threshold it is matters


def test_leaves_hold_each_path_as_one_interval_per_feature():
    model = tree.DecisionTreeRegressor(max_depth=8, random_state=0).fit(DIABETES_X, DIABETES_Y)
    leaves = read_trees(model)
    assert leaves is not None
    assert len(leaves.value) == model.get_n_leaves()
    rows = leaves.cast(DIABETES_X)
    reached = (
        (rows[:, leaves.feature] > leaves.lower) & (rows[:, leaves.feature] <= leaves.upper)
    ).all(-1)
    assert (reached.sum(1) == 1).all()  # every row reaches exactly one leaf
    np.testing.assert_allclose(reached @ leaves.value[:, 0], model.predict(DIABETES_X))


def _refused(model, x, y, match, **kwargs):
    model.fit(x, y)
    with pytest.raises(MethodNotApplicableError, match=match):
        explain_tabular(model, x[:20], x[25], "tree_shap", **kwargs)


def test_what_is_not_a_sum_of_trees_is_refused():
    x, y = CANCER_8, CANCER_Y
    _refused(linear_model.LogisticRegression(max_iter=500), x, y, "LogisticRegression is not")
    with pytest.raises(MethodNotApplicableError, match="function is not"):
        explain_tabular(lambda r: r.sum(1), x[:20], x[25], "tree_shap")
    boosted = ensemble.GradientBoostingClassifier(n_estimators=5, random_state=0)
    _refused(boosted, x, y, "output='decision_function'", output="predict_proba")
    hist = ensemble.HistGradientBoostingClassifier(max_iter=5)
    _refused(hist, x, y, "output='decision_function'", output="predict_proba")
    forest = ensemble.RandomForestClassifier(5, max_depth=3, random_state=0)
    _refused(forest, x, y, "give 2 outputs, its predict gives 1", output="predict")


def test_categorical_columns_groups_and_categorical_splits_are_refused():
    x, y = DIABETES_X, DIABETES_Y
    forest = ensemble.RandomForestRegressor(5, max_depth=3, random_state=0).fit(x, y)
    with pytest.raises(MethodNotApplicableError, match="categorical"):
        explain_tabular(forest, x[:20], x[25], "tree_shap", categorical=[1])
    with pytest.raises(MethodNotApplicableError, match="groups"):
        explain_tabular(forest, x[:20], x[25], "tree_shap", groups={"ab": [0, 1]})
    coded = x.copy()
    coded[:, 1] = (x[:, 1] > 0).astype(float)
    hist = ensemble.HistGradientBoostingRegressor(max_iter=5, categorical_features=[1])
    _refused(hist, coded, y, "categorical")


def test_timing_against_shaps_tree_explainer(capsys):
    """100 boosted trees on breast_cancer's 30 features, 100 background rows, 50 rows: the
    two timings are printed (no absolute time is asserted) with the largest difference."""
    shap = pytest.importorskip("shap")
    model = ensemble.GradientBoostingClassifier(n_estimators=100, random_state=0)
    model.fit(CANCER_X, CANCER_Y)
    background, rows = CANCER_X[:100], CANCER_X[200:250]
    start = time.perf_counter()
    ours = explain_tabular(model, background, rows, "tree_shap", output="decision_function")
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    explainer = shap.TreeExplainer(
        model, data=background.astype(np.float32), feature_perturbation="interventional"
    )
    theirs = np.asarray(explainer.shap_values(rows.astype(np.float32), check_additivity=False))
    shap_s = time.perf_counter() - start
    difference = np.abs(ours.values - theirs.reshape(ours.values.shape)).max()
    with capsys.disabled():
        print(
            f"\ntree_shap, 100-tree GB, breast_cancer, 100 background rows, 50 rows: ours "
            f"{ours_s:.3f} s, shap TreeExplainer {shap_s:.3f} s, largest difference "
            f"{difference:.2e} (of {np.abs(ours.values).max():.2f})"
        )
    predictions = model.decision_function(rows)
    totals = np.array([r.base_value + r.values.sum() for r in ours])
    np.testing.assert_allclose(totals, predictions, rtol=0, atol=1e-9)
