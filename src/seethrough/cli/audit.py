"""``seethrough audit``: explain and score every image of a data set into one table; and
``seethrough spurious``: the classes an audited model decides from the background.

The run folder (``--out``) gets ``table.csv``, ``table.parquet`` (with the ``parquet`` extra),
``summary.html`` and the maps; rerunning the same command goes on where a stopped run left off.
Exit codes: 0 done (bad files are rows with their error), 2 bad input, 130 stopped by Ctrl-C
or SIGTERM (one line on stderr says how far it got; the table holds every finished row).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .. import errors
from ..audit import ENGINES, AuditSpec, audit, get_engine, spurious
from ..audit.ray import CPUS_PER_ACTOR
from ..audit.spurious import TABLE_COLUMNS
from ..evaluation.runner import METRICS
from ..models import load_model
from ._shared import (
    DeviceOpt,
    Interrupted,
    ModelOpt,
    WeightsOpt,
    app,
    check_output_folder,
    console,
    err_console,
    method_names,
    params_for,
    progress_bar,
)
from .evaluate import _show


def _metrics(text: str) -> tuple[str, ...]:
    if text.strip().lower() == "all":
        return METRICS
    if text.strip().lower() == "none":
        return ()
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _pool_options(engine: str, **given: float | None) -> dict[str, float]:
    """The Ray pool's options that were given; for another engine, none may be.

    Raises:
        InvalidParameterError: a pool option for an engine that has no pool.
    """
    options = {k: v for k, v in given.items() if v is not None}
    if options and engine != "ray":
        flags = ", ".join("--" + k.replace("_", "-") for k in options)
        raise errors.InvalidParameterError(f"{flags}: for --engine ray only")
    return options


def _bar() -> Progress:
    """Items done of all, images per second, elapsed and time left (on stderr, on a terminal)."""
    return Progress(
        TextColumn("auditing"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


@app.command("audit")
def audit_cmd(
    data: Annotated[
        str,
        typer.Argument(
            help="A folder of images (recursive), an images/ + masks/ or Pascal VOC folder, "
            "or a CSV file with a 'path' column (optional 'label' and 'mask')."
        ),
    ],
    model: ModelOpt,
    out: Annotated[Path, typer.Option(help="The run folder (an existing run is resumed).")],
    methods: Annotated[
        str, typer.Option(help="Comma-separated method names (see `seethrough methods`).")
    ] = "gradcam",
    metrics: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated metrics per map, from: {', '.join(METRICS)}; 'all' or 'none'."
            " Localisation metrics need masks (empty for items without one)."
        ),
    ] = "pointing_game,energy_pointing_game,deletion",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Method parameter NAME=VALUE (repeatable)."),
    ] = None,
    target: Annotated[
        str, typer.Option(help="What each map explains: 'predicted' (top class) or 'label'.")
    ] = "predicted",
    limit: Annotated[int | None, typer.Option(min=1, help="Audit the first N items.")] = None,
    shuffle: Annotated[bool, typer.Option(help="Shuffle the items first (with --seed).")] = False,
    seed: Annotated[int, typer.Option(help="The shuffle's seed.")] = 0,
    engine: Annotated[
        str, typer.Option(help=f"Where the work runs: {' or '.join(ENGINES)}.")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join: 'auto' or HOST:PORT (default: start one)."),
    ] = None,
    actors: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Ray: actors in the pool, one model each (default: one per whole CPU of the "
            "cluster, or one per GPU with --device cuda).",
        ),
    ] = None,
    cpus_per_actor: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help=f"Ray: CPUs each actor reserves, also its torch threads (default {CPUS_PER_ACTOR}).",
        ),
    ] = None,
    gpus_per_actor: Annotated[
        float | None,
        typer.Option(
            min=0, help="Ray: GPUs each actor reserves (default: 1 with --device cuda, else 0)."
        ),
    ] = None,
    cpus: Annotated[
        int | None,
        typer.Option(min=1, help="Ray: CPUs of a cluster the command starts (default: all)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Items per batch (one atomic write each).")
    ] = 8,
    steps: Annotated[int, typer.Option(min=2, help="Steps of deletion/insertion curves.")] = 20,
    maps: Annotated[bool, typer.Option(help="Save each map as an .npz file.")] = True,
    weights: WeightsOpt = "default",
    device: DeviceOpt = "cpu",
) -> None:
    """Explain and score every image of a data set: one table, maps, an HTML summary."""
    check_output_folder(out)
    names = method_names(methods)
    spec = AuditSpec(
        model,
        tuple(names),
        _metrics(metrics),
        weights=weights,
        params=params_for(names, param),
        target=target,
        save_maps=maps,
        device=device,
        steps=steps,
        batch_size=batch_size,
    )
    runner = get_engine(
        engine,
        address,
        **_pool_options(
            engine,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
            cpus=cpus,
        ),
    )
    with _bar() as bar:
        task = bar.add_task("auditing", total=None, rate="")
        started: list[float] = []

        def tick(done: int, total: int) -> None:
            now = bar.get_time()
            if not started:
                started.append(now)
            seconds = now - started[0]
            rate = f"{done / seconds:.2f} img/s" if done and seconds > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        try:
            result = audit(
                data,
                spec,
                out,
                engine=runner,
                limit=limit,
                shuffle=shuffle,
                seed=seed,
                progress=tick,
            )
        except errors.CancelledError as exc:  # stopped: one line, the exit code of Ctrl-C
            raise Interrupted(str(exc)) from None
        finally:
            close = getattr(runner, "close", None)  # a cluster the engine started stops here
            if close is not None:
                close()
    skipped = f", {result.skipped} rows already there" if result.skipped else ""
    console.print(
        f"audited {len(result.items)} items: {result.rows} rows ({result.errors} with errors)"
        f"{skipped} in {result.seconds:.1f} s; wrote "
        + ", ".join(str(p) for p in result.paths.values()),
        markup=False,
        soft_wrap=True,
    )


def _number(value: Any) -> str:
    """A table cell: floats to 4 significant digits (``nan`` as ``-``), the rest as text."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _plain_json(value: Any) -> Any:
    """JSON has no NaN or infinity: those become ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@app.command("spurious")
def spurious_cmd(
    run: Annotated[Path, typer.Argument(help="An audit's run folder (with its maps).")],
    top: Annotated[
        int | None,
        typer.Option(min=1, help="Show the N most background-reliant classes per method."),
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Comma-separated methods to look at (default: the run's).")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="'outside' (the share of saliency outside the object: needs masks), "
            "'reliance' (hides the map's region and the rest: needs --model) or 'auto'."
        ),
    ] = "auto",
    alpha: Annotated[
        float, typer.Option(help="Family-wise error level of the flags (Holm over the classes).")
    ] = 0.05,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="The audited model: needed for 'reliance' (see `seethrough models`).",
        ),
    ] = None,
    weights: WeightsOpt = "default",
    device: DeviceOpt = "cpu",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the table as JSON (NaN as null) instead.")
    ] = False,
    csv: Annotated[
        Path | None, typer.Option(help="Also write the whole table to this CSV file.")
    ] = None,
) -> None:
    """Rank the classes an audited model decides from the background (one row per method and
    class, most reliant first; `flagged`: significantly more than the other classes)."""
    vm = load_model(model, weights=weights, device=device) if model is not None else None
    methods = method_names(method) if method is not None else None
    with progress_bar() as bar:
        task = bar.add_task("scoring maps", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = spurious(run, model=vm, mode=mode, methods=methods, alpha=alpha, progress=tick)
    if csv is not None:
        result.write_csv(csv)
    shown = [
        row
        for name in dict.fromkeys(r["method"] for r in result.classes)
        for row in [r for r in result.classes if r["method"] == name][:top]
    ]
    if as_json:
        print(
            json.dumps(
                {
                    "mode": result.mode,
                    "alpha": result.alpha,
                    "skipped": result.skipped,
                    "classes": [{k: _plain_json(v) for k, v in r.items()} for r in shown],
                },
                indent=2,
            )
        )
        return
    methods_shown = [r["method"] for r in shown]
    _show(
        f"{run}: classes decided from the background ({result.mode})",
        list(TABLE_COLUMNS),
        [[_number(row[c]) for c in TABLE_COLUMNS] for row in shown],
        sections=[i for i in range(1, len(shown)) if methods_shown[i] != methods_shown[i - 1]],
        dim=[not row["flagged"] for row in shown],
    )
    console.print(
        f"{sum(r['flagged'] for r in result.classes)} flagged (alpha {result.alpha:g});"
        f" {len(result.items)} maps scored, {result.skipped} rows skipped",
        markup=False,
        soft_wrap=True,
    )
