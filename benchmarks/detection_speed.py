"""Speed of seethrough on detectors and a segmenter: per box, k boxes, D-RISE, class masks.

What is measured, in ONE interleaved run per model (see ``_timing.py``: warm-up, then
round-robin over the candidates, median and min of the repeats), on torchvision's
``fasterrcnn_mobilenet_v3_large_320_fpn`` and ``ssdlite320_mobilenet_v3_large`` (random
weights, score threshold 0, so every image has boxes) and ``deeplabv3_mobilenet_v3_large``
(random weights), one random image each:

- ``seethrough.explain``, the whole public call (the clean forward that fixes the box or the
  mask, the method, the map mapped back to the image, numpy conversion):

  * ``gradcam`` of the top box (``Box(index=0)``) at the model's default layer;
  * ``gradcam`` of the top ``k`` boxes (default 4) in ONE call
    (``target=[Box(index=0), ..., Box(index=k-1)]``: one forward, ``k`` backwards), and the same
    ``k`` boxes as ``k`` separate calls;
  * ``drise`` of the top box with ``N`` masks (``--drise-samples``);
  * ``gradcam`` of the segmenter's most frequent predicted class (``Mask(c)``);

- the model's own passes on the same input, with frozen parameters (as ``explain`` runs it):

  * ``forward``: ``module([x])`` under ``torch.no_grad()``;
  * ``fwd+bwd``: ``module([x])`` with ``x.requires_grad_(True)``, then
    ``torch.autograd.grad`` of the top box's score (``output[0]["scores"][0]``) down to the
    INPUT; for the segmenter, the mean logit of the class over its predicted pixels;
  * ``fwd+k bwd``: the same forward, then one ``torch.autograd.grad`` per box (graph retained)
    of each of the top ``k`` boxes' scores;

- pytorch-grad-cam's ``GradCAM`` with its documented targets, at equal settings (same model,
  image, layer and box or mask): ``FasterRCNNBoxScoreTarget(labels, bounding_boxes)`` for a box
  and ``SemanticSegmentationTarget(category, mask)`` for the segmenter (wrapped to return
  ``["out"]``, as its tutorial does). Built and released inside each timed call. Its boxes are
  given to it, computed before the timing (its tutorial runs the detector once more for them),
  which favours it. Its FPN recipe (``target_layers=[model.backbone]`` with
  ``fasterrcnn_reshape_transform``) works for its gradient-free EigenCAM only: the backbone
  returns a dict, on which its ``GradCAM`` records no gradient, so ``GradCAM`` takes the
  backbone's last feature map, the layer seethrough uses. It calls ``loss.backward()``, which
  also computes every parameter's gradient.

Rows and targets (ratios: median over rounds of ours / floor in the same round; ``ratio@min``
min / min; ``cpu ratio`` of process CPU times; a ``?`` where those disagree with the verdict):

- per-box Grad-CAM / fwd+bwd: <= 1.15;
- k boxes in one call / fwd+k bwd: <= 1.15 (k boxes cost one forward plus k backwards);
- k boxes in one call / k separate calls: reported (below 1: what the shared forward saves);
- D-RISE (N masks) / N forwards (N times the batch-1 forward's median): reported;
- class-mask Grad-CAM / fwd+bwd: <= 1.15;
- ours / pytorch-grad-cam at equal settings: < 1.0.

``--threads 1`` is recommended on a shared machine (see ``cam_speed.py``). ``--tiny`` runs a
seconds-long configuration (64-pixel images, 8 D-RISE masks, one round, no warm-up) that checks
the script, not the speed.

Run: ``.venv/bin/python benchmarks/detection_speed.py --threads 1 [--json PATH]``.
The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _timing as bench
import numpy as np
import torch
from torch import nn

import seethrough
from seethrough.models import VisionModel
from seethrough.targets import Box, Mask

DETECTORS = ("fasterrcnn_mobilenet_v3_large_320_fpn", "ssdlite320_mobilenet_v3_large")
SEGMENTER = "deeplabv3_mobilenet_v3_large"
GRADIENT_TARGET = 1.15
THEIRS_TARGET = 1.0
FORWARD, BACKWARD, BACKWARDS = "floor:forward", "floor:fwd+bwd", "floor:fwd+k bwd"


@dataclass
class Setup:
    """One model, its input and what the candidates explain, with the run's timings."""

    name: str
    vm: VisionModel
    x: torch.Tensor
    layer: str
    note: str = ""
    timings: dict[str, bench.Timing] = field(default_factory=dict)


# ------------------------------------------------------------------------------ helpers


