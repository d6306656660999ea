"""Speed of seethrough's gradient methods against the model's own floor and against Captum.

What is measured, for each model (defaults: resnet18 with random weights and the bundled
efficientnet_lite0), on a 224x224 random model input, all in ONE interleaved run per model (see
``_timing.py``: warm-up, then round-robin over the candidates, median and min of the repeats):

- ``seethrough.explain(model, x, method, target=T, ...)``, the whole public call (input checks,
  display images, the method, numpy conversion), for

  * ``saliency`` and ``guided_backprop`` at batch 1 and batch 8 (``--large-batch``);
  * ``integrated_gradients`` at batch 1: 50 steps (``--n-steps``), ``baseline=0.0`` (a number
    in model-input space), each rule of ``--rules`` (gausslegendre, riemann_trapezoid) at each
    ``batch_size`` of ``--ig-batches`` (1, 8, 16, 50);
  * ``smoothgrad`` over saliency at batch 1: ``n_samples=16``, ``noise=0.15``,
    ``batch_size=16``;

- Captum at the same settings, same explicit target class ``T`` (the top class of the first
  image, fixed before timing): ``Saliency(abs=False)`` (our attributions are the signed
  gradient), ``GuidedBackprop``, ``IntegratedGradients(baselines=0.0, n_steps, method,
  internal_batch_size)`` and ``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"``,
  ``nt_samples=16``, ``nt_samples_batch_size=16``, ``abs=False`` and ``stdevs`` = our sigma,
  ``noise * (max(x) - min(x))`` of the image. Captum gets the model as ``load_model`` returns
  it (eval mode, parameters requiring grad) unless ``--captum-frozen`` freezes its parameters
  too (as ``explain`` does for us). Captum guides ``nn.ReLU`` modules only: on a model with
  ``nn.ReLU6`` (efficientnet_lite0) its GuidedBackprop leaves those unguided, which is not
  the same algorithm, so that row gets no verdict against Captum;
- floors on the same model and input, in eval mode with frozen parameters (as ``explain``
  runs the model): ``fwd+bwd@b``, ``model(x)`` on a batch of ``b`` with
  ``x.requires_grad_(True)``, then ``torch.autograd.grad(out[:, T].sum(), x)``, for ``b`` in
  1, the large batch and every IG internal batch size; each both for the model as loaded
  (``nchw``) and for a channels-last copy fed channels-last input (``nhwc``: the layout
  ``explain`` switches to on the CPU when a call runs enough inputs to pay for copying the
  convolution weights, see ``seethrough.core.layout``; Captum runs the model as loaded).

How to read the ratios (all seconds are per image: a batch call's time divided by its size):

- ``ratio`` is the median over rounds of (method time / floor time) within the same round, so a
  load drift slower than one round cancels. ``ratio@min`` is min(method) / min(floor), the
  best case of each, and ``cpu ratio`` the paired median ratio of process CPU times (all
  threads), which a preempted call barely inflates. When either gives the other verdict than
  ``ratio``, the status gets a ``?``: the machine was too busy to call it; re-run with more
  repeats, or with ``--threads 1`` on a shared machine.
- saliency is compared with ``fwd+bwd`` of the model as loaded at its own batch and must stay
  within 1.10x (the ``nhwc`` row beside it is for information: it leaves out the copy of the
  weights that switching costs).
- integrated gradients: a row per rule and internal batch ``ib``, compared (for information)
  with ``50 x fwd+bwd@ib`` per image in the faster layout; then a ``best`` row per rule, ours
  at the internal batch with the lowest median, compared with the IG floor, ``50 x fwd+bwd@b``
  per image at the layout and ``b`` with the lowest median among every floor measured (1, 8,
  16, 50 by default, also with ``--quick``): the best a 50-step path can cost on this machine.
  It must stay within 1.10x. The IG floors only count the rounds the IG candidates took part in (the first
  ``--ig-repeats``), so that a load change in the later rounds cannot move the best ``b``. Ours also runs two forwards Captum does not (the clean output, which
  fixes the target, and the baseline's, for the completeness gap): 2 forwards on top of 50
  forward+backward passes, about 1%.
- guided backprop is compared with ``fwd+bwd`` and smoothgrad with ``16 x fwd+bwd@16`` (faster
  layout) for
  information only (no target): guided backprop pays a Python autograd function per ReLU,
  smoothgrad draws the noise.
- ``ours/captum`` is the paired median over rounds of our time over Captum's at equal settings
  (below 1: ours is faster) and must be <= 1.00 on every row; ``vs captum`` gets a ``?`` when
  min(ours) / min(captum) or the paired CPU-time ratio gives the other verdict. The ``best``
  IG rows compare our best internal batch with Captum's best.
- ``spread`` is (max - min) / median of our samples: how busy the machine was. On a machine
  shared with other CPU-bound jobs, torch's OpenMP threads stall at every parallel region while
  a sibling thread is descheduled: a call can take many times its quiet time and even CPU
  ratios drift. ``--threads 1`` avoids that at the price of measuring single-thread ratios.

Cost control (one IG call is ~50 forward+backward passes): IG candidates run ``--ig-repeats``
rounds (the first ones) and only one IG candidate per implementation is warmed up (at internal
batch 8, whose last chunk of 2 is the only shape the floors do not warm up); the other
candidates run ``--repeats`` rounds after ``--warmup`` untimed calls. The default run costs
about 600 CPU-seconds (measured single-threaded: ~300 per model, 70% of it IG), i.e. roughly 6
minutes with 2 threads on a quiet 2-core machine, 10 with ``--threads 1``. ``--quick`` (about
2 to 3 minutes on a quiet 2-core machine): 2 rounds, 1 IG round, IG internal batches 8 and 50
only (the IG floor still takes the best of 1, 8, 16 and 50).

Run: ``.venv/bin/python benchmarks/gradient_speed.py [--json PATH]`` (``--quick`` for a smoke
run). The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _timing as bench
import torch
from torch import nn

import seethrough
from seethrough.models import VisionModel

RULES = ("gausslegendre", "riemann_trapezoid")
SALIENCY_TARGET = 1.10
IG_TARGET = 1.10
CAPTUM_TARGET = 1.00
SMOOTH_SAMPLES = 16
SMOOTH_NOISE = 0.15


FLOOR = "floor:fwd+bwd@"
NHWC_FLOOR = "floor:nhwc fwd+bwd@"


LAYOUTS = ("nchw", "nhwc")


def _floor(b: int, layout: str = "nchw") -> str:
    return f"{FLOOR if layout == 'nchw' else NHWC_FLOOR}{b}"


def _faster(floors: Iterable[bench.Timing]) -> bench.Timing:
    """The floor with the lowest median (of one batch, over the layouts)."""
    return min(floors, key=lambda f: f.median)


@dataclass
class Config:
    """One model with the settings and the results of its interleaved run."""

    model: str
    target: int
    sigma: float
    guided_relus: int
    relu6: int
    timings: dict[str, bench.Timing] = field(default_factory=dict)


# ------------------------------------------------------------------------------ candidates


def _load(name: str) -> VisionModel:
    """The bundled model with its real weights, any other model with random weights (offline)."""
    weights = "default" if name == "efficientnet_lite0" else "none"
    vm = seethrough.load_model(name, weights=weights)
    vm.module.eval()
    return vm


def _fwd_bwd(module: nn.Module, x: torch.Tensor, target: int, layout: str) -> bench.Candidate:
    """One forward and one backward of the target's score down to the input, batch ``len(x)``:
    ``layout`` "nchw" is the model as loaded, "nhwc" a channels-last copy fed channels-last
    input (what ``explain`` switches to on the CPU for calls that run many inputs)."""
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        xi = x.detach().requires_grad_(True)
        out = module(xi)
        torch.autograd.grad(out[:, target].sum(), xi)

    return bench.Candidate(_floor(x.shape[0], layout), bench.frozen(module, run), units=x.shape[0])


def _ours(
    name: str, vm: VisionModel, x: torch.Tensor, method: str, **params: Any
) -> bench.Candidate:
    """``seethrough.explain`` on the whole batch."""

    def run() -> None:
        seethrough.explain(vm, x, method, **params)

    return bench.Candidate(f"ours:{name}", run, units=x.shape[0])


def _captum(
    name: str, module: nn.Module, x: torch.Tensor, frozen: bool, make: Callable[[], Any], **kw: Any
) -> bench.Candidate:
    """Captum's attribution class built inside the timed call, as ``explain`` builds ours."""

    def run() -> None:
        make().attribute(x, **kw)

    return bench.Candidate(
        f"captum:{name}", bench.frozen(module, run) if frozen else run, units=x.shape[0]
    )


