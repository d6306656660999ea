"""Memory and time of one call on many images against one call per image and the bare floor.

For the bundled EfficientNet-Lite0 (its real weights) and N random 224x224 model inputs, N in
1, 8, 32 and 128 (``--sizes``), one method of each family:

- ``cam``: ``gradcam`` at the default layer;
- ``gradient``: ``saliency``;
- ``perturbation``: ``occlusion`` with a 112-pixel window and stride (4 windows, so 5 model
  evaluations per image: the clean input and one per window);

each run three ways:

- ``call``: ``seethrough.explain(model, x, method)``, the N images in one call;
- ``loop``: ``[seethrough.explain(model, x[i:i + 1], method) for i in range(N)]``;
- ``floor``: the network's own work with nothing around it, in chunks of the size ``explain``
  picks (``seethrough.core.batching``: 16 images of 224x224 for Grad-CAM, 4 for saliency and
  for the perturbation engine), parameters frozen: for ``cam`` the forward with the autograd graph
  starting at the layer and the backward from the top-class score to the layer; for
  ``gradient`` the forward and the backward from the top-class score to the input; for
  ``perturbation`` the forwards alone (the clean input and the 4 masked copies of each image,
  copies made by ``repeat``), all on the model as loaded. ``nhwc s/img`` is the same floor on a
  channels-last copy of the model fed channels-last input, for information: the layout
  ``explain`` switches the convolutions to on the CPU (``seethrough.core.layout``), without the
  copy of the weights that switching costs each call.

Memory: each (family, N, way) runs in a FRESH process (``--child``) that loads the model, makes
the N inputs, runs the work once and reports its peak resident set size (``VmHWM`` on Linux, not
``ru_maxrss``, which a child inherits from its parent across ``exec``): ``peak MB``. ``setup MB`` is the process's peak before the work (Python, torch, the model, the
inputs), so ``peak - setup`` is what the work itself added. Both ``call`` and ``loop`` keep
their N explanations until the end, as a caller would.

Time: in this process, every (family, way, N) is a candidate of ONE interleaved run per family
(see ``_timing.py``: warm-up, then round-robin, paired medians, CPU-time ratios beside the wall
ones). A candidate beyond one chunk warms up no more: the calls with fewer images warmed up the
same code and shapes. Seconds are per image.

Targets, printed as PASS/FAIL per row:

- ``mem``: the call's peak RSS within 1.5x of the loop's at every N (memory flat in N beyond one
  chunk: what grows is the inputs and the results, which the loop holds too);
- ``list``: the call never slower per image than the loop (median over rounds of call / loop
  <= 1.00; at N = 1 they are the same call, so no verdict);
- ``floor`` (``cam`` only): the call within 1.10x of the floor at every N.

A ``?`` marks a time verdict that the ratio of the minima or of the CPU times would give the
other way: the machine was too busy to call it; re-run with more rounds or ``--threads 1``.

Run: ``.venv/bin/python benchmarks/batch_memory.py [--quick] [--threads N] [--json PATH]``.
The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _timing as bench
import torch
from torch import nn

import seethrough
from seethrough.core import batching
from seethrough.core.layers import resolve_layer

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "cam": ("gradcam", {}),
    "gradient": ("saliency", {}),
    "perturbation": ("occlusion", {"window": "112", "stride": "112"}),
}
WINDOWS = 4  # occlusion windows of 112 pixels on 224x224
WAYS = ("call", "loop", "floor")
MEMORY_TARGET = 1.5
LIST_TARGET = 1.00
FLOOR_TARGET = 1.10
SIZE = 224


# ------------------------------------------------------------------------------- the work


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, total)) for s in range(0, total, size)]


def _floor(family: str, module: nn.Module, layer: nn.Module, x: torch.Tensor) -> None:
    """The network's own work for ``family`` on ``x`` (see the module docstring)."""
    with bench.frozen_parameters(module):
        if family == "perturbation":
            size = batching.auto_batch_size(x, batching.PERTURBATION)
            with torch.no_grad():
                for i in range(x.shape[0]):
                    module(x[i : i + 1])
                    for start, stop in _chunks(WINDOWS, size):
                        module(x[i : i + 1].repeat(stop - start, 1, 1, 1))
            return
        policy = batching.ONE_PASS if family == "cam" else batching.ONE_PASS_INPUT_GRADIENTS
        size = batching.auto_batch_size(x, policy)
        for start, stop in _chunks(x.shape[0], size):
            if family == "cam":
                _cam_floor(module, layer, x[start:stop])
            else:
                xi = x[start:stop].detach().requires_grad_(True)
                out = module(xi)
                top = out.argmax(dim=1, keepdim=True)
                torch.autograd.grad(out.gather(1, top).sum(), xi)