def _no_grads(module: nn.Module) -> Callable[[], None]:
    """Drop the parameter gradients pytorch-grad-cam's ``loss.backward()`` leaves behind."""
    return lambda: module.zero_grad(set_to_none=True)


def _forwards(module: nn.Module) -> list[int]:
    """A counter of ``module``'s forward calls (the hook stays: the module is the run's own)."""
    calls = [0]

    def hook(_module: nn.Module, _args: tuple) -> None:
        calls[0] += 1

    module.register_forward_pre_hook(hook)
    return calls


# --------------------------------------------------------------------------- detectors


def _detector(name: str, args: argparse.Namespace) -> Setup:
    torch.manual_seed(args.seed)
    vm = seethrough.load_model(name, weights="none", score_threshold=0.0)
    size = args.size
    if args.tiny:
        vm.module.transform.min_size = (size,)
        vm.module.transform.max_size = 2 * size
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(3, size, size, generator=gen)
    assert vm.default_layer is not None
    return Setup(name, vm, x, vm.default_layer)


def _detector_candidates(s: Setup, args: argparse.Namespace) -> list[bench.Candidate]:
    """Floors, our calls and pytorch-grad-cam's for one detector."""
    module, x, k = s.vm.module, s.x, args.boxes
    boxes = s.vm.predict(x)
    if len(boxes) < k:
        raise SystemExit(f"{s.name} found {len(boxes)} boxes, fewer than --boxes {k}")

    def forward() -> None:
        with torch.no_grad():
            module([x])

    def backward(count: int) -> Callable[[], None]:
        def run() -> None:
            xi = x.detach().requires_grad_(True)
            scores = module([xi])[0]["scores"]
            for j in range(count):
                torch.autograd.grad(scores[j], xi, retain_graph=j < count - 1)

        return run

    targets = [Box(index=j) for j in range(k)]
    out = [
        bench.Candidate(FORWARD, bench.frozen(module, forward)),
        bench.Candidate(BACKWARD, bench.frozen(module, backward(1))),
        bench.Candidate(BACKWARDS, bench.frozen(module, backward(k))),
        bench.Candidate(
            "ours:box", lambda: seethrough.explain(s.vm, x, "gradcam", target=targets[0])
        ),
        bench.Candidate(
            "ours:k boxes", lambda: seethrough.explain(s.vm, x, "gradcam", target=targets)
        ),
        bench.Candidate(
            "ours:k calls",
            lambda: [seethrough.explain(s.vm, x, "gradcam", target=t) for t in targets],
        ),
    ]
    if not args.no_drise:
        out.append(
            bench.Candidate(
                "ours:drise",
                lambda: seethrough.explain(
                    s.vm, x, "drise", target=targets[0], n_samples=args.drise_samples
                ),
                repeats=args.drise_repeats,
                warmup=0,
            )
        )
    if not args.no_theirs:
        out.append(_theirs_box(s, boxes[0]))
    return out


def _theirs_box(s: Setup, top: Any) -> bench.Candidate:
    """pytorch-grad-cam's GradCAM with ``FasterRCNNBoxScoreTarget`` on the top box."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    module = s.vm.module
    layer = s.vm.make_runner().resolve_layer(s.layer)[1]
    label = s.vm.labels.index(top.label)
    target = FasterRCNNBoxScoreTarget(labels=[label], bounding_boxes=[np.asarray(top.box)])
    batch = s.x[None]

    def run() -> None:
        cam = GradCAM(model=module, target_layers=[layer])
        try:
            cam(input_tensor=batch, targets=[target])
        finally:  # not `with cam`: its __exit__ swallows IndexError
            cam.activations_and_grads.release()

    return bench.Candidate("theirs:box", run, cleanup=_no_grads(module))


# ---------------------------------------------------------------------------- segmenter


class _Out(nn.Module):
    """pytorch-grad-cam's tutorial wrapper: a segmenter's ``["out"]`` logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _segmenter(args: argparse.Namespace) -> tuple[Setup, int, torch.Tensor]:
    torch.manual_seed(args.seed)
    vm = seethrough.load_model(SEGMENTER, weights="none")
    size = args.size if args.tiny else args.seg_size
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(3, size, size, generator=gen)
    with torch.no_grad():
        predicted = vm.module(x[None])["out"][0].argmax(0)
    counts = torch.bincount(predicted.flatten())
    cls = int(counts.argmax())
    assert vm.default_layer is not None
    setup = Setup(SEGMENTER, vm, x, vm.default_layer, note=f"class {cls}")
    return setup, cls, predicted == cls


