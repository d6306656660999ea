"""``seethrough compare``, ``seethrough benchmark`` and ``seethrough cost``: numbers about methods.

- ``compare``: several models x several methods on a folder of images with masks; a table of
  IoU (with its 95% confidence interval), pointing game, deletion / insertion AUC, top-1 and
  seconds, written as CSV, Markdown and a self-contained HTML report; segmenters are ranked per
  class mask and detectors per ground-truth box (``--truth``);
- ``benchmark``: every method on generated digits with known masks and the small CNN trained on
  them (trained once, then cached), next to the random and centre baselines;
- ``cost``: every method on one model and image, in seconds, model evaluations and forward
  passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import errors
from ..evaluation import (
    Evaluation,
    Sample,
    cost_table,
    evaluate,
    load_folder,
    write_report,
)
from ..evaluation.report import columns_for, format_value
from ..evaluation.runner import DEFAULT_METRICS, METRICS, TRUTHS
from ..images import load_image
from ..models import VisionModel, load_model
from ._shared import (
    DeviceOpt,
    WeightsOpt,
    app,
    check_output_folder,
    console,
    method_names,
    params_for,
    progress_bar,
)

MethodsOpt = Annotated[
    str, typer.Option(help="Comma-separated method names, or 'all' (see `seethrough methods`).")
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Method parameter NAME=VALUE (repeatable)."),
]
MetricsOpt = Annotated[
    str,
    typer.Option(help=f"Comma-separated metrics, from: {', '.join(METRICS)} (or 'all')."),
]
StepsOpt = Annotated[int, typer.Option(min=2, help="Steps of the deletion and insertion curves.")]
ALL_METRICS = ",".join(DEFAULT_METRICS)
OutOpt = Annotated[Path, typer.Option(help="Output folder of the CSV, Markdown and HTML report.")]


def _metrics(text: str) -> list[str]:
    if text.strip().lower() == "all":
        return list(METRICS)
    names = [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        if name not in METRICS:
            raise errors.InvalidParameterError(
                f"unknown metric '{name}'.{errors.suggest(name, METRICS)} Use: {', '.join(METRICS)}"
            )
    return names


def _run(
    models: Sequence[VisionModel], samples: Sequence[Sample], methods: list[str], **kw: Any
) -> Evaluation:
    with progress_bar() as bar:
        task = bar.add_task("evaluating", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return evaluate(models, samples, methods, progress=tick, **kw)


def _print(evaluation: Evaluation, title: str) -> None:
    """The summary as a table: whole on a terminal's width, unclipped when piped to a file."""
    columns = columns_for(evaluation)
    if len(evaluation.models) == 1:  # one model: named in the title, not on every row
        columns = [(k, h) for k, h in columns if k != "model"]
        title = f"{evaluation.models[0]}: {title}"
    rows = evaluation.summary()
    cells = [
        ["n/a" if r.error and k == "n" else format_value(getattr(r, k), k) for k, _ in columns]
        for r in rows
    ]
    sections = [i for i in range(1, len(rows)) if rows[i].model != rows[i - 1].model]
    dim = [r.method.startswith("baseline:") for r in rows]
    _show(title, [h for _, h in columns], cells, sections, dim)
    _notes(
        {
            f"{r.model} / {r.method}" if len(evaluation.models) > 1 else r.method: r.error
            for r in rows
        }
    )


def _notes(errors: dict[str, str | None]) -> None:
    """Below a table: why each n/a row could not run."""
    for name, error in errors.items():
        if error is not None:
            console.print(f"n/a {name}: {error}", markup=False, style="dim", soft_wrap=True)


def _show(
    title: str,
    heads: list[str],
    cells: list[list[str]],
    sections: list[int] | None = None,
    dim: list[bool] | None = None,
) -> None:
    """A table whose names stay whole: on a terminal's width, unclipped when piped to a file.

    Columns whose cells are all text (no digit first) are left-aligned, numbers right-aligned;
    a section line goes before each row index in ``sections``; ``dim`` rows are greyed out.
    """
    table = Table(title=title)
    widths = []
    for i, head in enumerate(heads):
        column = [c[i] for c in cells]
        width = max([len(head)] + [len(c) for c in column])
        widths.append(width + 3)
        text = any(c and c != "n/a" and not (c[0].isdigit() or c[0] == "-") for c in column)
        table.add_column(head, justify="left" if text else "right", min_width=width)
    for i, texts in enumerate(cells):
        if sections and i in sections:
            table.add_section()
        table.add_row(*texts, style="dim" if dim and dim[i] else None)
    wide = None if console.is_terminal else max(console.width, sum(widths) + 1)
    console.print(table, width=wide, crop=wide is None)


def _write(evaluation: Evaluation, out: Path) -> None:
    paths = write_report(evaluation, out)
    console.print(
        f"wrote {paths['csv']}, {paths['md'].name}, {paths['html'].name}",
        markup=False,
        soft_wrap=True,
    )