def _ig_name(rule: str, ib: int) -> str:
    return f"ig {rule} ib={ib}"


def _candidates(
    vm: VisionModel, args: argparse.Namespace
) -> tuple[list[bench.Candidate], int, float]:
    """Everything timed for one model, the explicit target class and SmoothGrad's sigma."""
    from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency

    module, frozen = vm.module, args.captum_frozen
    batches = sorted({1, args.large_batch, *args.ig_batches, SMOOTH_SAMPLES})
    gen = torch.Generator().manual_seed(args.seed)
    big = torch.randn(max(batches), 3, args.size, args.size, generator=gen)
    x1, x8 = big[:1].clone(), big[: args.large_batch].clone()
    with torch.no_grad():
        target = int(module(x1).argmax(1))
    sigma = float(SMOOTH_NOISE * (x1.max() - x1.min()))
    nhwc = copy.deepcopy(module).to(memory_format=torch.channels_last)
    out = [_fwd_bwd(module, big[:b].clone(), target, "nchw") for b in batches]
    out += [_fwd_bwd(nhwc, big[:b].clone(), target, "nhwc") for b in batches]
    for x in (x1, x8):
        b = x.shape[0]
        out += [
            _ours(f"saliency@{b}", vm, x, "saliency", target=target),
            _captum(
                f"saliency@{b}",
                module,
                x,
                frozen,
                lambda: Saliency(module),
                target=target,
                abs=False,
            ),
            _ours(f"guided_backprop@{b}", vm, x, "guided_backprop", target=target),
            _captum(
                f"guided_backprop@{b}",
                module,
                x,
                frozen,
                lambda: GuidedBackprop(module),
                target=target,
            ),
        ]
    out += [
        _ours(
            "smoothgrad",
            vm,
            x1,
            "smoothgrad",
            target=target,
            wrapped="saliency",
            n_samples=SMOOTH_SAMPLES,
            noise=SMOOTH_NOISE,
            batch_size=SMOOTH_SAMPLES,
        ),
        _captum(
            "smoothgrad",
            module,
            x1,
            frozen,
            lambda: NoiseTunnel(Saliency(module)),
            target=target,
            abs=False,
            nt_type="smoothgrad",
            nt_samples=SMOOTH_SAMPLES,
            nt_samples_batch_size=SMOOTH_SAMPLES,
            stdevs=sigma,
        ),
    ]
    warm_ib = args.large_batch if args.large_batch in args.ig_batches else args.ig_batches[0]
    for rule in args.rules:
        for ib in args.ig_batches:
            name = _ig_name(rule, ib)
            pair = [
                _ours(
                    name,
                    vm,
                    x1,
                    "integrated_gradients",
                    target=target,
                    n_steps=args.n_steps,
                    integration=rule,
                    batch_size=ib,
                    baseline=0.0,
                ),
                _captum(
                    name,
                    module,
                    x1,
                    frozen,
                    lambda: IntegratedGradients(module),
                    target=target,
                    baselines=0.0,
                    n_steps=args.n_steps,
                    method=rule,
                    internal_batch_size=ib,
                ),
            ]
            for c in pair:
                c.repeats = args.ig_repeats
                c.warmup = args.warmup if (rule, ib) == (args.rules[0], warm_ib) else 0
            out += pair
    return out, target, sigma


