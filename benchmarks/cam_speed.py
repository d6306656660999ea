"""Speed of seethrough's CAM methods against the model's own floor and against pytorch-grad-cam.

What is measured, for each model and batch size (defaults: resnet50 with random weights and the
bundled efficientnet_lite0, batches 1 and 16, 224x224 random model input), all in ONE
interleaved run (see ``_timing.py``: warm-up, then round-robin over the candidates, median and
min of the repeats):

- ``seethrough.explain(model, x, method)``, the whole public call (input checks, display images,
  the method, upsampling to 224x224, numpy conversion), for every CAM method;
- two floors on the same model and input, in eval mode with frozen parameters (as ``explain``
  runs the model):

  * ``forward``: ``model(x)`` under ``torch.no_grad()``;
  * ``fwd+bwd``: ``model(x)`` with ``x.requires_grad_(True)``, then
    ``torch.autograd.grad(out.gather(1, top).sum(), x)``: the score of the top class
    differentiated down to the INPUT;

- pytorch-grad-cam's class for the same method where it has one (GradCAM, GradCAMPlusPlus,
  XGradCAM, LayerCAM, HiResCAM, EigenCAM), on CPU, same layer, ``targets=None`` (top class),
  constructed and released inside each timed call as ``explain`` builds its method per call.

How to read the ratios (all seconds are per image: a batch call's time divided by its size):

- ``ratio`` is the median over rounds of (method time / floor time) within the same round, so a
  load drift slower than one round cancels. Gradient methods (gradcam, gradcam++, xgradcam,
  layercam, hirescam) are compared with ``fwd+bwd`` and must stay within 1.15x; cam and eigencam
  with ``forward`` and must stay within 1.10x. A gradient CAM only backpropagates down to its
  layer, so it should sit well below 1; above the target means overhead outside the network.
- ``ratio@min`` is min(method) / min(floor), the best case of each, and ``cpu ratio`` the paired
  median ratio of process CPU times (all threads), which a preempted call barely inflates. When
  either gives the other verdict than ``ratio``, the status gets a ``?``: the machine was too
  busy to call it; re-run with more repeats (or on a quiet machine).
- ``scorecam`` (only with ``--scorecam``, batch 1 only) is compared with C forwards, C being the
  layer's channel count and one forward the batch-1 ``forward`` floor. It evaluates C masked
  inputs in batches of 32, which can beat C single forwards or, where a large batch is
  memory-bound (as on small CPUs), lose to them. It has no target.
- ``ours/grad-cam`` is seethrough's median over pytorch-grad-cam's (below 1: seethrough is
  faster). pytorch-grad-cam calls ``loss.backward()``, so it also computes every parameter's
  gradient, and its EigenCAM runs the forward with autograd on.
- ``spread`` is (max - min) / median of our samples: how busy the machine was. On a machine
  shared with other CPU-bound jobs, torch's OpenMP threads stall at every parallel region while
  a sibling thread is descheduled (and spin, burning CPU time): a 20 ms forward can take seconds
  and even CPU ratios drift. ``--threads 1`` avoids that (no barriers, and CPU time then ignores
  preemption) at the price of measuring single-thread ratios, in which a fixed per-call overhead
  looks smaller than with more threads (the network part takes longer).

Cost control (a resnet50 batch of 16 is ~16x a batch of 1): larger batches run
``--large-batch-repeats`` rounds, warm up one candidate per code path only (the floors, one of our
gradient CAMs, cam, eigencam, one grad-cam gradient class, grad-cam's EigenCAM), and time
pytorch-grad-cam ``--theirs-large-batch-repeats`` times (in the first rounds).

Run: ``.venv/bin/python benchmarks/cam_speed.py [--json benchmarks/results/cam_speed.json]``.
The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _timing as bench
import torch
from torch import nn

import seethrough
from seethrough.core.layers import resolve_layer
from seethrough.models import VisionModel

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
FORWARD_METHODS = ("cam", "eigencam")
ALL_METHODS = ("cam", *GRADIENT_METHODS, "scorecam", "eigencam")  # registry order
DEFAULT_METHODS = tuple(m for m in ALL_METHODS if m != "scorecam")
GRADIENT_TARGET = 1.15
FORWARD_TARGET = 1.10
THEIRS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
}
FORWARD, BACKWARD = "floor:forward", "floor:fwd+bwd"


@dataclass
class Config:
    """One model at one batch size, with the results of its interleaved run."""

    model: str
    batch: int
    layer: str
    layer_shape: tuple[int, ...]
    timings: dict[str, bench.Timing] = field(default_factory=dict)


# ------------------------------------------------------------------------------ candidates


def _load(name: str) -> VisionModel:
    """The bundled model with its real weights, any other model with random weights (offline)."""
    weights = "default" if name == "efficientnet_lite0" else "none"
    return seethrough.load_model(name, weights=weights)


def _floors(module: nn.Module, x: torch.Tensor) -> list[bench.Candidate]:
    """The plain forward and the forward + backward of the top-class score to the input."""

    def forward() -> None:
        with torch.no_grad():
            module(x)

    def forward_backward() -> None:
        xi = x.detach().requires_grad_(True)
        out = module(xi)
        top = out.argmax(dim=1, keepdim=True)
        torch.autograd.grad(out.gather(1, top).sum(), xi)

    n = x.shape[0]
    return [
        bench.Candidate(FORWARD, bench.frozen(module, forward), units=n),
        bench.Candidate(BACKWARD, bench.frozen(module, forward_backward), units=n),
    ]


def _ours(vm: VisionModel, x: torch.Tensor, method: str) -> bench.Candidate:
    """``seethrough.explain`` on the whole batch."""

    def run() -> None:
        seethrough.explain(vm, x, method)

    return bench.Candidate(f"ours:{method}", run, units=x.shape[0])


def _theirs(module: nn.Module, layer: nn.Module, x: torch.Tensor, method: str) -> bench.Candidate:
    """pytorch-grad-cam's class for ``method``, built and released inside the timed call."""
    import pytorch_grad_cam

    cls = getattr(pytorch_grad_cam, THEIRS[method])

    def run() -> None:
        cam = cls(model=module, target_layers=[layer])
        try:
            cam(input_tensor=x, targets=None)
        finally:  # not `with cam`: its __exit__ swallows IndexError
            cam.activations_and_grads.release()

    def cleanup() -> None:  # drop the parameter gradients its loss.backward() left behind
        module.zero_grad(set_to_none=True)

    return bench.Candidate(f"theirs:{method}", run, cleanup=cleanup, units=x.shape[0])


