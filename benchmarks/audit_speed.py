"""Images per second of the data-set audit against the bare ``explain`` loop and a peer's loop.

What is measured, for each method (defaults: gradcam and lime), all in ONE interleaved run (see
``_timing.py``: warm-up, then round-robin over the candidates, median and min of the repeats),
over the same N image files (generated digits, PNG, resized by the model's preprocessing):

- ``audit:ENGINE``: :func:`seethrough.audit.audit` of the folder into a fresh run folder with no
  metric (the maps saved as ``.npz``, every batch written as a part, the table merged into CSV
  and Parquet at the end; no HTML summary), with each engine of :data:`ENGINES`;
- ``loop``: ``for path in paths: seethrough.explain(model, path, method)``: what a user scripts
  today, without the table, the maps or the resumability;
- ``peer``: the same loop over pytorch-grad-cam's ``GradCAM`` (for gradcam; the model input
  preprocessed by the model's own preprocessing, the same layer) or over the ``lime``
  package's ``LimeImageExplainer`` (for lime; the same number of samples, its default
  quickshift segmentation).

``ratio`` is the paired median over rounds of audit / loop (``ratio@min`` and ``cpu ratio`` are
the cross-checks; a ``?`` where they disagree with ``ratio``: the machine was too busy); the
target is :data:`ENGINES`' (1.10 for the in-process engine: the audit's bookkeeping costs at
most a tenth of the work). ``images/s`` is 1 / the median seconds per image.

Other engines add a row each by adding an entry to :data:`ENGINES` (name -> engine factory,
the candidate it is compared with, the target) and naming it with ``--engines``.

Run: ``.venv/bin/python benchmarks/audit_speed.py [--json benchmarks/results/audit_speed.json]``.
The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _timing as bench
import numpy as np
import torch
from PIL import Image

import seethrough
from seethrough.audit import AuditSpec, Engine, LocalEngine, audit
from seethrough.models import VisionModel

ENGINES: dict[str, tuple[Callable[[VisionModel], Engine], str, float]] = {
    "local": (lambda vm: LocalEngine(vm), "loop", 1.10),
}
"""Engine name -> (engine factory given the loaded model, candidate it is compared with,
largest ratio that passes)."""


def digit_images(folder: Path, n: int) -> list[Path]:
    """Write ``n`` generated digits (test split) into ``folder`` as PNGs; their paths."""
    from seethrough.datasets.synthetic import make_digits

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(make_digits(n, split="test").images):
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def audit_candidate(
    name: str, engine: Engine, spec: AuditSpec, folder: Path, scratch: Path
) -> bench.Candidate:
    """A candidate that audits ``folder`` into a fresh folder under ``scratch``, then removes it."""
    count = [0]

    def run() -> None:
        count[0] += 1
        out = scratch / f"{name}-{count[0]}"
        audit(folder, spec, out, engine=engine, report=False)
        shutil.rmtree(out)

    return bench.Candidate(name, run)


def _audit(
    vm: VisionModel, folder: Path, method: str, params: dict[str, Any], engine: str, scratch: Path
) -> bench.Candidate:
    factory = ENGINES[engine][0]
    spec = AuditSpec(vm.name, (method,), (), params={method: params}, batch_size=8)
    return audit_candidate(f"audit:{engine}", factory(vm), spec, folder, scratch / method)


def _loop(vm: VisionModel, paths: Sequence[Path], method: str, params: dict[str, Any]) -> Any:
    def run() -> None:
        for p in paths:
            seethrough.explain(vm, str(p), method, **params)

    return bench.Candidate("loop", run)


def _peer(vm: VisionModel, paths: Sequence[Path], method: str, samples: int) -> bench.Candidate:
    module = vm.module
    if method == "gradcam":
        from pytorch_grad_cam import GradCAM

        name = seethrough.explain(vm, str(paths[0]), "gradcam").layer  # the layer we use
        layer = dict(module.named_modules())[name]

        def run() -> None:
            cam = GradCAM(model=module, target_layers=[layer])
            try:
                for p in paths:
                    cam(input_tensor=vm.preprocessing(str(p)), targets=None)
            finally:
                cam.activations_and_grads.release()
                module.zero_grad(set_to_none=True)

        return bench.Candidate("peer", run)
    from lime import lime_image

    def classify(batch: np.ndarray) -> np.ndarray:
        x = torch.stack([vm.preprocessing.from_display(b.astype(np.uint8)) for b in batch])
        with torch.no_grad():
            return torch.softmax(module(x), 1).numpy()

    def run_lime() -> None:
        explainer = lime_image.LimeImageExplainer(random_state=0)
        for p in paths:
            shown = vm.preprocessing.display_image(str(p))
            explainer.explain_instance(
                shown,
                classify,
                top_labels=1,
                num_samples=samples,
                batch_size=64,
                random_seed=0,
            )

    return bench.Candidate("peer", run_lime)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    p.add_argument("--model", default="resnet18", help="model name (random weights)")
    p.add_argument("--methods", nargs="+", default=["gradcam", "lime"], choices=["gradcam", "lime"])
    p.add_argument("--engines", nargs="+", default=["local"], help=f"among {', '.join(ENGINES)}")
    p.add_argument("--images", type=int, default=8, help="images per call")
    p.add_argument("--lime-samples", type=int, default=200, help="LIME's perturbed samples")
    bench.add_rounds(p, repeats=3, warmup=1)
    p.add_argument("--no-peer", action="store_true", help="skip the peer libraries")
    bench.add_threads(p)
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the raw numbers here")
    args = p.parse_args(argv)
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown:
        p.error(f"unknown engine(s) {', '.join(unknown)}: use {', '.join(ENGINES)}")
    return args


HEADERS = (
    "method",
    "candidate",
    "s/img",
    "images/s",
    "vs",
    "ratio",
    "ratio@min",
    "cpu ratio",
    "target",
    "status",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the environment header and the Markdown table."""
    args = _parse(argv)
    env, begun = bench.begin_run(args.threads)
    torch.manual_seed(0)
    vm = seethrough.load_model(args.model, weights="none")
    rows, statuses, raw = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        paths = digit_images(scratch / "images", args.images)
        for method in args.methods:
            params = {"n_samples": args.lime_samples} if method == "lime" else {}
            candidates = [_loop(vm, paths, method, params)]
            candidates += [
                _audit(vm, scratch / "images", method, params, e, scratch) for e in args.engines
            ]
            if not args.no_peer:
                candidates.append(_peer(vm, paths, method, args.lime_samples))
            for c in candidates:
                c.units = len(paths)
            t = bench.timed(method, candidates, args.repeats, args.warmup)
            raw[method] = {k: v.to_dict() for k, v in t.items()}
            for name, timing in t.items():
                cells = [method, name, bench.seconds(timing.median), f"{1 / timing.median:.2f}"]
                engine = name.partition(":")[2]
                if name.startswith("audit:"):
                    _, versus, target = ENGINES[engine]
                    cols = bench.ratio_columns(timing, t[versus])
                    checks = (cols["ratio_at_min"], cols["cpu_ratio"])
                    status = bench.verdict(cols["ratio"], checks, target)
                    statuses.append(status)
                    cells += [
                        versus,
                        f"{cols['ratio']:.2f}",
                        f"{cols['ratio_at_min']:.2f}",
                        f"{cols['cpu_ratio']:.2f}",
                        f"<= {target:.2f}",
                        status,
                    ]
                elif name == "peer":
                    ratio = bench.paired_ratio(t["loop"], timing)
                    cells += ["loop/peer", f"{ratio:.2f}", "-", "-", "-", "-"]
                else:
                    cells += ["-"] * 6
                rows.append(cells)
    bench.print_header(f"audit speed ({args.model}, {args.images} images)", env)
    print(bench.markdown_table(HEADERS, rows))
    print(bench.status_line(statuses))
    if args.json is not None:
        bench.save_json(args.json, env, args, time.perf_counter() - begun, raw)
    return 0 if all(s.startswith("PASS") for s in statuses) else 1


if __name__ == "__main__":
    raise SystemExit(main())
