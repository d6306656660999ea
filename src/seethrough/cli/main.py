"""``seethrough`` command: models, methods, layers, predict, explain, demo, dashboard (and, from
``evaluate``: compare, benchmark, cost).

Every expected failure (bad image, unknown model, method, layer or class, bad parameter, and
every usage error: a missing argument, an unknown option or command) prints one line
``error: ...`` on stderr and exits with code 2; no traceback. Ctrl-C exits with code 130 and says
what was finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
import warnings
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from .. import errors
from .._io import write_text_atomically
from .._version import __version__
from ..api import explain as explain_api
from ..describe import describe_many
from ..explanation import Explanation
from ..images import IMAGE_EXTENSIONS, load_image
from ..models import VisionModel, list_models, load_model
from ..models.preprocessing import parse_triple
from ..registry import list_methods, list_metrics
from ._shared import (
    ArchOpt,
    DeviceOpt,
    Interrupted,
    MaxBoxesOpt,
    MeanOpt,
    ModelOpt,
    ResizeOpt,
    ScoreThresholdOpt,
    SizeOpt,
    StdOpt,
    WeightsOpt,
    app,
    check_output_folder,
    console,
    err_console,
    method_names,
    params_for,
    parse_targets,
    progress_bar,
    say,
    say_error,
)

DEMO_METHODS = ("cam", "gradcam", "gradcam++")


def installed_version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    try:
        return metadata.version("seethrough")
    except metadata.PackageNotFoundError:
        return __version__


def _print_version(value: bool) -> None:
    if value:
        print(f"seethrough {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """See what deep vision models look at, and why."""


def _load(
    model: str,
    weights: str,
    arch: str | None,
    size: int | None,
    mean: str | None,
    std: str | None,
    resize: str | None,
    device: str,
    score_threshold: float | None = None,
    max_boxes: int | None = None,
) -> VisionModel:
    return load_model(
        model,
        weights=weights,
        arch=arch,
        size=size,
        mean=parse_triple(mean, "--mean"),
        std=parse_triple(std, "--std"),
        resize=resize,
        device=device,  # type: ignore[arg-type]
        score_threshold=score_threshold,
        max_boxes=max_boxes,
    )


def _expand(inputs: Sequence[str]) -> list[str]:
    """Files as given; folders expanded to their image files (sorted)."""
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and not p.name.startswith(".")
                and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
            )
            if not files:
                raise errors.InvalidImageError(f"{path}: no image files in this folder")
            found.extend(str(p) for p in files)
        else:
            found.append(item)
    return found


RUN_MANIFEST = "run.json"
"""The manifest of an ``explain`` run, in its output folder: which images are complete."""


def _stem(source: str) -> str:
    """The name of an image without its folder and extension (``sample:NAME``: NAME)."""
    name = source.split(":", 1)[1] if source.startswith("sample:") else Path(source).stem
    name = "".join("_" if c in "/\\\0" else c for c in name)
    return "image" if name in ("", ".", "..") else name


def _stem_and_kind(source: str) -> str:
    """The stem and where it comes from: ``cat-png`` for cat.png, ``chelsea-sample``."""
    if source.startswith("sample:"):
        return f"{_stem(source)}-sample"
    suffix = Path(source).suffix.lower().lstrip(".")
    return f"{_stem(source)}-{suffix}" if suffix else _stem(source)


def _stem_kind_and_hash(source: str) -> str:
    """Also a short hash of the source as given: unique between folders of one run."""
    return f"{_stem_and_kind(source)}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def folder_names(sources: Sequence[str]) -> dict[str, str]:
    """One output folder name per source: stable across runs, unique within one run.

    A source gets its stem (``cat`` for ``photos/cat.jpg``, ``chelsea`` for ``sample:chelsea``).
    Stems that two sources of the run share (letter case ignored, as some file systems do) get
    where they come from instead (``cat-jpg``, ``cat-png``, ``chelsea-sample``), and sources that
    still share one get a short hash of the source as given (``cat-png-1a2b3c4d``). The names
    depend only on the set of sources, not on their order.
    """
    names = {source: _stem(source) for source in sources}
    for rename in (_stem_and_kind, _stem_kind_and_hash):
        counts = Counter(name.lower() for name in names.values())
        counts[RUN_MANIFEST] += 1  # never a folder named like the run's manifest
        names = {s: rename(s) if counts[n.lower()] > 1 else n for s, n in names.items()}
    seen: set[str] = set()
    for source in sorted(names):  # a hash collision (never seen): numbered, in a stable order
        name, i = names[source], 1
        while name.lower() in seen:
            i += 1
            name = f"{names[source]}-{i}"
        names[source] = name
        seen.add(name.lower())
    return names


def _unique(sources: Sequence[str]) -> list[str]:
    """The sources without repeats (a file named twice, or by a folder and by itself)."""
    seen: set[str] = set()
    kept = []
    for source in sources:
        key = source if source.startswith("sample:") else os.path.realpath(source)
        if key not in seen:
            seen.add(key)
            kept.append(source)
    return kept


@app.command("models")
def models_cmd(
    pattern: Annotated[str | None, typer.Argument(help="Filter, e.g. 'resnet*'.")] = None,
    source: Annotated[str | None, typer.Option(help="bundled, torchvision or timm.")] = None,
) -> None:
    """List the models load_model() knows (bundled first, then torchvision, then timm)."""
    names = list_models(pattern, source=source)
    for name in names:
        console.print(name, markup=False)
    err_console.print(f"{len(names)} models", style="dim")


@app.command("methods")
def methods_cmd(
    family: Annotated[str | None, typer.Option(help="Only this family, e.g. cam.")] = None,
) -> None:
    """List the explanation methods with their family, needs, parameters and paper.

    A table when the terminal is wide enough for it, else (and when piped) one block per method.
    """
    table_heads = ("name", "method", "family", "needs", "parameters (default)", "paper")
    table = Table(title="explanation methods")
    for col in table_heads:
        table.add_column(col, no_wrap=col not in ("parameters (default)", "paper"))
    rows = []
    for m in list_methods(family=family):
        needs = ", ".join(
            n for n, f in (("gradients", m.needs_gradients), ("layer", m.needs_layer)) if f
        )
        params = ", ".join(f"{p.name}={p.default}" for p in m.params)
        rows.append((m.name, m.title, m.family, needs or "-", params or "-", m.paper))
        table.add_row(*rows[-1])
    # the table when names, families and needs fit whole, with room for parameters and paper
    fixed = sum(max(len(r[i]) for r in [table_heads, *rows]) for i in range(4))
    if rows and fixed + 3 * len(table_heads) + 1 + 2 * 30 <= console.width:
        console.print(table)
        return
    for name, title, fam, needs, params, paper in rows:  # compact: nothing squeezed
        what = f"{fam}; needs {needs}" if needs != "-" else fam
        console.print(f"{name}  {title} ({what})", markup=False, soft_wrap=True)
        for text in (paper, f"parameters: {params}"):
            wrapped = textwrap.wrap(
                text,
                width=max(console.width, 40),
                initial_indent="    ",
                subsequent_indent="      ",
                break_long_words=False,
                break_on_hyphens=False,
            )
            console.print("\n".join(wrapped), markup=False, soft_wrap=True)


@app.command("metrics")
def metrics_cmd(
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
) -> None:
    """List the evaluation metrics: category, which way is better, what each needs."""
    table = Table(title="evaluation metrics (seethrough.metrics)")
    for col in ("name", "category", "better", "needs"):
        table.add_column(col, no_wrap=True)
    table.add_column("what it measures")
    for m in list_metrics(category):
        better = "higher" if m.higher_is_better else "lower"
        summary = m.summary.replace("``", "")
        table.add_row(m.name, m.category, better, ", ".join(m.needs) or "-", summary)
    console.print(table)


@app.command("layers")
def layers_cmd(
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = "default",
    arch: ArchOpt = None,
) -> None:
    """List the layers with a spatial output (candidates for --layer), last = default."""
    vm = load_model(model, weights=weights, arch=arch)
    x = vm.preprocess(load_image("sample:chelsea"))
    table = Table(title=f"spatial layers of {vm.name}")
    table.add_column("layer")
    table.add_column("output shape")
    for name, shape in vm.make_runner().spatial_layers(x):
        table.add_row(name, "x".join(map(str, shape[1:])))
    console.print(table)


EXPORT_CHECK_CORRELATION = 0.999
"""Least correlation between the source model's Grad-CAM and the exported model's that
``export-onnx --check`` accepts."""


@app.command("export-onnx")
def export_onnx_cmd(
    model: Annotated[str, typer.Argument(help="The PyTorch model: a name or a file.")],
    out: Annotated[Path, typer.Argument(help="The ONNX file to write.")],
    weights: WeightsOpt = "default",
    arch: ArchOpt = None,
    size: SizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    resize: ResizeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Reload the file and compare top-5 and Grad-CAM with the model on the "
            "bundled photos.",
        ),
    ] = False,
) -> None:
    """Export a PyTorch model as an ONNX file (with its preprocessing and labels)."""
    from ..models.zoo import require_extra

    require_extra("onnx", "export-onnx")
    from ..models.onnx import export_onnx

    vm = _load(model, weights, arch, size, mean, std, resize, "cpu")
    written = export_onnx(vm, out, overwrite=force)
    console.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", markup=False)
    if check:
        _check_export(vm, written)


def _check_export(source: VisionModel, path: Path) -> None:
    """Reload ``path`` and compare it with ``source`` on every bundled photo: the same top-5
    classes in the same order, Grad-CAM maps correlated at least
    :data:`EXPORT_CHECK_CORRELATION` (exit 2 when any photo fails)."""
    import numpy as np

    from ..images import list_samples
    from ..models.onnx import load_onnx

    exported = load_onnx(path)
    table = Table(title=f"{source.name} against {path.name} (onnxruntime)")
    for col in ("photo", "top-5", "largest probability gap", "Grad-CAM correlation"):
        table.add_column(col)
    failed = []
    for name in list_samples():
        image = load_image(f"sample:{name}")
        a, b = source.predict(image), exported.predict(image)
        same = [p.index for p in a] == [p.index for p in b]  # type: ignore[union-attr]
        gap = max(abs(p.probability - q.probability) for p, q in zip(a, b, strict=True))  # type: ignore[union-attr]
        maps = [explain_api(m, image, "gradcam").map.ravel() for m in (source, exported)]  # type: ignore[union-attr]
        corr = float(np.corrcoef(maps[0], maps[1])[0, 1]) if maps[0].std() > 0 else 1.0
        if not same or not corr >= EXPORT_CHECK_CORRELATION:
            failed.append(name)
        table.add_row(name, "same" if same else "DIFFERENT", f"{gap:.1e}", f"{corr:.6f}")
    console.print(table)
    if failed:
        say_error(f"the exported model differs from the source on: {', '.join(failed)}")
        raise typer.Exit(2)
    console.print("check passed: the same top-5 and Grad-CAM on every bundled photo")


@app.command("predict")
def predict_cmd(
    images: Annotated[list[str], typer.Argument(help="Image files, folders, or sample:NAME.")],
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = "default",
    arch: ArchOpt = None,
    k: Annotated[
        int,
        typer.Option(
            "-k",
            "--top",
            help="How many classes to show (a detector's boxes; a segmenter's classes present).",
        ),
    ] = 5,
    size: SizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    resize: ResizeOpt = None,
    device: DeviceOpt = "cpu",
    score_threshold: ScoreThresholdOpt = None,
    max_boxes: MaxBoxesOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also write one picture per image in this folder: the boxes drawn, the class "
            "mask with its legend, or the top class (NAME-predictions.png)."
        ),
    ] = None,
) -> None:
    """Print the top-k classes with probabilities for each image; a detector's boxes (index,
    class, score, corners), a segmenter's classes present (share of the pixels)."""
    if out is not None:
        check_output_folder(out)
    vm = _load(model, weights, arch, size, mean, std, resize, device, score_threshold, max_boxes)
    console.print(f"preprocessing: {vm.preprocessing.describe()}", markup=False, soft_wrap=True)
    sources = _expand(images)
    names = folder_names(_unique(sources))

    def action(source: str) -> None:
        image = load_image(source)
        _print_predictions(vm, source, k, image)
        if out is not None:
            path = out / f"{names.get(source, _stem(source))}-predictions.png"
            _save_prediction_picture(vm, image, path, k)
            console.print(f"wrote {path}", markup=False, soft_wrap=True)

    failed = _for_each(sources, action)
    _finish(failed)


