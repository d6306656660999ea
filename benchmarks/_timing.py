"""Shared timing protocol for the benchmark scripts.

The protocol, meant for a small, shared and noisy CPU machine:

- ``torch.set_num_threads`` is left at its default (:func:`environment` reports it);
- every candidate first runs ``warmup`` untimed calls (allocator, oneDNN primitive caches,
  lazily built state);
- the timed calls are *interleaved*: round ``r`` calls every candidate once (round-robin, the
  starting candidate rotating each round), so a drift in machine load hits all candidates alike
  instead of whichever happened to be measured during it;
- the garbage collector runs between calls and is disabled during a timed call (as ``timeit``);
- each call records its wall time and the CPU time of the whole process (all threads): on a
  machine shared with other jobs a preempted call loses wall time but little CPU time, so CPU
  ratios are a cross-check of wall ratios (they also count spinning threads, so they are not a
  substitute);
- each candidate reports the median and the minimum of its samples; :func:`paired_ratio` gives
  the median over rounds of the per-round ratio of two candidates, which cancels load drifts
  slower than one round.

Typical use::

    timings = run_interleaved([Candidate("a", fa), Candidate("b", fb)], repeats=5, warmup=1)
    print(timings["a"].median, paired_ratio(timings["a"], timings["b"]))

The scaffolding every speed script shares lives here too, in one copy: :func:`frozen` runs a
floor with the parameters frozen as ``explain`` runs the model; :func:`ratios` and
:func:`verdict` turn two timings into the three ratios and a PASS/FAIL (``?`` where the
cross-checks disagree); :func:`parser`, :func:`add_threads` and :func:`begin_run` are the
command line and the start of a run; :func:`timed` logs an interleaved run's progress;
:func:`seconds`, :func:`markdown_table` and :func:`status_line` format the report.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "status_line",
    "save_json",
    "Candidate",
    "Timing",
    "run_interleaved",
    "timed",
    "paired_ratio",
    "ratios",
    "ratio_columns",
    "verdict",
    "environment",
    "markdown_table",
    "seconds",
    "frozen",
    "frozen_parameters",
    "parser",
    "THREADS_HELP",
    "add_threads",
    "begin_run",
]


@dataclass
class Candidate:
    """One thing to time.

    Attributes:
        name: unique key of the candidate in the results.
        fn: the timed call (its return value is dropped).
        cleanup: optional untimed call after every call of ``fn`` (e.g. to free gradients).
        repeats: timed calls of this candidate, if fewer than the run's ``repeats`` (it then
            takes part in the first rounds only); ``None`` for the run's value.
        warmup: untimed calls before timing; ``None`` for the run's value.
        units: what a sample is divided by in :attr:`Timing.samples` (e.g. the batch size, to
            report seconds per image).
    """

    name: str
    fn: Callable[[], object]
    cleanup: Callable[[], object] | None = None
    repeats: int | None = None
    warmup: int | None = None
    units: int = 1


@dataclass
class Timing:
    """The samples of one candidate, in seconds per unit, in round order.

    Attributes:
        name: the candidate's name.
        samples: wall-clock seconds per unit of each timed call.
        cpu: process CPU seconds (all threads) per unit of each timed call.
        rounds: the round of each sample.
    """

    name: str
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median of the samples (``nan`` if none)."""
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def min(self) -> float:
        """Fastest sample (``nan`` if none)."""
        return min(self.samples) if self.samples else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the samples were (0 for fewer than 2 samples)."""
        if len(self.samples) < 2:
            return 0.0
        return (max(self.samples) - min(self.samples)) / self.median

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly summary with the raw samples."""
        return {
            "median": self.median,
            "min": self.min,
            "spread": self.spread,
            "cpu_median": statistics.median(self.cpu) if self.cpu else float("nan"),
            "samples": list(self.samples),
            "cpu_samples": list(self.cpu),
            "rounds": list(self.rounds),
        }