# ------------------------------------------------------------------------------- reporting


def _scaled(t: bench.Timing, k: float, rounds: int | None = None) -> bench.Timing:
    """``t`` with every sample multiplied by ``k`` (a floor of ``k`` passes per image), keeping
    only the samples of the first ``rounds`` rounds (all if ``None``)."""
    keep = [i for i, r in enumerate(t.rounds) if rounds is None or r < rounds]
    return bench.Timing(
        t.name,
        [t.samples[i] * k for i in keep],
        [t.cpu[i] * k for i in keep],
        [t.rounds[i] for i in keep],
    )


def _versus_floor(
    ours: bench.Timing, floor: bench.Timing, label: str, target: float | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"floor": label, "floor_median": floor.median}
    row |= bench.ratio_columns(ours, floor)
    if target is not None:
        checks = (row["ratio_at_min"], row["cpu_ratio"])
        row |= {"target": target, "status": bench.verdict(row["ratio"], checks, target)}
    return row


def _versus_captum(ours: bench.Timing, theirs: bench.Timing, equal: bool) -> dict[str, Any]:
    ratio, at_min, cpu = bench.ratios(ours, theirs)
    row: dict[str, Any] = {
        "captum": theirs.median,
        "ours_over_captum": ratio,
        "ours_over_captum_at_min": at_min,
        "ours_over_captum_cpu": cpu,
    }
    row["vs_captum"] = bench.verdict(ratio, (at_min, cpu), CAPTUM_TARGET) if equal else "n/a"
    return row


def _timed(name: str, t: bench.Timing, batch: int, **extra: Any) -> dict[str, Any]:
    return {
        "method": name,
        "batch": batch,
        "median": t.median,
        "min": t.min,
        "spread": t.spread,
        **extra,
    }