def _print_predictions(vm: VisionModel, source: str, k: int, image: Any = None) -> None:
    image = load_image(source) if image is None else image
    if vm.task == "detection":
        _print_boxes(vm, source, image, k)
        return
    if vm.task == "segmentation":
        _print_mask(vm, source, image, k)
        return
    preds = vm.predict(image, k=k)
    table = Table(title=Text(source))
    table.add_column("#")
    table.add_column("class")
    table.add_column("index")
    table.add_column("probability", justify="right")
    for rank, p in enumerate(preds, 1):
        table.add_row(str(rank), p.label, str(p.index), f"{p.probability:.4f}")
    console.print(table)


def _print_boxes(vm: VisionModel, source: str, image: Any, k: int) -> None:
    """The detector's top ``k`` boxes: index (as ``--target box:INDEX``), class, score, box."""
    boxes = vm.predict(image)[:k]
    table = Table(title=Text(f"{source}: {len(boxes)} boxes"))
    table.add_column("box", justify="right")
    table.add_column("class")
    table.add_column("score", justify="right")
    table.add_column("x0, y0, x1, y1", justify="right")
    for i, b in enumerate(boxes):
        corners = ", ".join(f"{v:.1f}" for v in b.box)
        table.add_row(str(i), b.label, f"{b.score:.4f}", corners)
    console.print(table)