def _path(name: str) -> str:
    """The code path a candidate exercises (one warm-up per path suffices for large batches)."""
    side, _, method = name.partition(":")
    if side == "floor":
        return name
    return f"{side}:{'gradient' if method in GRADIENT_METHODS else method}"


def _candidates(
    vm: VisionModel, layer: nn.Module, x: torch.Tensor, args: argparse.Namespace
) -> tuple[list[bench.Candidate], int]:
    """Everything timed for one model and batch, and the number of rounds."""
    batch = x.shape[0]
    methods = set(args.methods) | ({"scorecam"} if args.scorecam and batch == 1 else set())
    out = _floors(vm.module, x)
    for method in (m for m in ALL_METHODS if m in methods):
        out.append(_ours(vm, x, method))
        if method in THEIRS and not args.no_theirs:
            out.append(_theirs(vm.module, layer, x, method))
    if batch == 1:
        for c in out:
            if c.name == "ours:scorecam":
                c.units, c.warmup, c.repeats = 1, 0, args.scorecam_repeats
        return out, args.repeats
    warmed: set[str] = set()
    for c in out:
        if _path(c.name) in warmed:
            c.warmup = 0
        warmed.add(_path(c.name))
        if c.name.startswith("theirs:"):
            c.repeats = args.theirs_large_batch_repeats
    return out, args.large_batch_repeats


