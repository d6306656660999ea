"""``seethrough`` command: models, methods, layers, predict, explain, demo, dashboard (and, from
``evaluate``: compare, benchmark, cost).

Every expected failure (bad image, unknown model, method, layer or class, bad parameter) prints
one line ``error: ...`` on stderr and exits with code 2; no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .. import errors
from ..api import explain as explain_api
from ..explanation import Explanation
from ..images import IMAGE_EXTENSIONS, load_image
from ..models import VisionModel, list_models, load_model
from ..models.preprocessing import parse_triple
from ..registry import get_method, list_methods, list_metrics

app = typer.Typer(
    name="seethrough",
    help="See what deep vision models look at, and why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# user text (paths, labels) is printed as is: no emoji codes (sample:coffee:), no markup
console = Console(emoji=False, highlight=False)
err_console = Console(stderr=True, emoji=False, highlight=False)

DEMO_METHODS = ("cam", "gradcam", "gradcam++")

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Model name or file (see `seethrough models`).")
]
WeightsOpt = Annotated[
    str, typer.Option(help="'default' (pretrained), 'none' (random) or a weights file path.")
]
ArchOpt = Annotated[
    str | None, typer.Option(help="Architecture name, when --model is a state-dict file.")
]
SizeOpt = Annotated[int | None, typer.Option(help="Input size override (pixels).")]
MeanOpt = Annotated[str | None, typer.Option(help="Normalisation mean override, e.g. 0.5,0.5,0.5.")]
StdOpt = Annotated[str | None, typer.Option(help="Normalisation std override, e.g. 0.5,0.5,0.5.")]
ResizeOpt = Annotated[
    str | None, typer.Option(help="'squash' (whole image, default) or 'crop' (centre crop).")
]
DeviceOpt = Annotated[str, typer.Option(help="Device: cpu, cuda, cuda:1, ...")]


def _load(
    model: str,
    weights: str,
    arch: str | None,
    size: int | None,
    mean: str | None,
    std: str | None,
    resize: str | None,
    device: str,
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


def _parse_params(pairs: Iterable[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise errors.InvalidParameterError(f"--param '{pair}': expected NAME=VALUE")
        params[key.strip()] = value.strip()
    return params


def _target(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _stem(source: str) -> str:
    return source.split(":", 1)[1] if source.startswith("sample:") else Path(source).stem


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
    """List the explanation methods with their family, needs, parameters and paper."""
    table = Table(title="explanation methods")
    for col in ("name", "method", "family", "needs", "parameters (default)", "paper"):
        table.add_column(col)
    for m in list_methods(family=family):
        needs = ", ".join(
            n for n, f in (("gradients", m.needs_gradients), ("layer", m.needs_layer)) if f
        )
        params = ", ".join(f"{p.name}={p.default}" for p in m.params)
        table.add_row(m.name, m.title, m.family, needs or "-", params or "-", m.paper)
    console.print(table)


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
    from ..core.layers import spatial_layers

    vm = load_model(model, weights=weights, arch=arch)
    x = vm.preprocess(load_image("sample:chelsea"))
    table = Table(title=f"spatial layers of {vm.name}")
    table.add_column("layer")
    table.add_column("output shape")
    for name, shape in spatial_layers(vm.module, x):
        table.add_row(name, "x".join(map(str, shape[1:])))
    console.print(table)


@app.command("predict")
def predict_cmd(
    images: Annotated[list[str], typer.Argument(help="Image files, folders, or sample:NAME.")],
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = "default",
    arch: ArchOpt = None,
    k: Annotated[int, typer.Option("-k", "--top", help="How many classes to show.")] = 5,
    size: SizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    resize: ResizeOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Print the top-k classes with probabilities for each image."""
    vm = _load(model, weights, arch, size, mean, std, resize, device)
    console.print(f"preprocessing: {vm.preprocessing.describe()}", markup=False, soft_wrap=True)
    failed = _for_each(_expand(images), lambda src: _print_predictions(vm, src, k))
    _finish(failed)


def _print_predictions(vm: VisionModel, source: str, k: int) -> None:
    preds = vm.predict(load_image(source), k=k)
    table = Table(title=Text(source))
    table.add_column("#")
    table.add_column("class")
    table.add_column("index")
    table.add_column("probability", justify="right")
    for rank, p in enumerate(preds, 1):
        table.add_row(str(rank), p.label, str(p.index), f"{p.probability:.4f}")
    console.print(table)


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
        str | None, typer.Option(help="Class index or label (default: top class).")
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
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs"),
) -> None:
    """Explain images with one or more methods; write overlays, arrays, manifests and a figure."""
    methods = _methods(method)
    params = _params_for(methods, param)
    vm = _load(model, weights, arch, size, mean, std, resize, device)
    sources = _expand(images)
    _explain_all(vm, sources, methods, _target(target), layer, params, out)