def _print_mask(vm: VisionModel, source: str, image: Any, k: int) -> None:
    """The segmenter's classes present, most pixels first: class, index, share of pixels."""
    mask = vm.predict(image)
    table = Table(title=Text(f"{source}: classes present"))
    table.add_column("class")
    table.add_column("index", justify="right")
    table.add_column("pixels", justify="right")
    for label, fraction in mask.present[:k]:
        table.add_row(label, str(vm.class_index(label)), f"{100 * fraction:.1f}%")
    console.print(table)


def _prediction_panel(vm: VisionModel, image: Any, k: int = 5) -> Any:
    """The input as a figure's first tile: a detector's boxes drawn with their class and score,
    a segmenter's class mask with its legend, a classifier's top class in the title."""
    from ..viz import Panel, draw_boxes, mask_legend, mask_overlay

    seen = vm.preprocessing.display_image(image)
    if vm.task == "detection":
        boxes = vm.predict(image)[:k]
        drawn = draw_boxes(
            seen,
            [b.box for b in boxes],
            [f"{i} {b.label}" for i, b in enumerate(boxes)],
            [b.score for b in boxes],
        )
        return Panel(drawn, title=f"input\n{len(boxes)} boxes\n{vm.name}")
    if vm.task == "segmentation":
        mask = vm.predict(image)
        top = next((p for p in mask.present if p[0] != vm.labels[0]), mask.present[0])
        return Panel(
            mask_overlay(seen, mask.classes),
            title=f"input\n{top[0]} {100 * top[1]:.0f}%\n{vm.name}",
            legend=mask_legend(mask.present[:k], vm.labels),
        )
    top = vm.predict(image, k=1)[0]
    return Panel(seen, title=f"input\n{top.label} {top.probability:.2f}\n{vm.name}")


