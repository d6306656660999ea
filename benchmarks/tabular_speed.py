"""Model evaluations needed for an accurate explanation of a row of a table: seethrough's Kernel
SHAP, permutation sampling and LIME against shap's KernelExplainer and PermutationExplainer and
lime's LimeTabularExplainer, on breast_cancer (30 features) with a small MLP and a
gradient-boosted model, in one run.

The question (issue 21): how many model evaluations does each method need before its values
rank the features as the exact Shapley values do (mean Spearman rho >= ``--rho``, 0.95), and how
many seconds does each evaluation cost? Target: ours reaches it with >= 2x fewer evaluations than
shap's KernelExplainer, and is never slower per evaluation.

Equal settings (what every implementation is given):

- the SAME game: the model's output with hidden features taken from each of the SAME
  ``--background`` (50) training rows and averaged (interventional Shapley values;
  ``shap.KernelExplainer(f, background, link="identity")``, ``shap.PermutationExplainer(f,
  Independent(background, max_samples=50))``; lime's ``training_data`` is the background too);
- the SAME output: the MLP's probability of class 1 (``predict_proba``), the gradient-boosted
  model's ``decision_function`` (the log-odds, what its trees add up: the exact reference below
  explains it);
- KernelExplainer with ``l1_reg=False`` (its default keeps 10 features), lime with
  ``discretize_continuous=False, sample_around_instance=False, feature_selection="none"`` in
  regression mode on the explained output (its kernel and ridge, which are ours).

The reference ("exact Shapley"): for the gradient-boosted model, exact interventional Tree SHAP
(``explain_tabular(..., "tree_shap", output="decision_function")``, Lundberg et al. 2020); for
the MLP, 30 features cannot be enumerated, so the reference is a long run of our
``permutation_shap``: ``--reference-chunks`` (10) runs of ``--reference-permutations / chunks``
orders each (2000 orders in all, each with its reverse), averaged; its standard error per
feature is the chunks' standard deviation over sqrt(chunks), printed relative to the largest
value, with the Spearman rho between the means of two halves of the chunks.

LIME gives slopes, not Shapley values; its values here are the local linear model's
contributions ``slope_i * (x_i - mean_i) / std_i`` (its slopes are on standardised features), the
linear model's Shapley values against the background mean, for ours and lime's alike.

Search: for each method and model, the budget (coalitions, orders or samples) starts small and
doubles until the mean Spearman rho over ``--rows`` (5) rows x ``--seeds`` (3) seeds reaches the
target, then ``--bisect`` (3) bisection steps between the last budget below and the first above.
Evaluations are model ROWS, COUNTED: ``FeatureExplanation.evaluations`` for ours, a row counter
wrapped around the model function for shap and lime (the explainers' own setup calls included).
A method that has not reached the target at its largest budget is reported as not reaching it.

Seconds per evaluation: at each method's budget found (its largest if it never reached the
target), one explanation (row 0, seed 0) per method is timed round-robin with
``_timing.run_interleaved`` (``--repeats`` rounds, median), divided by its evaluations; each of
our Shapley estimators is timed again at the budget giving about shap KernelExplainer's
evaluations. Ratio rows, for each of our Shapley estimators: shap Kernel evaluations / ours
(target >= 2); ours s/eval / shap Kernel s/eval at equal evaluations (target <= 1: the cost of
one evaluation, fixed costs spread alike) and at each one's own budget (a method that needs few
evaluations spreads its fixed costs over few); ours s/row / shap Kernel s/row at the budgets
found (the time to reach the target).

``--threads 1`` is recommended on a shared machine (torch and the BLAS of numpy, scikit-learn,
shap and lime are limited alike). ``--tiny`` runs a smoke configuration in well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _timing import (
    Candidate,
    environment,
    markdown_table,
    print_header,
    run_interleaved,
    save_json,
)
from _timing import log as _log
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seethrough.tabular import explain_tabular

# ------------------------------------------------------------------------------------ setup


@dataclass
class Setup:
    """A model, what of it is explained, the background, the rows and their reference values."""

    name: str
    model: Any
    output: str  # explain_tabular's output=
    target: int  # explain_tabular's target=
    fn: Callable[[np.ndarray], np.ndarray]  # the same scalar output, for shap and lime
    background: np.ndarray
    rows: np.ndarray
    reference: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (rows, F)
    reference_note: str = ""


def setups(args: argparse.Namespace) -> list[Setup]:
    """breast_cancer split 70/30: the models and the background from the 70, the rows from the 30."""
    x, y = load_breast_cancer(return_X_y=True)
    train, test, y_train, _ = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    pick = np.random.default_rng(0)
    background = train[np.sort(pick.choice(len(train), args.background, replace=False))]
    rows = test[np.sort(pick.choice(len(test), args.rows, replace=False))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = make_pipeline(
            StandardScaler(), MLPClassifier((args.hidden,), max_iter=1000, random_state=0)
        ).fit(train, y_train)
        gb = GradientBoostingClassifier(n_estimators=args.trees, max_depth=3, random_state=0)
        gb.fit(train, y_train)
    out = [
        Setup(
            "mlp", mlp, "predict_proba", 1, lambda r: mlp.predict_proba(r)[:, 1], background, rows
        ),
        Setup("gb", gb, "decision_function", 0, gb.decision_function, background, rows),
    ]
    return [s for s in out if s.name in args.models]


def reference(setup: Setup, args: argparse.Namespace) -> None:
    """Exact Tree SHAP for the trees; a long, chunked permutation run for the MLP."""
    start = time.perf_counter()
    if setup.name == "gb":
        many = explain_tabular(
            setup.model,
            setup.background,
            setup.rows,
            "tree_shap",
            output="decision_function",
            max_background=len(setup.background),
        )
        setup.reference = np.asarray(many.values)
        gap = max(e.stats.get("efficiency_gap", 0.0) for e in many)
        setup.reference_note = (
            f"exact interventional Tree SHAP of the decision function (efficiency gap {gap:.1e})"
        )
    else:
        chunks = args.reference_chunks
        per = max(1, args.reference_permutations // chunks)
        runs = np.stack(
            [
                ours(setup, "permutation_shap", per, seed=10_000 + 100 * c).values
                for c in range(chunks)
            ]
        )  # (chunks, rows, F)
        setup.reference = runs.mean(0)
        error = runs.std(0, ddof=1) / np.sqrt(chunks)
        relative = (error.max(1) / np.abs(setup.reference).max(1)).max()
        half = chunks // 2
        halves = np.mean(
            [
                spearmanr(runs[:half, r].mean(0), runs[half:, r].mean(0))[0]
                for r in range(len(setup.rows))
            ]
        )
        setup.reference_note = (
            f"our permutation_shap, {chunks} x {per} orders (each with its reverse) averaged; "
            f"standard error <= {relative:.2%} of the row's largest |value|; Spearman rho "
            f"between the two halves' means {halves:.4f}"
        )
    _log(f"{setup.name}: reference in {time.perf_counter() - start:.0f} s")


# ------------------------------------------------------------------------------------ methods


@dataclass
class Run:
    """One method's explanations of every row at one budget and seed."""

    values: np.ndarray  # (rows, F)
    evaluations: float  # mean model rows per explained row
    seconds: float