def _segmenter_candidates(
    s: Setup, cls: int, pixels: torch.Tensor, args: argparse.Namespace
) -> list[bench.Candidate]:
    module, x = s.vm.module, s.x
    weights = pixels.float()

    def forward() -> None:
        with torch.no_grad():
            module(x[None])

    def forward_backward() -> None:
        xi = x[None].detach().requires_grad_(True)
        logits = module(xi)["out"][0, cls]
        torch.autograd.grad((logits * weights).sum() / weights.sum(), xi)

    target = Mask(cls)
    out = [
        bench.Candidate(FORWARD, bench.frozen(module, forward)),
        bench.Candidate(BACKWARD, bench.frozen(module, forward_backward)),
        bench.Candidate("ours:mask", lambda: seethrough.explain(s.vm, x, "gradcam", target=target)),
    ]
    if not args.no_theirs:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

        wrapped = _Out(module)
        layer = s.vm.make_runner().resolve_layer(s.layer)[1]
        theirs_target = SemanticSegmentationTarget(cls, pixels.float().numpy())

        def theirs() -> None:
            cam = GradCAM(model=wrapped, target_layers=[layer])
            try:
                cam(input_tensor=x[None], targets=[theirs_target])
            finally:
                cam.activations_and_grads.release()

        out.append(bench.Candidate("theirs:mask", theirs, cleanup=_no_grads(module)))
    return out


# ------------------------------------------------------------------------------ reporting


def _verdict(
    ours: bench.Timing, floor: bench.Timing, target: float, strict: bool = False
) -> dict[str, Any]:
    """Ratio, ratio at min, CPU ratio, target and PASS/FAIL (``?`` where they disagree)."""
    row: dict[str, Any] = bench.ratio_columns(ours, floor)
    return row | {
        "target": f"{'<' if strict else '<='} {target:.2f}",
        "status": bench.verdict(
            row["ratio"], (row["ratio_at_min"], row["cpu_ratio"]), target, strict=strict
        ),
    }


def _row(
    what: str, ours: bench.Timing, floor_name: str, floor: bench.Timing | None = None, **extra: Any
) -> dict[str, Any]:
    row = {
        "row": what,
        "ours": ours.median,
        "ours_min": ours.min,
        "spread": ours.spread,
        "floor": floor_name,
        "floor_s": floor.median if floor is not None else extra.pop("floor_s", float("nan")),
    }
    return row | extra


def _detector_rows(s: Setup, args: argparse.Namespace) -> list[dict[str, Any]]:
    t, k = s.timings, args.boxes
    rows = [
        _row(
            "gradcam, top box",
            t["ours:box"],
            "fwd+bwd",
            t[BACKWARD],
            **_verdict(t["ours:box"], t[BACKWARD], GRADIENT_TARGET),
        ),
        _row(
            f"gradcam, {k} boxes in one call",
            t["ours:k boxes"],
            f"fwd+{k} bwd",
            t[BACKWARDS],
            **_verdict(t["ours:k boxes"], t[BACKWARDS], GRADIENT_TARGET),
        ),
        _row(
            f"gradcam, {k} boxes in one call",
            t["ours:k boxes"],
            f"{k} calls (ours)",
            t["ours:k calls"],
            **bench.ratio_columns(t["ours:k boxes"], t["ours:k calls"]),
        ),
    ]
    if "ours:drise" in t:
        n, fwd = args.drise_samples, t[FORWARD]
        rows.append(
            _row(
                f"drise, {n} masks",
                t["ours:drise"],
                f"{n} x forward",
                floor_s=n * fwd.median,
                ratio=t["ours:drise"].median / (n * fwd.median),
                ratio_at_min=t["ours:drise"].min / (n * fwd.min),
            )
        )
    if "theirs:box" in t:
        rows.append(
            _row(
                "gradcam, top box",
                t["ours:box"],
                "grad-cam GradCAM",
                t["theirs:box"],
                **_verdict(t["ours:box"], t["theirs:box"], THEIRS_TARGET, strict=True),
            )
        )
    return rows


def _segmenter_rows(s: Setup) -> list[dict[str, Any]]:
    t = s.timings
    rows = [
        _row(
            "gradcam, class mask",
            t["ours:mask"],
            "fwd+bwd",
            t[BACKWARD],
            **_verdict(t["ours:mask"], t[BACKWARD], GRADIENT_TARGET),
        )
    ]
    if "theirs:mask" in t:
        rows.append(
            _row(
                "gradcam, class mask",
                t["ours:mask"],
                "grad-cam GradCAM",
                t["theirs:mask"],
                **_verdict(t["ours:mask"], t["theirs:mask"], THEIRS_TARGET, strict=True),
            )
        )
    return rows