def _save_prediction_picture(vm: VisionModel, image: Any, path: Path, k: int) -> None:
    from ..viz import grid_figure, save_figure

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.InvalidParameterError(f"--out {path.parent}: {exc.strerror or exc}") from None
    save_figure(grid_figure([_prediction_panel(vm, image, k)], ncols=1, tile_size=5.0), path)


@app.command("explain")
def explain_cmd(
    images: Annotated[list[str], typer.Argument(help="Image files, folders, or sample:NAME.")],
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = "default",
    arch: ArchOpt = None,
    method: Annotated[
        str, typer.Option(help="Comma-separated method names (see `seethrough methods`).")
    ] = "gradcam",
    target: Annotated[
        str | None,
        typer.Option(
            help="Class index or label (default: top class); for a detector box:INDEX "
            "(comma-separated: box:0,box:1, one explanation each; 0 = the top box), for a "
            "segmenter mask:CLASS (a label or an index)."
        ),
    ] = None,
    top_boxes: Annotated[
        int | None,
        typer.Option(help="A detector's top N boxes, one explanation each (box:0 to box:N-1)."),
    ] = None,
    layer: Annotated[str | None, typer.Option(help="Layer name (see `seethrough layers`).")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Method parameter NAME=VALUE (repeatable)."),
    ] = None,
    size: SizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    resize: ResizeOpt = None,
    device: DeviceOpt = "cpu",
    score_threshold: ScoreThresholdOpt = None,
    max_boxes: MaxBoxesOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs"),
    stride: Annotated[
        int, typer.Option(help="A video's frames: explain one in N (default: every frame).")
    ] = 1,
    smooth: Annotated[
        float,
        typer.Option(
            help="A video's temporal smoothing weight w in [0, 1): each frame's map becomes "
            "w * previous + (1 - w) * its own (default 0: none)."
        ),
    ] = 0.0,
    max_frames: Annotated[
        int | None, typer.Option(help="A video's frames: explain at most N (default: all).")
    ] = None,
) -> None:
    """Explain images with one or more methods; write overlays, arrays, manifests and a figure.

    A video (.mp4 .avi .mov .mkv .webm; needs seethrough[video]) is explained frame by frame
    into OUT/<clip>/: METHOD.mp4 (the overlay video), METHOD.npz (the per-frame maps, frame
    indices and times) and METHOD.json; --stride, --smooth and --max-frames apply to it.

    A detector's boxes and a segmenter's class masks are explained with --target box:0,box:1,
    --top-boxes N or --target mask:CLASS: one explanation per box (METHOD-box0, ...), its
    outline on the overlay and in the figure. The boxes of an image are explained in one call
    per method: a gradient CAM runs the detector once for all of them.

    Beside each image's figure, METHOD.txt holds the explanation's text (Explanation.describe:
    prediction, where the evidence lies, how concentrated it is) and figure.txt all of them with
    how far the methods' maps agree."""
    methods = method_names(method)
    params = params_for(methods, param)
    targets = parse_targets(target, top_boxes)
    check_output_folder(out)
    videos, images = _video.split_videos(images)
    _video.check_video_options(videos, stride, smooth, max_frames)
    vm = _load(model, weights, arch, size, mean, std, resize, device, score_threshold, max_boxes)
    _check_targets(vm, targets)
    sources = _expand(images)
    if videos:  # folder names unique among the images' too (clip.mp4 and clip.png)
        names = folder_names([*videos, *sources])
        opts = {"stride": stride, "smooth": smooth, "max_frames": max_frames}
        _video.explain_videos(vm, videos, names, methods, targets, layer, params, out, **opts)
    if sources:
        _explain_all(vm, sources, methods, targets, layer, params, out, target_text=target)