def _standardised(setup: Setup, row: np.ndarray) -> np.ndarray:
    """The row's standardised values against the background (LIME's slopes apply to these)."""
    std = setup.background.std(0)
    return (row - setup.background.mean(0)) / np.where(std > 0, std, 1.0)


def ours(setup: Setup, method: str, budget: int, seed: int, rows: np.ndarray | None = None) -> Run:
    """Our ``method`` at ``budget`` (coalitions, orders or samples) on every row."""
    rows = setup.rows if rows is None else rows
    param = {"kernelshap": "n_samples", "permutation_shap": "n_permutations", "lime": "n_samples"}
    start = time.perf_counter()
    many = explain_tabular(
        setup.model,
        setup.background,
        rows,
        method,
        output=setup.output,
        target=setup.target,
        seed=seed,
        max_background=len(setup.background),
        **{param[method]: budget},
    )
    seconds = time.perf_counter() - start
    values = np.asarray(many.values)
    if method == "lime":
        values = values * np.stack([_standardised(setup, r) for r in rows])
    return Run(values, float(np.mean([e.evaluations for e in many])), seconds)


class Counted:
    """A model function that counts the rows it is given."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.fn, self.rows = fn, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.rows += len(x)
        return self.fn(x)


def shap_kernel(setup: Setup, budget: int, seed: int, rows: np.ndarray | None = None) -> Run:
    import shap

    rows = setup.rows if rows is None else rows
    fn = Counted(setup.fn)
    start = time.perf_counter()
    values = []
    for row in rows:
        np.random.seed(seed)  # KernelExplainer samples with numpy's global generator
        explainer = shap.KernelExplainer(fn, setup.background, link="identity")
        found = explainer.shap_values(row[None], nsamples=budget, l1_reg=False, silent=True)
        values.append(np.asarray(found).reshape(-1))
    return Run(np.stack(values), fn.rows / len(rows), time.perf_counter() - start)


def shap_permutation(setup: Setup, budget: int, seed: int, rows: np.ndarray | None = None) -> Run:
    import shap

    rows = setup.rows if rows is None else rows
    fn = Counted(setup.fn)
    f = setup.background.shape[1]
    start = time.perf_counter()
    masker = shap.maskers.Independent(setup.background, max_samples=len(setup.background))
    values = []
    for row in rows:
        explainer = shap.PermutationExplainer(fn, masker, seed=seed)
        values.append(explainer(row[None], max_evals=budget * (2 * f + 1), silent=True).values[0])
    return Run(np.stack(values), fn.rows / len(rows), time.perf_counter() - start)


def lime_package(setup: Setup, budget: int, seed: int, rows: np.ndarray | None = None) -> Run:
    from lime.lime_tabular import LimeTabularExplainer

    rows = setup.rows if rows is None else rows
    fn = Counted(setup.fn)
    f = setup.background.shape[1]
    start = time.perf_counter()
    values = []
    for row in rows:
        explainer = LimeTabularExplainer(
            setup.background,
            mode="regression",
            discretize_continuous=False,
            sample_around_instance=False,
            feature_selection="none",
            random_state=seed,
        )
        found = explainer.explain_instance(row, fn, num_features=f, num_samples=budget)
        slopes = np.zeros(f)
        for feature, slope in found.local_exp[1]:
            slopes[feature] = slope
        values.append(slopes * _standardised(setup, row))
    return Run(np.stack(values), fn.rows / len(rows), time.perf_counter() - start)


@dataclass(frozen=True)
class Method:
    """A method of one implementation, its budget's unit and where its search starts."""

    key: str
    title: str
    unit: str
    start: int
    run: Callable[..., Run]
    shapley: bool = True


