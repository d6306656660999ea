"""What every command module of the ``seethrough`` command shares: the app the commands register
on, the consoles, the model options, and the checks that run before any model is loaded."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import errors
from ..registry import get_method, list_methods

__all__ = [
    "app",
    "console",
    "err_console",
    "ModelOpt",
    "WeightsOpt",
    "ArchOpt",
    "SizeOpt",
    "MeanOpt",
    "StdOpt",
    "ResizeOpt",
    "DeviceOpt",
    "ScoreThresholdOpt",
    "MaxBoxesOpt",
    "parse_params",
    "parse_targets",
    "check_output_folder",
    "method_names",
    "params_for",
    "progress_bar",
    "say",
    "say_error",
]

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
ScoreThresholdOpt = Annotated[
    float | None,
    typer.Option(
        help="A detector's least box confidence (default 0.05 with pretrained weights, 0 with "
        "random ones)."
    ),
]
MaxBoxesOpt = Annotated[
    int | None, typer.Option(help="A detector's boxes per image (default 100).")
]

_REGION_PREFIXES = ("box:", "mask:")


def parse_targets(text: str | None, top_boxes: int | None = None) -> list[tuple[str, object]]:
    """``--target`` and ``--top-boxes`` as ``(name, target)`` pairs, one explanation each.

    ``box:K[,box:J...]`` is the detector's box ``K`` (0 = the top box), ``mask:LABEL`` or
    ``mask:INDEX`` a segmenter's class mask, ``--top-boxes N`` boxes 0 to N-1; anything else
    is one class index or label (name ``""``), as for a classifier. Checked before any model
    is loaded: a bad item is an ``InvalidParameterError``.
    """
    from ..targets import Box, Mask

    if top_boxes is not None:
        if text is not None:
            raise errors.InvalidParameterError("give --target or --top-boxes, not both")
        if top_boxes < 1:
            raise errors.InvalidParameterError(f"--top-boxes must be >= 1, got {top_boxes}")
        return [(f"box{k}", Box(index=k)) for k in range(top_boxes)]
    if text is None:
        return [("", None)]
    if not text.strip().lower().startswith(_REGION_PREFIXES):
        return [("", int(text) if text.lstrip("-").isdigit() else text)]
    targets: list[tuple[str, object]] = []
    for item in (part.strip() for part in text.split(",")):
        kind, _, value = item.partition(":")
        kind, value = kind.strip().lower(), value.strip()
        if kind == "box" and value.isdigit():
            targets.append((f"box{int(value)}", Box(index=int(value))))
        elif kind == "mask" and value:
            label: int | str = int(value) if value.isdigit() else value
            targets.append((f"mask-{value}", Mask(label)))
        else:
            raise errors.InvalidParameterError(
                f"--target '{item}': expected box:INDEX (0 = the top box) or mask:CLASS "
                "(a label or an index), comma-separated"
            )
    names = [name for name, _ in targets]
    if len(set(names)) < len(names):
        raise errors.InvalidParameterError(f"--target '{text}' names a box or a mask twice")
    return targets


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs as a dict; ``InvalidParameterError`` for a pair without ``=``."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise errors.InvalidParameterError(f"--param '{pair}': expected NAME=VALUE")
        params[key.strip()] = value.strip()
    return params


def check_output_folder(out: Path) -> None:
    """Fail early (before a model is loaded) when ``out`` cannot be a folder."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "--out" if path == out else f"--out {out}:"
                raise errors.InvalidParameterError(f"{what} {path} is a file, not a folder")
            return


def method_names(text: str) -> list[str]:
    """Comma-separated method names, checked; ``all`` for every registered method."""
    if text.strip().lower() == "all":
        return [m.name for m in list_methods()]
    methods = [get_method(m).name for m in text.split(",") if m.strip()]
    if not methods:
        raise errors.InvalidParameterError("no method given")
    return methods


def params_for(methods: list[str], pairs: Iterable[str] | None) -> dict[str, dict[str, str]]:
    """``--param NAME=VALUE`` pairs, per method: each goes to the methods that have it.

    Fails before any model is loaded when a parameter fits none of the methods.
    """
    params = parse_params(pairs or [])
    names = {m: {n for p in get_method(m).params for n in p.names} for m in methods}
    for key in params:
        if not any(key in names[m] for m in methods):
            get_method(methods[0]).param(key)  # raises, with a suggestion
    return {m: {k: v for k, v in params.items() if k in names[m]} for m in methods}


def progress_bar() -> Progress:
    """The progress bar of long commands: description, bar, done/total, elapsed (on stderr, when
    it is a terminal)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # piped: no bar, and no blank line where it was
    )


class Interrupted(Exception):
    """A command was interrupted (Ctrl-C or SIGTERM); the message says what was finished and
    what was not. The entry point prints it as one line and exits 130."""


def say(kind: str, message: object) -> None:
    """``kind: message`` as one line on stderr, never wrapped (the CLI's errors and warnings)."""
    print(f"{kind}: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def say_error(message: str) -> None:
    """One line ``error: ...`` on stderr."""
    say("error", message)