def _best(timings: dict[str, bench.Timing], keys: dict[int, str]) -> tuple[int, bench.Timing]:
    """The ``(b, timing)`` with the lowest median among ``keys`` (``b -> candidate name``)."""
    b = min(keys, key=lambda k: timings[keys[k]].median)
    return b, timings[keys[b]]


def _rows(cfg: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The result rows of one model (seconds are per image)."""
    t = cfg.timings
    rows: list[dict[str, Any]] = []
    for b in (1, args.large_batch):
        floor = t[_floor(b)]
        rows.append(_timed("(floor) fwd+bwd", floor, b))
        rows.append(_timed("(floor) fwd+bwd nhwc", t[_floor(b, "nhwc")], b))
        for method in ("saliency", "guided_backprop"):
            ours = t[f"ours:{method}@{b}"]
            target = SALIENCY_TARGET if method == "saliency" else None
            row = _timed(method, ours, b, **_versus_floor(ours, floor, f"fwd+bwd@{b}", target))
            equal = method == "saliency" or cfg.relu6 == 0
            row |= _versus_captum(ours, t[f"captum:{method}@{b}"], equal)
            rows.append(row)
    n = args.n_steps
    measured = sorted(int(k.removeprefix(FLOOR)) for k in t if k.startswith(FLOOR))
    # the IG floor over the rounds IG took part in: its best batch and median are then
    # measured under the same load as the IG calls; both layouts count
    ig_floors = {
        (lay, b): _scaled(t[_floor(b, lay)], n, args.ig_repeats)
        for b in measured
        for lay in LAYOUTS
    }
    for (lay, b), floor in ig_floors.items():
        rows.append(_timed(f"(floor) {n} x fwd+bwd@{b} {lay}", floor, 1))
    best = min(ig_floors, key=lambda k: ig_floors[k].median)
    ig_floor = ig_floors[best]
    rows.append(_timed(f"(floor) IG: {n} x fwd+bwd, best {best[0]} b={best[1]}", ig_floor, 1))
    for rule in args.rules:
        keys = {ib: _ig_name(rule, ib) for ib in args.ig_batches}
        for ib, name in keys.items():
            ours = t[f"ours:{name}"]
            floor = _faster(ig_floors[(lay, ib)] for lay in LAYOUTS)
            row = _timed(name, ours, 1, **_versus_floor(ours, floor, f"{n} x @{ib}", None))
            rows.append(row | _versus_captum(ours, t[f"captum:{name}"], True))
        ib, ours = _best(t, {k: f"ours:{v}" for k, v in keys.items()})
        cb, theirs = _best(t, {k: f"captum:{v}" for k, v in keys.items()})
        row = _timed(
            f"ig {rule} best (ib={ib}; captum ib={cb})",
            ours,
            1,
            **_versus_floor(ours, ig_floor, f"{n} x @{best[1]} {best[0]}", IG_TARGET),
        )
        rows.append(row | _versus_captum(ours, theirs, True))
    if "ours:smoothgrad" in t:
        floor = _scaled(_faster(t[_floor(SMOOTH_SAMPLES, lay)] for lay in LAYOUTS), SMOOTH_SAMPLES)
        ours = t["ours:smoothgrad"]
        row = _timed(
            f"smoothgrad(saliency) n={SMOOTH_SAMPLES}",
            ours,
            1,
            **_versus_floor(ours, floor, f"{SMOOTH_SAMPLES} x @{SMOOTH_SAMPLES}", None),
        )
        rows.append(row | _versus_captum(ours, t["captum:smoothgrad"], True))
    return rows


HEADERS = (
    *bench.FLOOR_HEADERS,
    "captum s/img",
    "ours/captum",
    "@min",
    "cpu",
    "vs captum",
)


def _num(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "-"


def _cells(cfg: Config, row: dict[str, Any]) -> list[str]:
    """The table cells of one result row."""
    return [
        cfg.model,
        str(row["batch"]),
        row["method"],
        bench.seconds(row["median"]),
        bench.seconds(row["min"]),
        f"{row['spread']:.0%}",
        row.get("floor", "-"),
        _num(row, "ratio"),
        _num(row, "ratio_at_min"),
        _num(row, "cpu_ratio"),
        f"<= {row['target']:.2f}" if "target" in row else "-",
        row.get("status", "-"),
        bench.seconds(row["captum"]) if "captum" in row else "-",
        _num(row, "ours_over_captum"),
        _num(row, "ours_over_captum_at_min"),
        _num(row, "ours_over_captum_cpu"),
        row.get("vs_captum", "-"),
    ]


# ------------------------------------------------------------------------------------ main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    bench.add_models(p)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds")
    p.add_argument("--ig-repeats", type=int, default=3, help="timed rounds of the IG candidates")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per candidate first")
    p.add_argument(
        "--large-batch", type=int, default=8, help="second batch of saliency, guided backprop"
    )
    p.add_argument("--n-steps", type=int, default=50, help="IG steps")
    p.add_argument(
        "--ig-batches",
        nargs="+",
        type=int,
        default=[1, 8, 16, 50],
        help="IG internal batch sizes (also the batches of the IG floor)",
    )
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES, help="IG rules")
    p.add_argument(
        "--captum-frozen",
        action="store_true",
        help="freeze the parameters for Captum's calls too (default: the model as loaded)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~2-3 min on a quiet 2-core machine): 2 rounds, 1 IG round, IG internal "
        "batches 8 and 50",
    )
    bench.add_threads(p)
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input and weights")
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the raw numbers here")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.ig_repeats, args.ig_batches = 2, 1, [8, 50]
    args.ig_batches = sorted(set(args.ig_batches))
    args.rules = list(dict.fromkeys(args.rules))
    if min(args.repeats, args.ig_repeats, args.large_batch, args.n_steps, *args.ig_batches) < 1:
        p.error("repeat counts, batch sizes and --n-steps must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.n_steps < 2 and "riemann_trapezoid" in args.rules:
        p.error("riemann_trapezoid needs --n-steps >= 2")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def _count(module: nn.Module, cls: type) -> int:
    return sum(type(m) is cls for m in module.modules())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the environment header and the Markdown table."""
    args = _parse(argv)
    env, wall = bench.begin_run(args.threads)
    configs: list[Config] = []
    for model_name in args.models:
        torch.manual_seed(args.seed)  # reproducible random weights, hence target class
        vm = _load(model_name)
        candidates, target, sigma = _candidates(vm, args)
        relus, relu6 = _count(vm.module, nn.ReLU), _count(vm.module, nn.ReLU6)
        cfg = Config(model_name, target, sigma, relus, relu6)
        rounds = max(args.repeats, args.ig_repeats)
        label = f"{model_name}: target class {target}"
        cfg.timings = bench.timed(label, candidates, rounds, args.warmup)
        configs.append(cfg)
    total = time.perf_counter() - wall

    bench.print_header("Gradient methods speed", env)
    print(f"- command: {' '.join(sys.argv)}")
    import captum

    print(
        f"- captum {captum.__version__} "
        f"({'frozen parameters' if args.captum_frozen else 'model as loaded'})"
    )
    print(
        f"- rounds: {args.repeats} (IG: {args.ig_repeats}); warm-up {args.warmup} (IG: one per "
        f"implementation); input {args.size}x{args.size} random (seed {args.seed}); IG "
        f"{args.n_steps} steps, baseline 0.0, internal batches {args.ig_batches}; SmoothGrad "
        f"n={SMOOTH_SAMPLES}, noise {SMOOTH_NOISE}"
    )
    for cfg in configs:
        note = (
            f"; {cfg.relu6} nn.ReLU6 modules, which Captum's GuidedBackprop leaves unguided "
            "(no verdict)"
            if cfg.relu6
            else ""
        )
        print(
            f"- {cfg.model}: target class {cfg.target}, SmoothGrad sigma {cfg.sigma:.4f}, "
            f"{cfg.guided_relus} nn.ReLU modules{note}"
        )
    print(f"- total benchmark time: {total:.0f} s\n")
    results: list[dict[str, Any]] = []
    table: list[list[str]] = []
    for cfg in configs:
        rows = _rows(cfg, args)
        table += [_cells(cfg, r) for r in rows]
        results.append(
            {
                "model": cfg.model,
                "target": cfg.target,
                "sigma": cfg.sigma,
                "rows": rows,
                "timings": {k: v.to_dict() for k, v in cfg.timings.items()},
            }
        )
    print(bench.markdown_table(HEADERS, table))
    for column, label in (("status", "floor targets"), ("vs_captum", "vs Captum")):
        statuses = [r[column] for res in results for r in res["rows"] if column in r]
        statuses = [s for s in statuses if s != "n/a"]
        print(f"\n{label}: {bench.status_line(statuses)}.")
    print(
        "\ns/img = seconds per image; ratio = median over rounds of method / floor; "
        "ours/captum = median over rounds of ours / Captum (below 1: ours faster)."
    )
    if args.json is not None:
        bench.save_json(args.json, env, args, total, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