def methods(args: argparse.Namespace) -> list[Method]:
    def our(name: str) -> Callable[..., Run]:
        return lambda setup, budget, seed, rows=None: ours(setup, name, budget, seed, rows)

    table = [
        Method("ours:kernelshap", "ours kernelshap", "coalitions", 64, our("kernelshap")),
        Method(
            "ours:permutation_shap", "ours permutation_shap", "orders", 1, our("permutation_shap")
        ),
        Method("ours:lime", "ours lime", "samples", 256, our("lime"), shapley=False),
        Method("shap:kernel", "shap KernelExplainer", "coalitions", 64, shap_kernel),
        Method("shap:permutation", "shap PermutationExplainer", "orders", 1, shap_permutation),
        Method("lime:tabular", "lime LimeTabularExplainer", "samples", 256, lime_package, False),
    ]
    return [m for m in table if m.key in args.methods]


# ------------------------------------------------------------------------------------ search


@dataclass
class Point:
    """A budget's quality: mean Spearman rho over rows and seeds, and its evaluations."""

    budget: int
    rho: float
    evaluations: float
    seconds: float


def quality(setup: Setup, method: Method, budget: int, args: argparse.Namespace) -> Point:
    rhos, evaluations, seconds = [], [], 0.0
    for seed in range(args.seeds):
        run = method.run(setup, budget, seed)
        rhos += [spearmanr(v, r)[0] for v, r in zip(run.values, setup.reference, strict=True)]
        evaluations.append(run.evaluations)
        seconds += run.seconds
    point = Point(budget, float(np.mean(rhos)), float(np.mean(evaluations)), seconds)
    _log(
        f"  {setup.name} {method.title}: {method.unit}={budget} rho={point.rho:.4f} "
        f"evals/row={point.evaluations:.0f} ({seconds:.1f} s)"
    )
    return point


@dataclass
class Found:
    """The smallest budget found that reaches the target (None: not reached), and the curve."""

    setup: str
    method: Method
    points: list[Point]
    best: Point | None
    seconds_per_eval: float = float("nan")
    seconds_per_eval_equal: float = float("nan")  # at shap KernelExplainer's evaluations

    @property
    def timed(self) -> Point:
        """The point timed: the budget found, else the largest budget tried."""
        return self.best or max(self.points, key=lambda p: p.budget)