def _check_targets(vm: VisionModel, targets: list[tuple[str, Any]]) -> None:
    """Box targets need a detector, mask targets a segmenter."""
    for name, _ in targets:
        for prefix, task in (("box", "detection"), ("mask", "segmentation")):
            if name.startswith(prefix) and vm.task != task:
                what = "detector" if task == "detection" else "segmenter"
                raise errors.InvalidParameterError(
                    f"--target {prefix}:...: {vm.name} is a {vm.task} model; {prefix} targets "
                    f"need a {what}"
                )


class _RunManifest:
    """``OUT/run.json``: the run's settings and, per image, its folder, what was written, whether
    it is complete and why not; rewritten atomically each time an image finishes."""

    def __init__(self, out: Path, names: dict[str, str], **settings: Any) -> None:
        self.path = out / RUN_MANIFEST
        self.images = {
            source: {
                "source": source,
                "folder": folder,
                "methods": [],
                "figure": None,
                "complete": False,
                "error": None,
            }
            for source, folder in names.items()
        }
        self.data: dict[str, Any] = {
            "format": "seethrough-run",
            "version": 1,
            "status": "running",
            "started": _now(),
            "finished": None,
            **settings,
            "images": list(self.images.values()),
        }

    def save(self) -> None:
        write_text_atomically(self.path, json.dumps(self.data, indent=2, default=str) + "\n")

    def finish(self, status: str) -> None:
        self.data.update(status=status, finished=_now())
        self.save()

    def complete(self) -> list[str]:
        return [s for s, entry in self.images.items() if entry["complete"]]

    def unfinished(self) -> list[str]:
        return [s for s, e in self.images.items() if not e["complete"] and e["error"] is None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _some(items: Sequence[str], n: int = 5) -> str:
    """The first ``n`` items, comma-separated, and how many more."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _explain_all(
    vm: VisionModel,
    sources: list[str],
    methods: list[str],
    targets: list[tuple[str, Any]],
    layer: str | None,
    params: dict[str, dict[str, str]],
    out: Path,
    target_text: str | None = None,
) -> dict[str, str]:
    """Explain every source with every method into ``OUT/<folder>/``; returns the folder names.

    ``targets``: ``(name, target)`` pairs (:func:`parse_targets`); each gets its own
    explanation, saved as ``METHOD-NAME`` (``METHOD`` for a nameless one).

    ``OUT/run.json`` says which images are complete; every file is written atomically, so an
    interrupted run leaves whole files only. On Ctrl-C, says what was finished and what was not.
    """
    sources = _unique(sources)
    names = folder_names(sources)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.InvalidParameterError(f"--out {out}: {exc.strerror or exc}") from None
    run = _RunManifest(
        out, names, model=vm.name, methods=methods, target=target_text, layer=layer, params=params
    )
    run.save()
    failed: list[tuple[str, str]] = []
    try:
        with progress_bar() as bar:
            task = bar.add_task("explaining", total=len(sources) * len(methods) * len(targets))
            # the running method's own steps (model evaluations, images or batches of masks,
            # whichever it reports), shown while it has some left
            evals = bar.add_task("", total=None, visible=False)

            def tick(done: int, total: int) -> None:
                bar.update(evals, completed=done, total=total, visible=done < total)

            for source in sources:
                entry = run.images[source]
                try:
                    image = load_image(source)
                    results, stems = [], []
                    for m in methods:
                        # every target of the image in one call: the gradient CAMs run the
                        # model once for all of them (one backward per box or mask)
                        stems_m = [f"{m}-{name}" if name else m for name, _ in targets]
                        bar.update(task, description=f"{names[source]}: {', '.join(stems_m)}")
                        bar.reset(evals, description=f"{m} steps", total=None, visible=False)
                        many = len(targets) > 1
                        made = explain_api(
                            vm,
                            image,
                            m,
                            target=[t for _, t in targets] if many else targets[0][1],
                            layer=layer,
                            progress=tick,
                            **params[m],
                        )
                        results += made if many else [made]
                        stems += stems_m
                        bar.advance(task, len(targets))
                    folder = out / names[source]
                    for stem, e in zip(stems, results, strict=True):
                        e.save(folder, stem)
                        write_text_atomically(folder / f"{stem}.txt", e.describe() + "\n")
                        entry["methods"].append(stem)
                    _save_figure(vm, image, results, folder / "figure.png")
                    write_text_atomically(folder / "figure.txt", f"{describe_many(results)}\n")
                    entry.update(figure="figure.png", complete=True)
                    run.save()
                except errors.SeethroughError as exc:
                    entry["error"] = " ".join(str(exc).split())
                    if len(sources) == 1 or not isinstance(exc, errors.InvalidImageError):
                        run.finish("failed")
                        raise
                    run.save()
                    say_error(str(exc))
                    failed.append((source, str(exc)))
                    continue
                bar.console.print(
                    f"{source}: wrote {folder}/ ({_some(stems, 8)} + figure.png)",
                    markup=False,
                    soft_wrap=True,
                )
    except KeyboardInterrupt:
        run.finish("interrupted")
        done, left = run.complete(), run.unfinished()
        where = f" in {out}/" if done else ""
        message = f"interrupted: {len(done)} of {len(sources)} images complete{where}"
        message += f" (see {run.path})"
        if left:
            message += f"; not finished: {_some(left)}"
        raise Interrupted(message) from None
    except BaseException:
        if run.data["status"] == "running":
            run.finish("failed")
        raise
    run.finish("finished")
    _finish(failed)
    return names


def _save_figure(vm: VisionModel, image: Any, results: list[Explanation], path: Path) -> None:
    from ..viz import explanation_panels, grid_figure, save_figure

    panels = [_prediction_panel(vm, image)]
    for e in results:
        panels += explanation_panels(e)
    save_figure(grid_figure(panels, ncols=min(len(panels), 4)), path)


def _for_each(sources: list[str], action: Any) -> list[tuple[str, str]]:
    """Run ``action`` on each source; a bad image is reported and the rest still processed."""
    failed = []
    for source in sources:
        try:
            action(source)
        except errors.InvalidImageError as exc:
            if len(sources) == 1:
                raise
            say_error(str(exc))
            failed.append((source, str(exc)))
    return failed


def _warning(message: Warning | str, *_: Any, **__: Any) -> None:
    """A warning as one line ``warning: ...`` on stderr (``warnings.showwarning``'s signature),
    without the file, line and source that Python's default adds."""
    say("warning", message)


def _finish(failed: list[tuple[str, str]]) -> None:
    if failed:
        say_error(f"{len(failed)} image(s) could not be read: {', '.join(s for s, _ in failed)}")
        raise typer.Exit(2)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/demo"),
    image: Annotated[str, typer.Option(help="Image to explain.")] = "sample:chelsea",
) -> None:
    """Explain the bundled cat photo with the bundled model (offline): CAM, Grad-CAM, Grad-CAM++."""
    check_output_folder(out)
    vm = load_model("efficientnet_lite0")
    console.print(vm.describe(), markup=False, soft_wrap=True)
    _print_predictions(vm, image, 5)
    names = _explain_all(
        vm, [image], list(DEMO_METHODS), [("", None)], None, {m: {} for m in DEMO_METHODS}, out
    )
    console.print(f"figure: {out / names[image] / 'figure.png'}", markup=False, soft_wrap=True)


@app.command("dashboard")
def dashboard_cmd(
    host: Annotated[
        str, typer.Option(help="Address to serve on; loopback unless you ask for another.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    allow_torchscript: Annotated[
        bool,
        typer.Option(
            "--allow-torchscript",
            help="Accept TorchScript uploads; a TorchScript file is a program: only for a single "
            "user on their own machine.",
        ),
    ] = False,
    runs: Annotated[
        Path | None,
        typer.Option(
            "--runs",
            help="A folder of training runs (ExplanationRecorder outputs) for the Training run "
            "view: visitors pick a run folder under it by name, nothing outside it.",
        ),
    ] = None,
) -> None:
    """Start the web dashboard (Streamlit): model, image, predictions, explanations, compare,
    training runs."""
    from .. import dashboard

    dashboard.check_port(host, port)  # free and ours, before anything is printed or started
    if runs is not None:
        runs = dashboard.check_runs(runs)
    if host not in dashboard.LOOPBACK:
        err_console.print(
            f"warning: serving on {host}: anyone who reaches this address can use the dashboard",
            markup=False,
            soft_wrap=True,
        )
    if allow_torchscript:
        err_console.print(
            "warning: TorchScript uploads accepted: a TorchScript file is a program, run with "
            "your rights; only for a single user on their own machine",
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"seethrough dashboard: http://{host}:{port}  (Ctrl+C stops it)",
        markup=False,
        soft_wrap=True,
    )
    raise typer.Exit(dashboard.launch(host, port, allow_torchscript=allow_torchscript, runs=runs))


# the evaluation commands register on the shared app after these, so `--help` lists them last
from . import audit as _audit  # noqa: E402, F401  (registers audit)
from . import evaluate as _evaluate  # noqa: E402, F401  (registers compare, benchmark, cost)
from . import tabular as _tabular  # noqa: E402, F401  (registers tabular)
from . import training as _training  # noqa: E402, F401  (registers report, train-demo)
from . import video as _video  # noqa: E402  (explain's video branch)


def _is_click_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a click exception, from whichever copy of click typer runs on.

    Recent typer releases carry their own click (``typer._click``), older ones use the ``click``
    package: the class is recognised by its name in the exception's class hierarchy, so a usage
    error is never mistaken for a crash whichever copy raised it.
    """
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def _command_path(args: Sequence[str]) -> str:
    """``seethrough COMMAND`` for the command named in ``args`` (else ``seethrough``)."""
    names = {info.name for info in app.registered_commands if info.name}
    first = next((a for a in args if not a.startswith("-")), None)
    return f"seethrough {first}" if first in names else "seethrough"


def _usage_error(exc: Exception, args: Sequence[str]) -> int:
    """Print a click error as one line ``error: ...`` with the command's help hint; its code."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as click shows it
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return int(getattr(exc, "exit_code", 2))
    format_message = getattr(exc, "format_message", None)
    message = " ".join(str(format_message() if callable(format_message) else exc).split())
    ctx = getattr(exc, "ctx", None)
    if any(cls.__name__ == "UsageError" for cls in type(exc).__mro__):
        path = getattr(ctx, "command_path", None) or _command_path(args)
        end = "" if message.endswith((".", "?", "!")) else "."
        message = f"{message}{end} Try '{path} --help'."
    say_error(message or type(exc).__name__)
    code = getattr(exc, "exit_code", 2)
    return code if isinstance(code, int) and code else 2


def _interrupted(message: str = "interrupted") -> int:
    """Say on stderr what an interrupt (Ctrl-C) left; the exit code of an interrupt, 130."""
    print(message, file=sys.stderr, flush=True)
    return 130


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the app; every expected failure is one line ``error: ...``,
    every warning one line ``warning: ...``.

    Exit codes: 0 success, 2 bad input or usage error, 130 interrupted (Ctrl-C).
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning
            code = app(args=args, prog_name="seethrough", standalone_mode=False)
    except errors.SeethroughError as exc:
        say_error(str(exc))
        sys.exit(2)
    except Interrupted as exc:
        sys.exit(_interrupted(str(exc)))
    except typer.Exit as exc:
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.exit(_interrupted())
    except typer.Abort as exc:  # older click: Ctrl-C (or end of input) becomes Abort
        if isinstance(exc.__cause__, KeyboardInterrupt):
            sys.exit(_interrupted())
        print("aborted", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as exc:
        if not _is_click_error(exc):
            raise
        sys.exit(_usage_error(exc, args))
    if code == 130:  # typer turns Ctrl-C in a command into exit code 130
        sys.exit(_interrupted())
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":  # ``python -m seethrough.cli.main``: the app with every command
    from seethrough.cli.main import main as _main

    _main()
