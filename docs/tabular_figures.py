"""Draw the figures of the tables guide (docs/guides/tabular.md) into docs/.

Run from the repository root: ``python docs/tabular_figures.py`` (a few seconds; needs the
``tabular`` extra for Tree SHAP). The figures are committed; the site build does not run this.
"""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import train_test_split

from seethrough.tabular import explain_tabular
from seethrough.viz import bar_plot, beeswarm, save_figure, waterfall

OUT = Path(__file__).parent
DPI = 72  # small files: each PNG stays well under 100 KB


def main() -> None:
    data = load_breast_cancer()
    X_train, X_test, y_train, _ = train_test_split(data.data, data.target, random_state=0)
    names, labels = list(data.feature_names), list(data.target_names)
    boosted = GradientBoostingClassifier(random_state=0).fit(X_train, y_train)
    e = explain_tabular(boosted, X_train, X_test[0], feature_names=names, labels=labels)
    save_figure(bar_plot(e, top=8), OUT / "tabular-bar.png", dpi=DPI)
    save_figure(waterfall(e, top=8), OUT / "tabular-waterfall.png", dpi=DPI)
    many = explain_tabular(
        boosted,
        X_train,
        X_test[:100],
        "tree_shap",
        feature_names=names,
        output="decision_function",
        labels=["log-odds of benign"],
    )
    save_figure(beeswarm(many, top=8), OUT / "tabular-beeswarm.png", dpi=DPI)


if __name__ == "__main__":
    main()