def search(setup: Setup, method: Method, args: argparse.Namespace) -> Found:
    """Double the budget until the target is reached, then bisect between the last two."""
    limit = args.max_evaluations
    points: list[Point] = []
    budget, below = method.start, None
    while True:
        point = quality(setup, method, budget, args)
        points.append(point)
        if point.rho >= args.rho:
            break
        below = budget
        cap = args.lime_max_samples if method.unit == "samples" else float("inf")
        if point.evaluations * 2 > limit or budget * 2 > cap:
            return Found(setup.name, method, points, None)
        budget *= 2
    best = point
    low, high = (below, budget) if below is not None else (budget, budget)
    for _ in range(args.bisect):
        middle = (low + high) // 2
        if middle <= low:
            break
        point = quality(setup, method, middle, args)
        points.append(point)
        if point.rho >= args.rho:
            high, best = middle, point
        else:
            low = middle
    return Found(setup.name, method, points, best)


def time_per_evaluation(setup: Setup, found: list[Found], args: argparse.Namespace) -> None:
    """Time one explanation per method at its budget found (its largest budget tried if it
    never reached the target), and each of our Shapley estimators again at about shap
    KernelExplainer's evaluations (equal work), interleaved; seconds per evaluation."""
    row = setup.rows[:1]
    evaluations: dict[str, float] = {}
    kernel = next((f for f in found if f.method.key == "shap:kernel"), None)

    def candidate(key: str, method: Method, budget: int) -> Candidate:
        def call() -> None:
            evaluations[key] = method.run(setup, budget, 0, row).evaluations

        return Candidate(key, call)

    candidates = [candidate(f.method.key, f.method, f.timed.budget) for f in found]
    for f in found:
        if kernel is not None and f.method.key.startswith("ours:") and f.method.shapley:
            per_unit = f.timed.evaluations / f.timed.budget
            budget = max(1, round(kernel.timed.evaluations / per_unit))
            candidates.append(candidate(f.method.key + "@equal", f.method, budget))
    timings = run_interleaved(candidates, repeats=args.repeats, warmup=1)
    for f in found:
        f.seconds_per_eval = timings[f.method.key].median / evaluations[f.method.key]
        if f.method.key + "@equal" in timings:
            key = f.method.key + "@equal"
            f.seconds_per_eval_equal = timings[key].median / evaluations[key]


# ------------------------------------------------------------------------------------ report

HEADERS = (
    "model",
    "method",
    "budget reaching rho",
    "evals/row",
    "mean rho",
    "s/eval",
    "s/row",
    "budgets tried: rho",
)
RATIO_HEADERS = (
    "model",
    "ours",
    "shap Kernel evals / ours",
    "target",
    "s/eval ratio, equal evals",
    "target",
    "s/eval ratio, own budgets",
    "s/row ratio",
    "status",
)


def rows_of(found: list[Found]) -> list[list[str]]:
    out = []
    for f in found:
        tried = ", ".join(
            f"{p.budget}: {p.rho:.3f}" for p in sorted(f.points, key=lambda p: p.budget)
        )
        point = f.timed
        if f.best is None:
            budget, evaluations = f"not reached by {f.method.unit}={point.budget}", ">"
        else:
            budget, evaluations = f"{f.method.unit}={point.budget}", ""
        out.append(
            [
                f.setup,
                f.method.title,
                budget,
                f"{evaluations}{point.evaluations:.0f}",
                f"{point.rho:.3f}",
                f"{f.seconds_per_eval:.2e}",
                f"{f.seconds_per_eval * point.evaluations:.3f}",
                tried,
            ]
        )
    return out


def ratio_rows(found: list[Found]) -> list[list[str]]:
    """Each of our Shapley estimators against shap's KernelExplainer on the same model: how
    many times fewer evaluations ours needs; ours s/eval over KernelExplainer's at about the
    same evaluations (equal work: the target) and at each one's budget found; ours s/row over
    KernelExplainer's at the budgets found (the time to the target). Where KernelExplainer
    never reached the target its largest budget gives a lower bound (">")."""
    out = []
    by = {(f.setup, f.method.key): f for f in found}
    for (model, key), f in by.items():
        theirs = by.get((model, "shap:kernel"))
        if not key.startswith("ours:") or not f.method.shapley or theirs is None:
            continue
        equal = f.seconds_per_eval_equal / theirs.seconds_per_eval
        own = f.seconds_per_eval / theirs.seconds_per_eval
        per_row = (f.seconds_per_eval * f.timed.evaluations) / (
            theirs.seconds_per_eval * theirs.timed.evaluations
        )
        timing = [f"{equal:.3f}", "<= 1", f"{own:.3f}", f"{per_row:.3f}"]
        if f.best is None:
            out.append([model, f.method.title, "-", ">= 2", *timing, "FAIL (not reached)"])
            continue
        fewer = theirs.timed.evaluations / f.best.evaluations
        bound = ">" if theirs.best is None else ""
        status = "PASS" if fewer >= 2 and equal <= 1 else "FAIL"
        if bound and fewer < 2 and equal <= 1:
            status = "? (a lower bound below 2)"
        out.append([model, f.method.title, f"{bound}{fewer:.2f}", ">= 2", *timing, status])
    return out