def _layer_shape(module: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """Output shape of ``layer`` on one sample of ``x``."""
    shapes: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            module(x[:1])
    finally:
        handle.remove()
    return shapes[-1]


# ------------------------------------------------------------------------------- reporting


def _rows(cfg: Config, forward_b1: float | None) -> list[dict[str, Any]]:
    """One result row per floor and per method of ``cfg`` (seconds are per image)."""
    t = cfg.timings
    rows: list[dict[str, Any]] = [
        {"method": label, "median": t[key].median, "min": t[key].min, "spread": t[key].spread}
        for key, label in ((FORWARD, "(floor) forward"), (BACKWARD, "(floor) fwd+bwd"))
    ]
    for name in (n for n in ALL_METHODS if f"ours:{n}" in t):
        ours = t[f"ours:{name}"]
        row: dict[str, Any] = {
            "method": name,
            "median": ours.median,
            "min": ours.min,
            "spread": ours.spread,
        }
        floor = t[BACKWARD] if name in GRADIENT_METHODS else t[FORWARD]
        if name in GRADIENT_METHODS or name in FORWARD_METHODS:
            target = GRADIENT_TARGET if name in GRADIENT_METHODS else FORWARD_TARGET
            columns = bench.ratio_columns(ours, floor)
            checks = (columns["ratio_at_min"], columns["cpu_ratio"])
            row |= {
                "floor": "fwd+bwd" if name in GRADIENT_METHODS else "forward",
                **columns,
                "target": target,
                "status": bench.verdict(columns["ratio"], checks, target),
            }
        elif name == "scorecam" and forward_b1 is not None:
            channels = cfg.layer_shape[1]
            row |= {
                "floor": f"{channels} x forward",
                "ratio": ours.median / (channels * forward_b1),
                "ratio_at_min": ours.min / (channels * t[FORWARD].min),
            }
        theirs = t.get(f"theirs:{name}")
        if theirs is not None:
            row |= {"theirs": theirs.median, "ours_over_theirs": ours.median / theirs.median}
        rows.append(row)
    return rows


HEADERS = (
    *bench.FLOOR_HEADERS,
    "grad-cam s/img",
    "ours/grad-cam",
)


def _cells(cfg: Config, row: dict[str, Any]) -> list[str]:
    """The table cells of one result row."""
    oot = row.get("ours_over_theirs")
    if oot is None:
        versus = "-"
    else:
        versus = f"{oot:.2f} ({1 / oot:.1f}x faster)" if oot < 1 else f"{oot:.2f} (slower)"
    return [
        cfg.model,
        str(cfg.batch),
        row["method"],
        bench.seconds(row["median"]),
        bench.seconds(row["min"]),
        f"{row['spread']:.0%}",
        row.get("floor", "-"),
        f"{row['ratio']:.2f}" if "ratio" in row else "-",
        f"{row['ratio_at_min']:.2f}" if "ratio_at_min" in row else "-",
        f"{row['cpu_ratio']:.2f}" if "cpu_ratio" in row else "-",
        f"<= {row['target']:.2f}" if "target" in row else "-",
        row.get("status", "-"),
        bench.seconds(row["theirs"]) if "theirs" in row else "-",
        versus,
    ]


# ------------------------------------------------------------------------------------ main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    p.add_argument(
        "--models",
        nargs="+",
        default=["resnet50", "efficientnet_lite0"],
        help="model names (efficientnet_lite0 gets its bundled weights, others random weights)",
    )
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16], help="batch sizes")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=DEFAULT_METHODS,
        metavar="METHOD",
        help=f"CAM methods, among {', '.join(DEFAULT_METHODS)}",
    )
    p.add_argument(
        "--scorecam",
        action="store_true",
        help="also time scorecam at batch 1 (slow: C forwards, e.g. 2048 on resnet50)",
    )
    p.add_argument("--scorecam-repeats", type=int, default=1, help="timed scorecam calls")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds at batch 1")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per candidate first")
    p.add_argument("--large-batch-repeats", type=int, default=3, help="timed rounds at batches > 1")
    p.add_argument(
        "--theirs-large-batch-repeats",
        type=int,
        default=1,
        help="timed pytorch-grad-cam calls at batches > 1",
    )
    p.add_argument("--no-theirs", action="store_true", help="skip pytorch-grad-cam")
    bench.add_threads(p)
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the raw numbers here")
    args = p.parse_args(argv)
    counts = (args.repeats, args.large_batch_repeats, args.theirs_large_batch_repeats)
    if min(counts) < 1 or args.scorecam_repeats < 1 or args.warmup < 0:
        p.error("repeat counts must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the environment header and the Markdown table."""
    args = _parse(argv)
    env, wall = bench.begin_run(args.threads)
    configs: list[Config] = []
    forward_b1: dict[str, float] = {}
    for model_name in args.models:
        vm = _load(model_name)
        for batch in args.batches:
            gen = torch.Generator().manual_seed(args.seed)
            x = torch.randn(batch, 3, args.size, args.size, generator=gen)
            layer_name, layer = resolve_layer(vm.module, None, x, vm.default_layer)
            cfg = Config(model_name, batch, layer_name, _layer_shape(vm.module, layer, x))
            candidates, rounds = _candidates(vm, layer, x, args)
            label = f"{model_name} batch {batch}, layer {layer_name} {cfg.layer_shape}"
            cfg.timings = bench.timed(label, candidates, rounds, args.warmup)
            if batch == 1:
                forward_b1[model_name] = cfg.timings[FORWARD].median
            configs.append(cfg)
    total = time.perf_counter() - wall

    bench.print_header("CAM speed", env)
    print(
        f"- rounds: {args.repeats} at batch 1, {args.large_batch_repeats} at larger batches "
        f"(pytorch-grad-cam: {args.theirs_large_batch_repeats}); warm-up {args.warmup}; "
        f"input {args.size}x{args.size} random (seed {args.seed})"
    )
    for cfg in configs:
        if cfg.batch == args.batches[0]:
            print(f"- {cfg.model}: layer `{cfg.layer}`, activations {cfg.layer_shape[1:]}")
    print(f"- total benchmark time: {total:.0f} s\n")
    results: list[dict[str, Any]] = []
    table: list[list[str]] = []
    for cfg in configs:
        rows = _rows(cfg, forward_b1.get(cfg.model))
        table += [_cells(cfg, r) for r in rows]
        results.append(
            {
                "model": cfg.model,
                "batch": cfg.batch,
                "layer": cfg.layer,
                "layer_shape": list(cfg.layer_shape),
                "rows": rows,
                "timings": {k: v.to_dict() for k, v in cfg.timings.items()},
            }
        )
    print(bench.markdown_table(HEADERS, table))
    statuses = [r["status"] for res in results for r in res["rows"] if "status" in r]
    print(
        f"\n{bench.status_line(statuses)}. s/img = seconds per image; ratio = median over rounds of "
        "method / floor."
    )
    if args.json is not None:
        bench.save_json(args.json, env, args, total, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