def _call(candidate: Candidate) -> tuple[float, float]:
    """Wall and CPU seconds of one call of ``candidate.fn`` (gc collected before, off during)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        candidate.fn()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    finally:
        if enabled:
            gc.enable()
    if candidate.cleanup is not None:
        candidate.cleanup()
    return elapsed, cpu


def run_interleaved(
    candidates: Sequence[Candidate],
    repeats: int,
    warmup: int = 1,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Warm every candidate up, then time them round-robin for ``repeats`` rounds.

    Args:
        candidates: what to time (names must be unique).
        repeats: number of rounds; a candidate with a smaller ``repeats`` sits out later rounds.
        warmup: untimed calls per candidate (unless the candidate sets its own).
        progress: optional callback given one line of text per round.

    Returns:
        ``name -> Timing``, samples in seconds per ``candidate.units``.
    """
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate candidate names in {names}")
    for c in candidates:
        for _ in range(warmup if c.warmup is None else c.warmup):
            _call(c)
    timings = {c.name: Timing(c.name) for c in candidates}
    n = len(candidates)
    for r in range(repeats):
        start = time.perf_counter()
        order = [candidates[(r + i) % n] for i in range(n)] if n else []
        for c in order:
            if r >= (repeats if c.repeats is None else c.repeats):
                continue
            wall, cpu = _call(c)
            timings[c.name].samples.append(wall / c.units)
            timings[c.name].cpu.append(cpu / c.units)
            timings[c.name].rounds.append(r)
        if progress is not None:
            progress(f"round {r + 1}/{repeats} took {time.perf_counter() - start:.1f} s")
    return timings