# ------------------------------------------------------------------------------------ main

ALL_METHODS = (
    "ours:kernelshap",
    "ours:permutation_shap",
    "ours:lime",
    "shap:kernel",
    "shap:permutation",
    "lime:tabular",
)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", nargs="+", default=["mlp", "gb"], choices=("mlp", "gb"))
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    p.add_argument("--rho", type=float, default=0.95, help="target mean Spearman rho")
    p.add_argument("--rows", type=int, default=5, help="test rows explained")
    p.add_argument("--seeds", type=int, default=3, help="seeds per budget")
    p.add_argument("--background", type=int, default=50, help="background rows, for all")
    p.add_argument("--hidden", type=int, default=32, help="the MLP's hidden units")
    p.add_argument("--trees", type=int, default=100, help="the gradient-boosted trees")
    p.add_argument("--bisect", type=int, default=3, help="bisection steps after doubling")
    p.add_argument(
        "--max-evaluations", type=float, default=1e6, help="largest budget, in model rows per row"
    )
    p.add_argument(
        "--lime-max-samples", type=int, default=1 << 16, help="largest budget of the LIMEs"
    )
    p.add_argument("--reference-permutations", type=int, default=2000)
    p.add_argument("--reference-chunks", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds for s/eval")
    p.add_argument(
        "--threads", type=int, default=0, help="torch and BLAS threads (0: leave the defaults)"
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="smoke run: 2 rows, 1 seed, 10 background rows, small models, small budgets",
    )
    p.add_argument("--json", metavar="PATH", help="also save the raw numbers here")
    args = p.parse_args(argv)
    if args.tiny:
        args.rows, args.seeds, args.background, args.hidden, args.trees = 2, 1, 10, 8, 10
        args.bisect, args.max_evaluations, args.repeats = 1, 2e4, 1
        args.lime_max_samples = 4096
        args.reference_permutations, args.reference_chunks = 20, 2
    if min(args.rows, args.seeds, args.background, args.repeats, args.reference_chunks) < 1:
        p.error("--rows, --seeds, --background, --repeats and --reference-chunks must be >= 1")
    if args.threads < 0:
        p.error("--threads must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    warnings.filterwarnings("ignore")
    limits = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        limits = threadpool_limits(args.threads)
    env = environment()
    wall = time.perf_counter()
    found: list[Found] = []
    notes = []
    for setup in setups(args):
        reference(setup, args)
        notes.append(f"- {setup.name}: reference = {setup.reference_note}")
        mine = [search(setup, m, args) for m in methods(args)]
        time_per_evaluation(setup, mine, args)
        found += mine
    total = time.perf_counter() - wall

    print_header("Tabular explanations: model evaluations to reach the exact ranking", env)
    print(f"- command: {' '.join(sys.argv)}")
    print(f"- total run time: {total:.0f} s")
    print(
        f"- breast_cancer, 30 features; {args.rows} test rows x {args.seeds} seeds per budget; "
        f"background {args.background} training rows for every method; target mean Spearman "
        f"rho >= {args.rho}"
    )
    print("\n".join(notes))
    print("\n## Budget reaching the target, evaluations and seconds per evaluation\n")
    print(markdown_table(HEADERS, rows_of(found)))
    ratios = ratio_rows(found)
    if ratios:
        print("\n## Ours against shap's KernelExplainer\n")
        print(markdown_table(RATIO_HEADERS, ratios))
    if args.json:
        results = [
            {
                "model": f.setup,
                "method": f.method.key,
                "seconds_per_eval": f.seconds_per_eval,
                "best": vars(f.best) if f.best else None,
                "points": [vars(p) for p in f.points],
            }
            for f in found
        ]
        save_json(Path(args.json), env, args, total, results)
    if limits is not None:
        limits.restore_original_limits()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
