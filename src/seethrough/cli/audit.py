"""``seethrough audit``: explain and score every image of a data set into one table.

The run folder (``--out``) gets ``table.csv``, ``table.parquet`` (with the ``parquet`` extra),
``summary.html`` and the maps; rerunning the same command goes on where a stopped run left off.
Exit codes: 0 done (bad files are rows with their error), 2 bad input, 130 stopped by Ctrl-C
or SIGTERM (one line on stderr says how far it got; the table holds every finished row).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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
from ..audit import ENGINES, AuditSpec, audit, get_engine
from ..evaluation.runner import METRICS
from ._shared import (
    DeviceOpt,
    ModelOpt,
    WeightsOpt,
    app,
    check_output_folder,
    console,
    err_console,
    method_names,
    params_for,
)


def _metrics(text: str) -> tuple[str, ...]:
    if text.strip().lower() == "all":
        return METRICS
    if text.strip().lower() == "none":
        return ()
    return tuple(m.strip() for m in text.split(",") if m.strip())


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
    runner = get_engine(engine, address)
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
            stopped = str(exc)
        else:
            stopped = None
        finally:
            close = getattr(runner, "close", None)  # a cluster the engine started stops here
            if close is not None:
                close()
    if stopped is not None:
        print(stopped, file=sys.stderr, flush=True)
        raise SystemExit(130)
    skipped = f", {result.skipped} rows already there" if result.skipped else ""
    console.print(
        f"audited {len(result.items)} items: {result.rows} rows ({result.errors} with errors)"
        f"{skipped} in {result.seconds:.1f} s; wrote "
        + ", ".join(str(p) for p in result.paths.values()),
        markup=False,
        soft_wrap=True,
    )