def timed(
    label: str, candidates: Sequence[Candidate], repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """:func:`run_interleaved` with its progress on stderr: what it times, each round, the total.

    Args:
        label: what the run is about, at the head of the first progress line.
        candidates: what to time.
        repeats: number of rounds.
        warmup: untimed calls per candidate (unless the candidate sets its own).
    """
    log(f"{label}: {len(candidates)} candidates, {repeats} rounds")
    begun = time.perf_counter()
    timings = run_interleaved(candidates, repeats, warmup, progress=lambda m: log(f"  {m}"))
    log(f"  done in {time.perf_counter() - begun:.1f} s")
    return timings


def paired_ratio(a: Timing, b: Timing, *, cpu: bool = False) -> float:
    """Median over the rounds both took part in of ``a / b`` (``nan`` if none in common).

    Args:
        a: numerator.
        b: denominator.
        cpu: compare CPU times instead of wall times.
    """
    a_samples, b_samples = (a.cpu, b.cpu) if cpu else (a.samples, b.samples)
    bs = dict(zip(b.rounds, b_samples, strict=True))
    ratios = [s / bs[r] for r, s in zip(a.rounds, a_samples, strict=True) if r in bs]
    return statistics.median(ratios) if ratios else float("nan")


def ratios(a: Timing, b: Timing) -> tuple[float, float, float]:
    """``a / b`` three ways: the paired wall-time median, min over min, the paired CPU median."""
    return paired_ratio(a, b), a.min / b.min, paired_ratio(a, b, cpu=True)


def ratio_columns(a: Timing, b: Timing) -> dict[str, float]:
    """:func:`ratios` as a result row's ``ratio``, ``ratio_at_min`` and ``cpu_ratio``."""
    return dict(zip(("ratio", "ratio_at_min", "cpu_ratio"), ratios(a, b), strict=True))


def verdict(ratio: float, checks: Sequence[float], target: float, *, strict: bool = False) -> str:
    """``PASS`` when ``ratio`` meets ``target`` (``<=``, or ``<`` if ``strict``), else ``FAIL``;
    `` ?`` added when one of ``checks`` (ratio@min, CPU ratio) gives the other verdict."""

    def ok(value: float) -> bool:
        return value < target if strict else value <= target

    status = "PASS" if ok(ratio) else "FAIL"
    if any(ok(other) != ok(ratio) for other in checks):
        status += " ?"
    return status


def _cpu_name() -> str:
    """CPU model name from /proc/cpuinfo, else :func:`platform.processor`."""
    path = Path("/proc/cpuinfo")
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model"):
                return value.strip()
    return platform.processor() or "unknown"


def environment() -> dict[str, str]:
    """What the numbers depend on: versions, threads, CPU, load, date."""
    import torch

    env = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "torch interop threads": str(torch.get_num_interop_threads()),
        "cpu": _cpu_name(),
        "logical cpus": str(os.cpu_count()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        env["load average (1, 5, 15 min)"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return env


FLOOR_HEADERS = (
    "model",
    "batch",
    "method",
    "s/img median",
    "s/img min",
    "spread",
    "floor",
    "ratio",
    "ratio@min",
    "cpu ratio",
    "target",
    "status",
)
"""The columns every speed table starts with: timings, the floor they are set against, the verdict."""


def log(message: str) -> None:
    """A progress line on stderr (the tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def print_header(title: str, env: dict[str, str]) -> None:
    """The report's title, the environment it ran in and the load average at the end."""
    print(f"# {title}\n")
    for key, value in env.items():
        print(f"- {key}: {value}")
    if hasattr(os, "getloadavg"):
        print(f"- load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; columns whose cells all look numeric are right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def numeric(i: int) -> bool:
        cells = [r[i] for r in rows if r[i] not in ("", "-")]
        return bool(cells) and all(c.lstrip("-")[:1].isdigit() for c in cells)

    right = [numeric(i) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2))
            for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def seconds(s: float) -> str:
    """A table cell for ``s`` seconds: 4 decimals, or scientific notation below 1 ms."""
    return f"{s:.4f}" if s >= 0.001 else f"{s:.2e}"


def status_line(statuses: Sequence[str]) -> str:
    """``N PASS, M FAIL (K marked ?...)`` for a list of PASS/FAIL cells."""
    passed = sum(s.startswith("PASS") for s in statuses)
    unsure = sum(s.endswith("?") for s in statuses)
    return (
        f"{passed} PASS, {len(statuses) - passed} FAIL ({unsure} marked ?: ratio@min or cpu ratio "
        "disagrees)"
    )


def save_json(
    path: Path, environment: dict[str, str], args: object, total: float, results: object
) -> None:
    """Write a run's raw numbers (environment, arguments, total seconds, results) as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "environment": environment,
        "args": {k: str(v) for k, v in vars(args).items()},
        "total_seconds": total,
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"raw numbers saved to {path}", file=sys.stderr)


@contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Every parameter of ``module`` frozen for the block (restored after), as ``explain`` runs
    the model."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def frozen(module: nn.Module, fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` run with every parameter of ``module`` frozen (restored after each call)."""

    def run() -> None:
        with frozen_parameters(module):
            fn()

    return run


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's argument parser: the first paragraph of its docstring, defaults in ``--help``."""
    return argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


THREADS_HELP = (
    "call torch.set_num_threads(N) first (default: leave torch's default); 1 makes "
    "CPU-time ratios robust on a machine shared with other jobs"
)


PEER_HEADERS = (
    "model",
    "method",
    "ours s",
    "peer s",
    "peer",
    "ratio",
    "ratio@min",
    "cpu ratio",
    "target",
    "status",
)
"""The columns of a table of our methods against a peer's, one row per model and method."""


def peer_row(
    model: str,
    method: str,
    ours: Timing,
    theirs: Timing,
    peer: str,
    columns: dict[str, float],
    target: float,
    status: str,
) -> list[str]:
    """One row of a :data:`PEER_HEADERS` table (``columns``: :func:`ratio_columns` of the two)."""
    return [
        model,
        method,
        seconds(ours.median),
        seconds(theirs.median),
        peer,
        f"{columns['ratio']:.2f}",
        f"{columns['ratio_at_min']:.2f}",
        f"{columns['cpu_ratio']:.2f}",
        f"<= {target:.2f}",
        status,
    ]


def add_models(
    p: argparse.ArgumentParser, default: Sequence[str] = ("resnet18", "efficientnet_lite0")
) -> None:
    """The ``--models`` option: zoo names; the bundled model gets its weights, others random ones."""
    p.add_argument(
        "--models",
        nargs="+",
        default=list(default),
        help="model names (efficientnet_lite0 gets its bundled weights, others random weights)",
    )


def add_rounds(p: argparse.ArgumentParser, repeats: int = 3, warmup: int = 1) -> None:
    """The ``--repeats`` (timed rounds) and ``--warmup`` (untimed calls first) options."""
    p.add_argument("--repeats", type=int, default=repeats, help="timed rounds")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed calls per candidate first")


def add_threads(p: argparse.ArgumentParser, text: str = THREADS_HELP) -> None:
    """The ``--threads N`` option (``None``: torch's default), with the help ``text``;
    :func:`begin_run` applies it."""
    p.add_argument("--threads", type=int, help=text)


def begin_run(
    threads: int | None, ignore: type[Warning] = UserWarning
) -> tuple[dict[str, str], float]:
    """Set torch's thread count (unless ``None``), silence ``ignore`` warnings, and return the
    :func:`environment` and the wall clock the run's total time is counted from."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=ignore)
    return environment(), time.perf_counter()