COMPARE_HELP = (
    "Compare models on your own images with object masks: which explains them best.\n\n"
    "Explains every image of --data with every model and method, then scores each map against "
    "the object's mask (IoU with its 95% confidence interval, pointing game) and against the "
    "model (deletion and insertion AUC), with top-1 and seconds per image, next to a random map "
    "and a centre Gaussian. Prints the table and writes it as CSV, Markdown and a self-contained "
    "HTML report with the best and worst case of each model and method.\n\n"
    "Segmenters are scored per class present in each image (the class's mask explained, "
    "against its ground-truth mask) and detectors per object (its ground-truth box matched to "
    "a predicted box, the map against the object's pixels); 'found' is the share of objects "
    "explained. A Pascal VOC folder gives the classes (and SegmentationObject/ the objects)."
)


@app.command("compare", help=COMPARE_HELP)
def compare_cmd(
    models: Annotated[str, typer.Option(help="Comma-separated model names or files.")],
    data: Annotated[
        Path, typer.Option(help="Folder: images/ + masks/ (+ labels.csv), or Pascal VOC.")
    ],
    methods: MethodsOpt = "gradcam,gradcam++",
    weights: WeightsOpt = "default",
    split: Annotated[str | None, typer.Option(help="VOC image set (default: val).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use at most this many images.")] = None,
    target: Annotated[
        str,
        typer.Option(help="'predicted' (each model's top class) or 'label' (labels.csv)."),
    ] = "predicted",
    truth: Annotated[
        str,
        typer.Option(
            help="What maps are scored against: 'auto' (by each model's task), 'image' "
            "(a classifier's class vs the object mask), 'masks' (a segmenter, per class "
            "present) or 'boxes' (a detector, per object)."
        ),
    ] = "auto",
    metrics: MetricsOpt = ALL_METRICS,
    steps: StepsOpt = 20,
    param: ParamOpt = None,
    device: DeviceOpt = "cpu",
    out: OutOpt = Path("outputs/compare"),
) -> None:
    """Compare models on your own images with object masks: which explains them best."""
    names = method_names(methods)
    params = params_for(names, param)
    chosen = _metrics(metrics)
    if truth not in TRUTHS:
        raise errors.InvalidParameterError(f"--truth {truth}: choose one of {', '.join(TRUTHS)}")
    check_output_folder(out)
    dataset = load_folder(data, split=split, limit=limit)
    loaded = [load_model(m.strip(), weights=weights, device=device) for m in models.split(",")]
    evaluation = _run(
        loaded,
        dataset,
        names,
        metrics=chosen,
        target=target,
        params=params,
        steps=steps,
        truth=truth,
    )
    evaluation.settings.update(data=str(data), layout=dataset.layout, images=len(dataset))
    _print(evaluation, f"{len(dataset)} images of {data}")
    _write(evaluation, out)


@app.command("benchmark")
def benchmark_cmd(
    n: Annotated[int, typer.Option("-n", min=1, help="Held-out images to evaluate.")] = 20,
    methods: MethodsOpt = "all",
    seed: Annotated[int, typer.Option(help="Seed of the generated images.")] = 0,
    metrics: MetricsOpt = ALL_METRICS,
    steps: StepsOpt = 20,
    param: ParamOpt = None,
    out: OutOpt = Path("outputs/benchmark"),
) -> None:
    """Every method on generated digits with known masks, with a small CNN trained on them."""
    from ..datasets.synthetic import make_digits

    names = method_names(methods)
    params = params_for(names, param)
    chosen = _metrics(metrics)
    check_output_folder(out)
    vm = load_model("synthetic_digits")
    digits = make_digits(n, split="test", seed=seed)
    samples = [
        Sample(f"digit{i:04d}", digits.images[i], digits.masks[i], int(digits.labels[i]))
        for i in range(n)
    ]
    evaluation = _run([vm], samples, names, metrics=chosen, params=params, steps=steps)
    evaluation.settings.update(images=n, data=f"synthetic digits (test split, seed {seed})")
    _print(evaluation, f"{n} generated digit images (ground-truth class explained)")
    _write(evaluation, out)


@app.command("cost")
def cost_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name or file.")] = (
        "efficientnet_lite0"
    ),
    image: Annotated[str, typer.Option(help="Image to explain.")] = "sample:chelsea",
    methods: MethodsOpt = "all",
    weights: WeightsOpt = "default",
    repeats: Annotated[int, typer.Option(min=1, help="Calls per method; the best is shown.")] = 1,
    param: ParamOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """The cost of every method on one model and image: seconds, model evaluations, forwards."""
    names = method_names(methods)
    params = params_for(names, param)
    vm = load_model(model, weights=weights, device=device)
    with progress_bar() as bar:
        task = bar.add_task("timing", total=len(names))

        def tick(name: str) -> None:
            bar.update(task, description=name, completed=names.index(name))

        forward, rows = cost_table(
            vm, load_image(image), names, params=params, repeats=repeats, progress=tick
        )
    heads = ["method", "family", "seconds", "model calls", "images evaluated", "x forward"]
    cells = [
        [r.title, r.family, "n/a", "", "", ""]
        if r.error is not None
        else [r.title, r.family, f"{r.seconds:.3f}", str(r.calls), str(r.images), f"{r.ratio:.1f}"]
        for r in rows
    ]
    _show(f"cost on {vm.name}, one image (forward pass: {forward * 1e3:.1f} ms)", heads, cells)
    _notes({r.title: r.error for r in rows})