HEADERS = (
    "model",
    "ours",
    "s median",
    "s min",
    "spread",
    "against",
    "its s",
    "ratio",
    "ratio@min",
    "cpu ratio",
    "target",
    "status",
)


def _cells(model: str, row: dict[str, Any]) -> list[str]:
    def num(key: str) -> str:
        return f"{row[key]:.2f}" if key in row else "-"

    return [
        model,
        row["row"],
        bench.seconds(row["ours"]),
        bench.seconds(row["ours_min"]),
        f"{row['spread']:.0%}",
        row["floor"],
        bench.seconds(row["floor_s"]),
        num("ratio"),
        num("ratio_at_min"),
        num("cpu_ratio"),
        row.get("target", "report"),
        row.get("status", "-"),
    ]


# ----------------------------------------------------------------------------------- main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    p.add_argument("--detectors", nargs="*", default=list(DETECTORS), help="torchvision detectors")
    p.add_argument("--no-segmenter", action="store_true", help=f"skip {SEGMENTER}")
    p.add_argument("--boxes", type=int, default=4, help="k: boxes explained in one call")
    p.add_argument("--drise-samples", type=int, default=100, help="D-RISE's masks (N)")
    p.add_argument("--drise-repeats", type=int, default=2, help="timed D-RISE calls")
    p.add_argument("--no-drise", action="store_true", help="skip D-RISE")
    p.add_argument("--no-theirs", action="store_true", help="skip pytorch-grad-cam")
    bench.add_rounds(p, repeats=5, warmup=1)
    p.add_argument("--size", type=int, default=320, help="detector image height and width")
    p.add_argument("--seg-size", type=int, default=520, help="segmenter input height and width")
    bench.add_threads(p)
    p.add_argument(
        "--tiny",
        action="store_true",
        help="a seconds-long check of the script: 64-pixel images, 8 D-RISE masks, 1 round",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the images")
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the raw numbers here")
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.drise_samples, args.repeats, args.warmup = 64, 8, 1, 0
        args.drise_repeats = 1
    if min(args.repeats, args.drise_repeats, args.boxes, args.drise_samples) < 1:
        p.error("repeat counts, --boxes and --drise-samples must be >= 1")
    if args.warmup < 0 or (args.threads is not None and args.threads < 1):
        p.error("--warmup must be >= 0 and --threads >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the environment header and the Markdown table."""
    args = _parse(argv)
    env, wall = bench.begin_run(args.threads)
    done: list[tuple[Setup, list[dict[str, Any]]]] = []
    checks: list[str] = []
    for name in args.detectors:
        s = _detector(name, args)
        calls = _forwards(s.vm.module)
        seethrough.explain(s.vm, s.x, "gradcam", target=[Box(index=j) for j in range(args.boxes)])
        checks.append(f"{name}: {args.boxes} boxes in one call ran {calls[0]} forward(s)")
        s.timings = bench.timed(s.name, _detector_candidates(s, args), args.repeats, args.warmup)
        done.append((s, _detector_rows(s, args)))
    if not args.no_segmenter:
        s, cls, pixels = _segmenter(args)
        s.note += f", {int(pixels.sum())} of {pixels.numel()} pixels"
        cands = _segmenter_candidates(s, cls, pixels, args)
        s.timings = bench.timed(s.name, cands, args.repeats, args.warmup)
        done.append((s, _segmenter_rows(s)))
    total = time.perf_counter() - wall

    bench.print_header("Detection and segmentation speed", env)
    print(
        f"- rounds: {args.repeats}, warm-up {args.warmup}; detector images {args.size}x"
        f"{args.size}, segmenter {args.size if args.tiny else args.seg_size} (random, seed "
        f"{args.seed}); random weights, score threshold 0"
    )
    for s, _ in done:
        print(f"- {s.name}: layer `{s.layer}`{'; ' + s.note if s.note else ''}")
    for line in checks:
        print(f"- {line}")
    print(f"- total benchmark time: {total:.0f} s\n")
    table = [_cells(s.name, r) for s, rows in done for r in rows]
    print(bench.markdown_table(HEADERS, table))
    statuses = [r["status"] for _, rows in done for r in rows if "status" in r]
    print(
        f"\n{bench.status_line(statuses)}. Seconds per call; ratio = median over rounds of ours / the "
        "other candidate in the same round."
    )
    if args.json is not None:
        results = [
            {
                "model": s.name,
                "layer": s.layer,
                "rows": rows,
                "timings": {k: v.to_dict() for k, v in s.timings.items()},
            }
            for s, rows in done
        ]
        bench.save_json(args.json, env, args, total, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