def _cam_floor(module: nn.Module, layer: nn.Module, x: torch.Tensor) -> None:
    """Forward with the graph starting at ``layer``, backward from the top score to it."""
    acts: list[torch.Tensor] = []

    def start_graph(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
        acts.append(out.detach().requires_grad_())
        return acts[-1].clone()

    handle = layer.register_forward_hook(start_graph)
    try:
        with torch.enable_grad():
            out = module(x)
    finally:
        handle.remove()
    top = out.argmax(dim=1, keepdim=True)
    torch.autograd.grad(out.gather(1, top).sum(), acts[-1])


def _work(
    family: str, way: str, vm: seethrough.VisionModel, layer: nn.Module, x: torch.Tensor
) -> Callable[[], object]:
    """The timed (or measured) call of one family and way on ``x``."""
    method, params = FAMILIES[family]
    if way == "call":
        return lambda: seethrough.explain(vm, x, method, **params)
    if way == "loop":
        return lambda: [
            seethrough.explain(vm, x[i : i + 1], method, **params) for i in range(x.shape[0])
        ]
    return lambda: _floor(family, vm.module, layer, x)


def _setup(n: int, seed: int) -> tuple[seethrough.VisionModel, nn.Module, torch.Tensor]:
    """The bundled model, its default layer and ``n`` random model inputs."""
    vm = seethrough.load_model()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, SIZE, SIZE, generator=gen)
    _, layer = resolve_layer(vm.module, None, x[:1], vm.default_layer)
    return vm, layer, x


# ------------------------------------------------------------------------- memory (children)


