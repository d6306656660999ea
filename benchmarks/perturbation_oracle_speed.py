"""Feature ablation and Shapley value sampling against Captum; DAX against LIME on digits.

Table 1, speed at equal settings, interleaved in ONE run per model (see ``_timing.py``:
warm-up, then round-robin, median and min of the repeats):

| ours (``seethrough.explain``) | peer (Captum) |
|---|---|
| ``feature_ablation`` (``segments`` = a grid of ``--groups`` cells, ``hide=0``, ``batch_size``) | ``FeatureAblation`` (same ``feature_mask``, ``baselines=0``, ``perturbations_per_eval``) |
| ``shapley_sampling`` (same groups, ``n_samples`` permutations, ``batch_size``) | ``ShapleyValueSampling`` (same, ``n_samples``, ``perturbations_per_eval``) |

Both explain the same class (the top class of the input, fixed before timing) with the raw
output (``score="logit"``). ``ours`` is the whole public call (input checks, the clean forward,
the method, numpy conversion); Captum's object is built inside each timed call. Shapley value
sampling evaluates each distinct coalition once (the empty and the full coalition are shared by
all permutations): ``P (F - 1) + 2`` evaluations at most where Captum runs ``P F + 1``.
``ratio`` is the median over rounds of ours / peer in the same round, ``ratio@min`` min(ours) /
min(peer), ``cpu ratio`` the paired median of process CPU times. Target: not slower than the
peer (ratio <= 1.00), ``?`` when a cross-check disagrees. Models: ResNet-18 (random weights)
and the bundled EfficientNet-Lite0, input ``--size`` (small by default, to keep the run short).

Table 2, DAX against LIME at equal model evaluations (``--evals`` each, default 500) on the
generated digits of ``seethrough benchmark`` (``--images`` held-out images, the ground-truth
class explained, the small CNN trained on them: trained once and cached on first use, about a
minute): the pointing game and the energy pointing game against the digit's mask, the seconds
per image, and the centre and random baselines. Target: DAX's pointing game at least LIME's.

Run: ``.venv/bin/python benchmarks/perturbation_oracle_speed.py [--size 64] [--json PATH]``
(``--skip-dax`` for table 1 only, ``--skip-speed`` for table 2 only). The Markdown tables go
to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _timing as bench
import torch

import seethrough

TARGET = 1.00
METHODS = {"feature_ablation": "FeatureAblation", "shapley_sampling": "ShapleyValueSampling"}
HEADERS = bench.PEER_HEADERS
DAX_HEADERS = ("method", "evaluations", "pointing game", "energy pointing game", "s / image")


def _grid(size: int, groups: int) -> torch.Tensor:
    """A square grid of ``groups`` cells (``groups`` a square number), labels ``0..groups-1``."""
    side = round(groups**0.5)
    cells = torch.arange(size) * side // size
    return cells[:, None] * side + cells[None, :]


def _pairs(vm: Any, x: torch.Tensor, args: argparse.Namespace) -> list[bench.Candidate]:
    from captum import attr

    module = vm.module
    labels = _grid(args.size, args.groups)
    with torch.no_grad():
        target = int(module(x).argmax(1)[0])
    common = {"target": target, "segments": labels.numpy(), "hide": 0.0, "score": "logit"}
    feature_mask = labels[None, None]
    out = []
    for method, peer in METHODS.items():
        extra = {"n_samples": args.permutations} if method == "shapley_sampling" else {}

        def ours(method: str = method, extra: dict[str, int] = extra) -> None:
            seethrough.explain(vm, x[0], method, batch_size=args.batch_size, **common, **extra)

        def theirs(peer: str = peer, extra: dict[str, int] = extra) -> None:
            getattr(attr, peer)(module).attribute(
                x,
                baselines=0.0,
                target=target,
                feature_mask=feature_mask,
                perturbations_per_eval=args.batch_size,
                **extra,
            )

        out += [
            bench.Candidate(f"ours:{method}", ours),
            bench.Candidate(f"theirs:{method}", bench.frozen(module, theirs)),
        ]
    return out


def _speed(args: argparse.Namespace) -> tuple[list[list[str]], list[str], list[dict[str, Any]]]:
    table: list[list[str]] = []
    statuses: list[str] = []
    results: list[dict[str, Any]] = []
    for name in args.models:
        vm = seethrough.load_model(
            name, weights="default" if name == "efficientnet_lite0" else "none"
        )
        x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        label = f"{name}, input {args.size}x{args.size}, {args.groups} groups"
        timings = bench.timed(label, _pairs(vm, x, args), args.repeats, args.warmup)
        for method, peer in METHODS.items():
            ours, theirs = timings[f"ours:{method}"], timings[f"theirs:{method}"]
            columns = bench.ratio_columns(ours, theirs)
            status = bench.verdict(
                columns["ratio"], (columns["ratio_at_min"], columns["cpu_ratio"]), TARGET
            )
            statuses.append(status)
            table.append(
                bench.peer_row(
                    name, method, ours, theirs, f"captum {peer}", columns, TARGET, status
                )
            )
            results.append({"model": name, "method": method, "peer": peer, **columns})
    return table, statuses, results


def _dax_vs_lime(args: argparse.Namespace) -> tuple[list[list[str]], str, dict[str, Any]]:
    from seethrough.datasets.synthetic import make_digits
    from seethrough.evaluation import Sample, evaluate

    vm = seethrough.load_model("synthetic_digits")
    digits = make_digits(args.images, split="test", seed=0)
    samples = [
        Sample(f"digit{i:04d}", digits.images[i], digits.masks[i], int(digits.labels[i]))
        for i in range(args.images)
    ]
    params = {m: {"n_samples": args.evals} for m in ("dax", "lime")}
    bench.log(f"DAX and LIME on {args.images} digits, {args.evals} evaluations each")
    evaluation = evaluate(
        [vm],
        samples,
        ["dax", "lime"],
        metrics=("pointing_game", "energy_pointing_game"),
        params=params,
    )
    rows = {
        s.method: {
            "pointing_game": s.pointing_game,
            "energy_pointing_game": s.energy_pointing_game,
            "seconds": s.seconds,
        }
        for s in evaluation.summary()
    }
    table = [
        [
            method,
            str(args.evals) if method in params else "-",
            f"{row['pointing_game']:.3f}",
            f"{row['energy_pointing_game']:.3f}",
            f"{row['seconds']:.2f}",
        ]
        for method, row in rows.items()
    ]
    gap = rows["dax"]["pointing_game"] - rows["lime"]["pointing_game"]
    status = "PASS" if gap >= 0 else "FAIL"
    line = (
        f"DAX - LIME pointing game: {gap:+.3f} at {args.evals} evaluations each "
        f"(target >= 0): {status}"
    )
    return table, line, rows


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    bench.add_models(p)
    p.add_argument("--size", type=int, default=64, help="input height and width")
    p.add_argument("--groups", type=int, default=16, help="grid cells (a square number)")
    p.add_argument("--permutations", type=int, default=4, help="Shapley value sampling's n_samples")
    p.add_argument("--batch-size", type=int, default=16, help="perturbed inputs per forward pass")
    bench.add_rounds(p, repeats=3, warmup=1)
    p.add_argument("--images", type=int, default=50, help="digits for DAX vs LIME")
    p.add_argument("--evals", type=int, default=500, help="model evaluations of DAX and LIME")
    p.add_argument("--skip-speed", action="store_true", help="only DAX vs LIME")
    p.add_argument("--skip-dax", action="store_true", help="only the speed table")
    bench.add_threads(p)
    p.add_argument("--json", help="also save the raw numbers here")
    args = p.parse_args(argv)
    if round(args.groups**0.5) ** 2 != args.groups or args.groups > args.size**2:
        p.error("--groups must be a square number of at most size^2 cells")
    if min(args.repeats, args.permutations, args.batch_size, args.images, args.evals) < 1:
        p.error("--repeats, --permutations, --batch-size, --images and --evals must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts; print the environment header and the Markdown tables."""
    args = _parse(argv)
    env, wall = bench.begin_run(args.threads)
    table, statuses, results = ([], [], []) if args.skip_speed else _speed(args)
    dax_table, dax_line, dax_rows = ([], "", {}) if args.skip_dax else _dax_vs_lime(args)
    total = time.perf_counter() - wall
    bench.print_header("Feature ablation and Shapley sampling vs Captum; DAX vs LIME", env)
    print(f"- total benchmark time: {total:.0f} s\n")
    if table:
        print(
            f"Speed: input {args.size}x{args.size} random (seed 0), batch 1, {args.groups} grid "
            f"groups, {args.permutations} permutations, {args.batch_size} inputs per pass; "
            f"{args.repeats} rounds, warm-up {args.warmup}\n"
        )
        print(bench.markdown_table(HEADERS, table))
        print(f"\n{bench.status_line(statuses)}. ratio = median over rounds of ours / peer.\n")
    if dax_table:
        print(f"DAX vs LIME: {args.images} generated digits (test split, seed 0)\n")
        print(bench.markdown_table(DAX_HEADERS, dax_table))
        print(f"\n{dax_line}")
    if args.json:
        bench.save_json(Path(args.json), env, args, total, {"speed": results, "dax": dax_rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
