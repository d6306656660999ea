"""Images per second of the audit in-process against a local Ray cluster, and Ray's overheads.

What is measured, for each method (defaults: gradcam and lime), in ONE interleaved run (see
``_timing.py``: warm-up, then round-robin over the candidates, median of the repeats): the whole
:func:`seethrough.audit.audit` call (no metric, maps saved, no HTML summary) over ``small`` and
``large`` image files (generated digits), with

- ``local``: the in-process engine (the model loaded once, torch's default threads);
- ``ray``: :class:`~seethrough.audit.ray.RayEngine` on a local cluster started once before the
  timing (``--actors`` actors of 0.75 CPU, one torch thread each); each call starts its actor
  pool (every actor loads the model), streams the rows back and writes them.

From the medians: the cost per image of each engine is the slope between the two run sizes,
``slope = (T(large) - T(small)) / (large - small)``, and a run's fixed cost is its intercept,
``T(small) - small * slope``. The table gives

- ``images/s``: ``1 / slope`` (the throughput once running);
- ``ray/local``: the ratio of the slopes; target <= 1.30 (on 2 cores Ray cannot be faster:
  the same cores, plus scheduling and a process per actor);
- ``overhead/img``: Ray's slope minus the in-process slope, in ms; target < 10 ms;
- ``fixed``: Ray's intercept (actor pool start, model loads, first result); ``cluster start``:
  ``ray.init`` once (both are paid once per run, neither is in the targets).

The projection for N nodes in ``docs/guides/audit.md`` comes from these numbers.

Run: ``.venv/bin/python benchmarks/audit_ray_speed.py [--json benchmarks/results/ray.json]``.
The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _timing as bench
import torch
from audit_speed import audit_candidate, digit_images

import seethrough
from seethrough.audit import AuditSpec, Engine, LocalEngine
from seethrough.audit.ray import RayEngine

RATIO_TARGET = 1.30
"""Largest Ray / in-process slope ratio that passes."""
OVERHEAD_TARGET = 0.010
"""Largest extra seconds per image on Ray that pass."""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    p.add_argument(
        "--model",
        default="resnet18",
        help="model name, random weights (ResNet-18, as the in-process benchmark: on the tiny "
        "synthetic_digits, 3 ms an image, any engine's overhead dominates the ratio)",
    )
    p.add_argument("--methods", nargs="+", default=["gradcam", "lime"])
    p.add_argument("--small", type=int, default=8, help="images of the small run")
    p.add_argument("--large", type=int, default=40, help="images of the large run")
    p.add_argument("--lime-samples", type=int, default=100, help="LIME's perturbed samples")
    p.add_argument("--actors", type=int, default=2, help="Ray actors (and cluster CPUs)")
    bench.add_rounds(p, repeats=2, warmup=0)
    bench.add_threads(p)
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the raw numbers here")
    args = p.parse_args(argv)
    if not 0 < args.small < args.large:
        p.error("need 0 < --small < --large")
    return args


HEADERS = (
    "method",
    "engine",
    "s/img",
    "images/s",
    "fixed s",
    "ray/local",
    "overhead/img",
    "target",
    "status",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the environment header and the Markdown table."""
    args = _parse(argv)
    env, begun = bench.begin_run(args.threads)
    torch.manual_seed(0)
    vm = seethrough.load_model(args.model, weights="none")
    weights_dir = tempfile.TemporaryDirectory()
    weights = Path(weights_dir.name) / "model.safetensors"
    from safetensors.torch import save_file

    save_file(vm.module.state_dict(), str(weights))  # the actors load the same random model
    rows, statuses, raw = [], [], {}
    started = time.perf_counter()
    ray_engine = RayEngine(cpus=args.actors, actors=args.actors)
    ray_engine.connect()
    cluster_start = time.perf_counter() - started
    raw["cluster_start"] = cluster_start
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            folders = {n: scratch / f"images{n}" for n in (args.small, args.large)}
            for n, folder in folders.items():
                digit_images(folder, n)
            for method in args.methods:
                params: dict[str, Any] = (
                    {"n_samples": args.lime_samples} if method == "lime" else {}
                )
                spec = AuditSpec(
                    args.model, (method,), (), weights=str(weights), params={method: params}
                )
                engines: dict[str, Engine] = {"local": LocalEngine(vm), "ray": ray_engine}
                candidates = [
                    audit_candidate(f"{e}@{n}", engine, spec, folder, scratch)
                    for e, engine in engines.items()
                    for n, folder in folders.items()
                ]
                t = bench.timed(method, candidates, args.repeats, args.warmup)
                raw[method] = {k: v.to_dict() for k, v in t.items()}
                slope, fixed = {}, {}
                for e in engines:
                    small, large = t[f"{e}@{args.small}"].median, t[f"{e}@{args.large}"].median
                    slope[e] = (large - small) / (args.large - args.small)
                    fixed[e] = small - args.small * slope[e]
                ratio = slope["ray"] / slope["local"]
                overhead = slope["ray"] - slope["local"]
                ok_ratio = "PASS" if ratio <= RATIO_TARGET else "FAIL"
                ok_overhead = "PASS" if overhead < OVERHEAD_TARGET else "FAIL"
                statuses += [ok_ratio, ok_overhead]
                for e in engines:
                    cells = [method, e, bench.seconds(slope[e]), f"{1 / slope[e]:.2f}"]
                    cells.append(f"{fixed[e]:.1f}")
                    if e == "ray":
                        cells += [
                            f"{ratio:.2f}",
                            f"{overhead * 1000:.1f} ms",
                            f"<= {RATIO_TARGET:.2f}; < {OVERHEAD_TARGET * 1000:.0f} ms",
                            f"{ok_ratio} / {ok_overhead}",
                        ]
                    else:
                        cells += ["-"] * 4
                    rows.append(cells)
    finally:
        ray_engine.close()
        weights_dir.cleanup()
    title = (
        f"audit on Ray ({args.model}, {args.small} and {args.large} images, {args.actors} "
        f"actors; cluster start {cluster_start:.1f} s)"
    )
    bench.print_header(title, env)
    print(bench.markdown_table(HEADERS, rows))
    print(bench.status_line(statuses))
    if args.json is not None:
        bench.save_json(args.json, env, args, time.perf_counter() - begun, raw)
    return 0 if all(s.startswith("PASS") for s in statuses) else 1


if __name__ == "__main__":
    raise SystemExit(main())
