"""Commands for runs recorded during training: ``seethrough report RUN_DIR`` and
``seethrough train-demo``.

A run directory is what :class:`seethrough.ExplanationRecorder` writes; the report is rebuilt
from it alone (maps, table, ``run.json``), so it can be refreshed while training goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._shared import app, check_output_folder, console, err_console, method_names

__all__ = ["report_cmd", "train_demo_cmd"]


@app.command("report")
def report_cmd(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR", help="A run directory written by ExplanationRecorder (its out=)."
        ),
    ],
) -> None:
    """Rebuild a training run's report: per probe a GIF strip and a contact sheet over epochs,
    the metrics plot with the "attention settled" marker, and RUN_DIR/report.html."""
    from ..training.report import build_report

    path = build_report(run_dir)
    console.print(f"wrote {path}", markup=False, soft_wrap=True)


@app.command("train-demo")
def train_demo_cmd(
    out: Annotated[Path, typer.Option(help="The run directory (report.html is written in it).")] = (
        Path("runs/demo")
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (epoch 0: untrained).")] = 8,
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods to record (see `seethrough methods`).")
    ] = "gradcam",
    seed: Annotated[int, typer.Option(help="Seeds the data, the weights and the data order.")] = 0,
) -> None:
    """Train the benchmark's small CNN on generated digits with an explanation recorder (about
    a minute on a laptop CPU): watch its Grad-CAM learn to point at the digit, then open
    OUT/report.html."""
    from ..training.demo import REFERENCE_POINTING_GAME, run_demo

    names = method_names(methods)  # an unknown method fails before anything is rendered
    check_output_folder(out)
    result = run_demo(
        out,
        epochs=epochs,
        methods=names,
        seed=seed,
        log=lambda line: err_console.print(line, markup=False, soft_wrap=True),
    )
    first, last = result.pointing_game[0], result.pointing_game[epochs]
    settled = "not yet" if result.settled is None else f"after epoch {result.settled}"
    console.print(
        f"{names[0]} pointing game {first:.2f} at epoch 0, {last:.2f} at epoch {epochs} "
        f"(the trained benchmark model: {REFERENCE_POINTING_GAME:.2f}); attention settled "
        f"{settled}; training {result.train_seconds:.0f} s, recorder "
        f"{result.recorder_seconds:.1f} s",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"wrote {result.report}", markup=False, soft_wrap=True)
