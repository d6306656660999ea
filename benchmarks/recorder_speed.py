"""The cost of an ExplanationRecorder against the training it watches: the demo's epoch.

What is measured, in ONE interleaved run (see ``_timing.py``: warm-up, then round-robin over
the candidates, median and min of the repeats):

- ``epoch``: one epoch of the training demo (:func:`seethrough.training.demo.train_epoch`: the
  benchmark's small CNN, :class:`~seethrough.models.digits.DigitsNet`, on ``--n-train``
  generated digits, 6000 as ``seethrough train-demo``, batches of 64, AdamW);
- ``record <method>``: ``rec.record(model, epoch)`` of a recorder on ``--probes`` held-out probe
  images (16 as the demo) with their masks and labels, one recorder per method (Grad-CAM and
  LIME by default): the explanations, the predictions, the pointing game, IoU and energy of
  every map, the saved random and module states, and the files written (maps, table), all of
  which the recorder's own ``recorder_seconds`` counts too.

The model keeps training between rounds, so every record sees a model in the middle of its
training, as in a real run. ``ratio`` is the median over rounds of (record time / epoch time)
within the same round, so a load drift slower than one round cancels; ``ratio@min`` is
min(record) / min(epoch) and ``cpu ratio`` the paired median of process CPU times. The target
is a Grad-CAM recorder under 5 % of an epoch (``PASS``/``FAIL``, ``?`` where a cross-check gives
the other verdict); LIME (1000 perturbed images per probe by default) is shown for its cost, with
no target: record it every few epochs (``every=``). The ratio shrinks as an epoch grows (more
training images), the recorder's cost being fixed by the probes.

Run: ``.venv/bin/python benchmarks/recorder_speed.py [--threads 1] [--json out.json]``;
``--tiny`` (256 training images, 4 probes, 50 LIME samples, one round) checks the script.
The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _timing import (
    Candidate,
    Timing,
    add_threads,
    begin_run,
    log,
    markdown_table,
    parser,
    print_header,
    ratios,
    save_json,
    status_line,
    timed,
    verdict,
)

from seethrough.datasets.synthetic import make_digits
from seethrough.models import load_model
from seethrough.training import ExplanationRecorder
from seethrough.training.demo import train_epoch

TARGETS = {"gradcam": 0.05}
"""Recorder seconds per epoch second; a method without a target is measured only."""
EPOCH = "epoch"
HEADERS = (
    "method",
    "probes",
    "record s median",
    "record s min",
    "epoch s median",
    "ratio",
    "ratio@min",
    "cpu ratio",
    "spread",
    "target",
    "status",
)


def main() -> None:
    """Parse the options, time the epoch and the recorders side by side, print the table."""
    p = parser(__doc__)
    p.add_argument("--methods", default="gradcam,lime", help="comma-separated methods to record")
    p.add_argument("--n-train", type=int, default=6000, help="training images per epoch")
    p.add_argument("--probes", type=int, default=16, help="probe images the recorders explain")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    add_threads(p)
    p.add_argument("--tiny", action="store_true", help="a configuration that checks the script")
    p.add_argument("--json", type=Path, help="also save the raw numbers here")
    args = p.parse_args()
    if args.tiny:
        args.n_train, args.probes, args.repeats = 256, 4, 1
    env, begun = begin_run(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    log(f"rendering {args.n_train} training digits and {args.probes} probes")
    train = make_digits(args.n_train, seed=0, split="train")
    held_out = make_digits(args.probes, seed=1, split="test")
    torch.manual_seed(0)
    model = load_model("synthetic_digits", weights="none")
    model.module.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.module.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.ConstantLR(optimiser, factor=1.0)
    order = torch.Generator().manual_seed(0)
    labels = torch.from_numpy(train.labels)
    epochs = iter(range(1, 10**6))

    def epoch() -> None:
        train_epoch(model, train.images, labels, optimiser, schedule, order, batch=64)

    with tempfile.TemporaryDirectory() as tmp:
        candidates = [Candidate(EPOCH, epoch)]
        for method in methods:
            params = {"lime": {"n_samples": 50}} if args.tiny and method == "lime" else None
            recorder = ExplanationRecorder(
                list(held_out.images),
                methods=(method,),
                masks=held_out.masks,
                labels=held_out.labels,
                out=Path(tmp, method),
                method_params=params,
            )
            recorder.check(model)
            candidates.append(
                Candidate(f"record {method}", lambda r=recorder: r.record(model, next(epochs)))
            )
        label = f"1 epoch and {len(methods)} recorders"
        timings = timed(label, candidates, args.repeats, warmup=0 if args.tiny else 1)

    rows, statuses, results = [], [], []
    base: Timing = timings[EPOCH]
    for method in methods:
        t = timings[f"record {method}"]
        ratio, at_min, cpu = ratios(t, base)
        target = TARGETS.get(method)
        status = "-" if target is None else verdict(ratio, (at_min, cpu), target, strict=True)
        if target is not None:
            statuses.append(status)
        rows.append(
            [
                method,
                str(args.probes),
                f"{t.median:.3f}",
                f"{t.min:.3f}",
                f"{base.median:.2f}",
                f"{ratio:.4f}",
                f"{at_min:.4f}",
                f"{cpu:.4f}",
                f"{t.spread:.2f}",
                "-" if target is None else f"< {target:.2f}",
                status,
            ]
        )
        results.append({"method": method, "ratio": ratio, "ratio_at_min": at_min, "cpu": cpu})
    total = time.perf_counter() - begun
    print_header("Recorder cost per epoch of the training demo", env)
    print(f"- one epoch: {args.n_train} generated digits, batches of 64, DigitsNet\n")
    print(markdown_table(HEADERS, rows))
    print(f"\n{status_line(statuses)}; total {total:.0f} s")
    if args.json is not None:
        raw = {name: t.to_dict() for name, t in timings.items()}
        save_json(args.json, env, args, total, {"timings": raw, "results": results})


if __name__ == "__main__":
    main()