def _max_rss_mb() -> float:
    """This process's peak resident set size in MB.

    On Linux ``VmHWM`` of ``/proc/self/status``: the peak of this program's own address space.
    ``ru_maxrss`` is kept across ``exec``, so a child started by a large parent would report at
    least the parent's size. Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _child(family: str, n: int, way: str, seed: int) -> None:
    """Run one (family, N, way) once in this fresh process; print its memory as JSON."""
    vm, layer, x = _setup(n, seed)
    setup = _max_rss_mb()
    start = time.perf_counter()
    kept = _work(family, way, vm, layer, x)()
    seconds = time.perf_counter() - start
    print(json.dumps({"setup_mb": setup, "peak_mb": _max_rss_mb(), "seconds": seconds}))
    del kept


def _memory(family: str, n: int, way: str, args: argparse.Namespace) -> dict[str, float]:
    """Peak RSS of a fresh process running one (family, N, way)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", family, str(n), way]
    cmd += ["--seed", str(args.seed)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------- timing


def _timings(family: str, args: argparse.Namespace) -> dict[str, bench.Timing]:
    """One interleaved run of every way and size of ``family``."""
    vm, layer, x = _setup(max(args.sizes), args.seed)
    nhwc = copy.deepcopy(vm.module).to(memory_format=torch.channels_last)
    nhwc_layer = dict(nhwc.named_modules())[
        next(name for name, m in vm.module.named_modules() if m is layer)
    ]
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    chunk = batching.auto_batch_size(x, batching.ONE_PASS)
    candidates = []
    for n in args.sizes:
        warmup = None if n <= chunk else 0
        for way in WAYS:
            fn = _work(family, way, vm, layer, x[:n])
            candidates.append(bench.Candidate(f"{way}@{n}", fn, units=n, warmup=warmup))
        candidates.append(
            bench.Candidate(
                f"floor-nhwc@{n}",
                lambda n=n: _floor(family, nhwc, nhwc_layer, x_nhwc[:n]),
                units=n,
                warmup=warmup,
            )
        )
    return bench.run_interleaved(
        candidates, args.rounds, args.warmup, progress=lambda s: bench.log(f"  {family}: {s}")
    )


# ------------------------------------------------------------------------------ reporting


def _row(
    family: str, n: int, t: dict[str, bench.Timing], mem: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """The numbers and verdicts of one family at one size."""
    call, loop, floor = t[f"call@{n}"], t[f"loop@{n}"], t[f"floor@{n}"]
    row: dict[str, Any] = {
        "family": family,
        "method": FAMILIES[family][0],
        "images": n,
        "call": call.median,
        "loop": loop.median,
        "floor": floor.median,
        "floor_nhwc": t[f"floor-nhwc@{n}"].median,
    }
    over_loop, over_floor = bench.ratios(call, loop), bench.ratios(call, floor)
    for key, (ratio, at_min, cpu) in (
        ("call_over_loop", over_loop),
        ("call_over_floor", over_floor),
    ):
        row |= {key: ratio, f"{key}_at_min": at_min, f"{key}_cpu": cpu}
    row["memory"] = mem
    row["memory_ratio"] = mem["call"]["peak_mb"] / mem["loop"]["peak_mb"]
    row["mem_status"] = "PASS" if row["memory_ratio"] <= MEMORY_TARGET else "FAIL"
    row["list_status"] = "-" if n == 1 else bench.verdict(over_loop[0], over_loop[1:], LIST_TARGET)
    cam = family == "cam"
    row["floor_status"] = bench.verdict(over_floor[0], over_floor[1:], FLOOR_TARGET) if cam else "-"
    return row


HEADERS = (
    "family",
    "method",
    "images",
    "call s/img",
    "loop s/img",
    "floor s/img",
    "nhwc s/img",
    "call/loop",
    "call/floor",
    "call peak MB",
    "loop peak MB",
    "floor peak MB",
    "call +MB",
    "loop +MB",
    "mem call/loop",
    f"mem <= {MEMORY_TARGET:.1f}",
    f"call/loop <= {LIST_TARGET:.2f}",
    f"cam call/floor <= {FLOOR_TARGET:.2f}",
)


def _cells(row: dict[str, Any]) -> list[str]:
    mem = row["memory"]
    return [
        row["family"],
        row["method"],
        str(row["images"]),
        f"{row['call']:.4f}",
        f"{row['loop']:.4f}",
        f"{row['floor']:.4f}",
        f"{row['floor_nhwc']:.4f}",
        f"{row['call_over_loop']:.2f}",
        f"{row['call_over_floor']:.2f}",
        f"{mem['call']['peak_mb']:.0f}",
        f"{mem['loop']['peak_mb']:.0f}",
        f"{mem['floor']['peak_mb']:.0f}",
        f"{mem['call']['peak_mb'] - mem['call']['setup_mb']:.0f}",
        f"{mem['loop']['peak_mb'] - mem['loop']['setup_mb']:.0f}",
        f"{row['memory_ratio']:.2f}",
        row["mem_status"],
        row["list_status"],
        row["floor_status"],
    ]


def _slopes(rows: list[dict[str, Any]], family: str, chunk: int) -> str | None:
    """MB of peak RSS per image beyond one chunk, for the call and the loop of ``family``."""
    mine = {r["images"]: r["memory"] for r in rows if r["family"] == family}
    beyond = [n for n in mine if n > chunk]
    small = [n for n in mine if n <= chunk]
    if not beyond or not small:
        return None
    lo, hi = max(small), max(beyond)

    def slope(way: str) -> float:
        return (mine[hi][way]["peak_mb"] - mine[lo][way]["peak_mb"]) / (hi - lo)

    return (
        f"- {family}: peak RSS grows by {slope('call'):.2f} MB per image from {lo} to {hi} "
        f"images in one call, {slope('loop'):.2f} MB per image in a loop (the inputs alone: "
        f"{3 * SIZE * SIZE * 4 / 2**20:.2f} MB per image)"
    )


# ----------------------------------------------------------------------------------- main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 8, 32, 128], help="images")
    p.add_argument(
        "--families",
        nargs="+",
        default=list(FAMILIES),
        choices=list(FAMILIES),
        help="which families to measure",
    )
    p.add_argument("--rounds", type=int, default=3, help="timed rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per candidate first")
    p.add_argument("--quick", action="store_true", help="2 rounds (sizes unchanged)")
    bench.add_threads(p, bench.THREADS_HELP.replace(" first", " first, here and in every child"))
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the raw numbers here")
    p.add_argument(
        "--child",
        nargs=3,
        metavar=("FAMILY", "N", "WAY"),
        help="internal: measure one (family, N, way) in this process and print JSON",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 2)
    if args.rounds < 1 or args.warmup < 0 or min(args.sizes) < 1:
        p.error("--rounds and --sizes must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def _size(policy: batching.BatchPolicy) -> int:
    """Inputs of SIZE x SIZE per pass by ``policy`` on the CPU."""
    return batching.auto_batch_size(torch.empty(1, 3, SIZE, SIZE), policy)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the environment header and the Markdown table."""
    args = _parse(argv)
    env, wall = bench.begin_run(args.threads)
    if args.child is not None:
        family, n, way = args.child
        _child(family, int(n), way, args.seed)
        return 0
    chunk = _size(batching.ONE_PASS)
    rows: list[dict[str, Any]] = []
    for family in args.families:
        memory: dict[int, dict[str, dict[str, float]]] = {}
        for n in args.sizes:
            memory[n] = {}
            for way in WAYS:
                memory[n][way] = _memory(family, n, way, args)
                bench.log(
                    f"{family} {n} {way}: peak {memory[n][way]['peak_mb']:.0f} MB "
                    f"(setup {memory[n][way]['setup_mb']:.0f} MB)"
                )
        start = time.perf_counter()
        timings = _timings(family, args)
        bench.log(f"  {family}: timed in {time.perf_counter() - start:.0f} s")
        rows += [_row(family, n, timings, memory[n]) for n in args.sizes]
    total = time.perf_counter() - wall

    bench.print_header("Memory and time of one call on many images", env)
    print(
        f"- bundled efficientnet_lite0, {SIZE}x{SIZE} random inputs (seed {args.seed}); "
        f"images per pass: {chunk} (Grad-CAM), {_size(batching.ONE_PASS_INPUT_GRADIENTS)} "
        f"(saliency), {_size(batching.PERTURBATION)} (occlusion); {args.rounds} rounds, "
        f"warm-up {args.warmup}; "
        f"children with {args.threads or 'default'} threads"
    )
    print(f"- total benchmark time: {total:.0f} s\n")
    print(bench.markdown_table(HEADERS, [_cells(r) for r in rows]))
    statuses = [
        r[key]
        for r in rows
        for key in ("mem_status", "list_status", "floor_status")
        if r[key] != "-"
    ]
    print(
        f"\n{bench.status_line(statuses)}. s/img = seconds per image; call/loop and call/floor = "
        "median over rounds of the paired ratio; peak MB = peak RSS of a fresh process; +MB = "
        "peak minus the process before the work (model and inputs loaded)."
    )
    for family in args.families:
        line = _slopes(rows, family, chunk)
        if line is not None:
            print(line)
    if args.json is not None:
        bench.save_json(args.json, env, args, total, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