def _methods(text: str) -> list[str]:
    """Comma-separated method names, checked; ``all`` for every registered method."""
    if text.strip().lower() == "all":
        return [m.name for m in list_methods()]
    methods = [get_method(m).name for m in text.split(",") if m.strip()]
    if not methods:
        raise errors.InvalidParameterError("no method given")
    return methods


def _params_for(methods: list[str], pairs: Iterable[str] | None) -> dict[str, dict[str, str]]:
    """``--param NAME=VALUE`` pairs, per method: each goes to the methods that have it.

    Fails before any model is loaded when a parameter fits none of the methods.
    """
    params = _parse_params(pairs or [])
    for key in params:
        if not any(key in {p.name for p in get_method(m).params} for m in methods):
            get_method(methods[0]).param(key)  # raises, with a suggestion
    return {
        m: {k: v for k, v in params.items() if k in {p.name for p in get_method(m).params}}
        for m in methods
    }


def _explain_all(
    vm: VisionModel,
    sources: list[str],
    methods: list[str],
    target: int | str | None,
    layer: str | None,
    params: dict[str, dict[str, str]],
    out: Path,
) -> None:
    with _progress() as bar:
        task = bar.add_task("explaining", total=len(sources) * len(methods))
        evals = bar.add_task("model evaluations", total=None, visible=False)

        def tick(done: int, total: int) -> None:
            bar.update(evals, completed=done, total=total, visible=done < total)

        def one(source: str) -> None:
            image = load_image(source)
            results = []
            for m in methods:
                bar.update(task, description=f"{_stem(source)}: {m}")
                results.append(
                    explain_api(
                        vm, image, m, target=target, layer=layer, progress=tick, **params[m]
                    )
                )
                bar.advance(task)
            folder = out / _stem(source)
            for e in results:
                e.save(folder)
            _save_figure(vm, image, results, folder / "figure.png")
            bar.console.print(
                f"{source}: wrote {folder}/ ({', '.join(methods)} + figure.png)", markup=False
            )

        failed = _for_each(sources, one)
    _finish(failed)


def _progress() -> Progress:
    """The progress bar of long commands: description, bar, done/total, elapsed (on stderr)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def _save_figure(vm: VisionModel, image: Any, results: list[Explanation], path: Path) -> None:
    from ..viz import Panel, explanation_panels, grid_figure, save_figure

    top = vm.predict(image, k=1)[0]
    panels = [Panel(results[0].image, title=f"input\n{top.label} {top.probability:.2f}\n{vm.name}")]
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
            _error(str(exc))
            failed.append((source, str(exc)))
    return failed


def _error(message: str) -> None:
    """One line on stderr, never wrapped."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _finish(failed: list[tuple[str, str]]) -> None:
    if failed:
        _error(f"{len(failed)} image(s) could not be read: {', '.join(s for s, _ in failed)}")
        raise typer.Exit(2)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/demo"),
    image: Annotated[str, typer.Option(help="Image to explain.")] = "sample:chelsea",
) -> None:
    """Explain the bundled cat photo with the bundled model (offline): CAM, Grad-CAM, Grad-CAM++."""
    vm = load_model("efficientnet_lite0")
    console.print(vm.describe(), markup=False, soft_wrap=True)
    _print_predictions(vm, image, 5)
    _explain_all(vm, [image], list(DEMO_METHODS), None, None, {m: {} for m in DEMO_METHODS}, out)
    console.print(f"figure: {out / _stem(image) / 'figure.png'}", markup=False)


@app.command("dashboard")
def dashboard_cmd(
    host: Annotated[
        str, typer.Option(help="Address to serve on; loopback unless you ask for another.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
) -> None:
    """Start the web dashboard (Streamlit): model, image, predictions, explanations, compare."""
    from ..dashboard import LOOPBACK, command, launch

    command(host, port)  # checks the port before anything starts
    if host not in LOOPBACK:
        err_console.print(
            f"warning: serving on {host}: anyone who reaches this address can use the dashboard",
            markup=False,
        )
    console.print(f"seethrough dashboard: http://{host}:{port}  (Ctrl+C stops it)", markup=False)
    raise typer.Exit(launch(host, port))


from . import evaluate as _evaluate  # noqa: E402, F401  (registers compare, benchmark, cost)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the app, turning seethrough errors into one line and exit 2."""
    try:
        code = app(args=list(argv) if argv is not None else None, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except errors.SeethroughError as exc:
        _error(str(exc))
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted", highlight=False)
        sys.exit(130)
    except Exception as exc:  # click usage errors and friends
        from click.exceptions import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
