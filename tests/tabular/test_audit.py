"""``audit_features``: a planted leak is found, the random column ranks near the bottom, and a
column the target does not depend on is reported below it."""

from __future__ import annotations

import numpy as np
import pytest

from seethrough.errors import InvalidParameterError
from seethrough.tabular import FeatureAudit, audit_features
from seethrough.tabular.audit import LEAK_FACTOR

pytest.importorskip("shap")

NAMES = ["a", "b", "c", "d", "leak", "rare"]
INFORMATIVE = NAMES[:4]


def table(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Four informative columns (a linear rule plus noise), ``leak``: a noisy copy of the target,
    ``rare``: a flag set at random in 3% of the rows, independent of the target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x @ [1.0, 0.8, -0.6, 0.5] + 0.5 * rng.normal(size=n) > 0).astype(int)
    leak = y + 0.1 * rng.normal(size=n)
    rare = (rng.uniform(size=n) < 0.03).astype(float)
    return np.column_stack([x, leak, rare]), y


@pytest.fixture(scope="module")
def audit() -> FeatureAudit:
    from sklearn.ensemble import RandomForestClassifier

    x, y = table()
    return audit_features(
        RandomForestClassifier(n_estimators=50, random_state=0), x, y, feature_names=NAMES
    )


def test_the_planted_leak_is_flagged(audit):
    values = list(audit.importance.values())
    assert audit.method == "tree_shap"
    assert audit.leak == "leak" and list(audit.importance)[0] == "leak"
    assert values[0] >= LEAK_FACTOR * values[1] and values[0] > 0.5 * sum(values)
    assert "leak? 'leak'" in str(audit)


def test_the_random_column_ranks_near_the_bottom_and_the_rare_flag_below_it(audit):
    order = list(audit.importance)
    assert audit.random_column == "random" and audit.random_rank == len(order) - 2
    assert all(order.index(f) < audit.random_rank for f in INFORMATIVE)
    assert audit.unused == ["rare"]
    assert "not really used (below random noise): rare" in str(audit)
    assert audit.estimator.n_features_in_ == len(NAMES) + 1  # fitted with the random column


def test_importance_is_the_mean_absolute_value_over_the_rows(audit):
    values = np.abs(audit.explanations.values).mean(0)
    for j, feature in enumerate(audit.explanations.features):
        assert audit.importance[feature] == pytest.approx(values[j])
    assert len(audit.explanations) == 50


def test_without_a_leak_none_is_reported_and_kernelshap_agrees():
    from sklearn.ensemble import RandomForestClassifier

    x, y = table(seed=1)
    x = np.delete(x, 4, axis=1)  # no leak column
    names = [n for n in NAMES if n != "leak"]
    found = audit_features(
        RandomForestClassifier(n_estimators=30, random_state=1),
        x,
        y,
        feature_names=names,
        method="kernelshap",
        rows=15,
        random_state=1,
    )
    assert found.method == "kernelshap" and found.leak is None
    assert found.unused == ["rare"] and set(list(found.importance)[:4]) == set(INFORMATIVE)
    assert "leak?" not in str(found)


def test_a_column_named_random_is_kept_and_the_noise_renamed():
    from sklearn.linear_model import LogisticRegression

    x, y = table(n=120)
    found = audit_features(
        LogisticRegression(), x[:, :3], y, feature_names=["a", "random", "c"], rows=5
    )
    assert found.random_column == "random_2" and set(found.importance) == {
        "a",
        "random",
        "c",
        "random_2",
    }


def test_bad_arguments():
    from sklearn.linear_model import LogisticRegression

    x, y = table(n=50)
    with pytest.raises(InvalidParameterError, match="Shapley"):
        audit_features(LogisticRegression(), x, y, method="lime")
    with pytest.raises(InvalidParameterError, match="rows"):
        audit_features(LogisticRegression(), x, y[:-1])


def test_the_readme_example_prints_what_the_readme_shows(capsys):
    """The README's audit example, run as written: its output is the text block below it."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Tables", 1)[1].split("\n## ", 1)[0]
    code, shown = re.findall(r"```(?:python|text)\n(.*?)```", section, flags=re.S)[:2]
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == shown.strip()
