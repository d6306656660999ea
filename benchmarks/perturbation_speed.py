"""Speed and quality per model call of seethrough's LIME, Kernel SHAP and occlusion vs their peers.

Everything runs in ONE process and, for the speed table, in ONE interleaved run per model (each
round times every candidate once with ``_timing.run_interleaved``, in ABBA order: the listed
order, then the reverse; median and min over the rounds), on the sample
photo ``chelsea`` preprocessed by the model's own ``vm.preprocess`` (224x224). Models (default):
``resnet18`` with random weights and the bundled ``efficientnet_lite0`` (real ImageNet weights).
The explained class is the model's top class; the explained score is its softmax probability.

Equal settings (what every implementation is given):

- the SAME features: seethrough's SLIC superpixels of the image the model sees (``n_segments=50``),
  computed once and handed to every implementation (``segments=`` for us, a ``segmentation_fn``
  returning the precomputed array for ``lime``, the ``feature_mask`` for Captum, the indicator
  space of the masking function for ``shap``);
- the SAME hiding: a hidden pixel becomes 0 in model-input space (the dataset's mean colour):
  ``hide=0.0`` for us, ``hide_color=0`` for ``lime`` fed the normalised HWC float image,
  ``baselines=0`` for Captum, ``x * mask`` in the ``shap`` masking function;
- the SAME budget: ``--n-samples`` (1000) perturbations, and the SAME batch size (ours: the
  batch ``explain`` picks by itself, ``core.batching.PERTURBATION``, printed per model; or
  ``--batch-size``) for every peer that batches
  (``lime`` ``batch_size``, Captum ``perturbations_per_eval``, the ``shap`` masking function);
- the SAME estimator: ``lime.LimeImageExplainer(kernel_width=0.25, feature_selection="none")``
  (ridge alpha=1 on all features with lime's kernel, which is ours); Captum ``Lime`` with
  ``SkLearnRidge(alpha=1)`` and lime's kernel on the indicators (its defaults, a Lasso and a
  kernel on the input-space distance, would be another estimator); Captum ``KernelShap`` with
  its defaults (Shapley-kernel sampling, unweighted least squares); ``shap.KernelExplainer``
  with ``l1_reg=False`` (its default ``num_features(10)`` keeps only 10 non-zero values).
  One difference is ours by design: our LIME draws its coalitions in complementary pairs
  (``paired=True``, its default), the peers independently; each coalition has the same
  distribution either way, and table 2 measures what the pairs buy;
  occlusion with window 32, stride 16, baseline 0 for us and Captum ``Occlusion``.

Why ``shap.KernelExplainer`` and not shap's ``Partition`` explainer with an image masker: the
image masker hides rectangles of a fixed pixel hierarchy (by blurring or inpainting) and
``Partition`` estimates Owen values over that hierarchy, so it can use neither our superpixels
nor our hiding value nor our estimator; KernelExplainer on the F superpixel indicators with a
masking function ``f(z) -> probability of the class`` is Kernel SHAP on the same features,
the same coalition game and the same number of model calls: the only peer at equal settings.

How to read table 1 (speed; seconds are per image = per call, since one image is explained):

- ``evals``: model evaluations the call made, COUNTED by a hook on the network (every image
  that goes through ``forward``), not taken from the documentation. Ours includes the clean
  forward ``explain`` does to pick the class.
- ``floor``: ``evals`` x the best per-image forward time measured in the same run: the
  network alone under ``torch.no_grad()`` at batches 1, 4, 8, 16 and 32 (each floor candidate
  runs about ``--floor-images`` images per call), both as loaded (``nchw``) and as a
  channels-last copy fed channels-last input (``nhwc``, the layout ``explain`` switches to on
  the CPU for calls that run the model many times, see ``seethrough.core.layout``), taking the
  fastest layout and batch per round. Peers run the model as loaded: channels-last is part of
  what makes ours faster, and the floor counts it, so it cannot flatter our ratio.
- ``ratio``: the median over rounds of (total / floor) within a round, so a drift in machine
  load slower than one round cancels. 1.00 means nothing but the network costs time; ours must
  stay within 1.10x. A ratio above 1 has two sources: work outside the network (building masks,
  fitting, Python), and a batch size slower per image than the floor's best batch (the floor
  uses the best of five batch sizes; every implementation here runs at our batch size).
- ``ours faster``: the median over rounds of (peer time / our time) for the same method:
  above 1 we are faster. Ours must never be slower than a peer at equal settings.
- cross-checks: ``ratio@min`` and ``@min`` compare the best case of each side (min over
  rounds; the floor at its best batch); ``cpu ratio`` and ``cpu`` compare process CPU seconds
  (all threads), which a call preempted by other jobs barely inflates (but spinning OpenMP
  threads do). When a cross-check gives the other verdict, or the value is within 3% of its
  threshold, the status gets a ``?``: too noisy or too close to call; rerun with more
  ``--repeats``, or ``--threads 1`` on a shared machine (two threads that other jobs preempt
  wait for each other at every layer: on a busy 2-core box that costs far more than the
  second thread gains, most of all at small batches).
- ``spread``: (max - min) / median of a row's samples: how busy the machine was.

How to read table 2 (quality per model call; ``--quality-model``, efficientnet_lite0): for
LIME and Kernel SHAP, each implementation at ``--quality-n-samples`` perturbations against a
reference: OUR same method at ``--reference-samples`` (10000) with another seed
(``--reference-seed``: with the same seed our smaller runs would reuse the reference's first
draws, which would flatter us). ``top5`` is the overlap of the 5 highest-weighted segments with
the reference's 5 (0..1) and ``rho`` the Spearman rank correlation of all segment weights with
the reference's (``scipy.stats.spearmanr``). For Kernel SHAP the reference is our estimator,
which enforces efficiency (the weights sum to f(all) - f(none)) as shap's does; Captum's
unconstrained regression aims at slightly different values, so its rho may level off below
ours: that is part of what is measured. The summary lines read "peer at n = ours at ~m
calls": where our rho curve (interpolated linearly in log(calls) between the measured n) first
reaches the peer's rho at n, i.e. the same quality at (peer's calls) / m times fewer model
calls. One seed per cell by default: with ~40 segments, rho moves by a few hundredths from
seed to seed, so a factor near 1 means "the same"; ``--quality-seeds`` averages more seeds.

Run: ``.venv/bin/python benchmarks/perturbation_speed.py [--json PATH]`` (full: both tables),
``--quick`` for a ~2-minute smoke run, ``--tables 2`` for the quality table alone. Tables go
to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import _timing as bench
import numpy as np
import torch

import seethrough
from seethrough.core.batching import PERTURBATION, auto_batch_size
from seethrough.images import sample_image
from seethrough.methods.perturbation import segment
from seethrough.models import VisionModel

FLOOR_BATCHES = (1, 4, 8, 16, 32)
FLOOR_LAYOUTS = ("nchw", "nhwc")  # the model as loaded, and a channels-last copy of it
FLOORS = tuple(itertools.product(FLOOR_LAYOUTS, FLOOR_BATCHES))
RATIO_TARGET = 1.10
CLOSE = 0.03  # a verdict within 3% of its threshold is marked "?": too close to call here
WINDOW, STRIDE = 32, 16
LIME_KERNEL_WIDTH = 0.25
METHODS = ("lime", "kernelshap", "occlusion")
PEERS: dict[str, tuple[str, ...]] = {
    "lime": ("lime", "captum"),
    "kernelshap": ("shap", "captum"),
    "occlusion": ("captum",),
}
PEER_TITLES = {
    ("lime", "lime"): "lime LimeImageExplainer",
    ("lime", "captum"): "captum Lime",
    ("kernelshap", "shap"): "shap KernelExplainer",
    ("kernelshap", "captum"): "captum KernelShap",
    ("occlusion", "captum"): "captum Occlusion",
}
QUALITY_METHODS = ("lime", "kernelshap")

Explainer = Callable[[int, int], np.ndarray]
"""``run(n_samples, seed) -> weights``: one explanation of the image (one value per feature)."""


# ---------------------------------------------------------------------------------- setup


class Counter:
    """Counts the images that go through a module's forward (a forward pre-hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.n += int(args[0].shape[0])


@dataclass
class Setup:
    """One model with the image, its class, its features and the shared batch size."""

    name: str
    vm: VisionModel
    x: torch.Tensor  # (1, 3, H, W) model input
    target: int
    labels: np.ndarray  # (H, W) int32 features 0..F-1
    batch: int
    counter: Counter

    @property
    def features(self) -> int:
        return int(self.labels.max()) + 1


def load(name: str, batch_size: int) -> Setup:
    """Load the model (bundled weights for efficientnet_lite0, random ones otherwise, seeded so
    every run explains the same model)."""
    weights = "default" if name == "efficientnet_lite0" else "none"
    torch.manual_seed(0)
    vm = seethrough.load_model(name, weights=weights)
    image = sample_image("chelsea")
    x = vm.preprocess(image)
    with torch.no_grad():
        target = int(vm.module(x).argmax(1))
    labels = segment(vm.preprocessing.display_image(image), "slic")
    batch = batch_size or auto_batch_size(x, PERTURBATION)
    return Setup(name, vm, x, target, labels, batch, Counter(vm.module))


def _probabilities(s: Setup) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's softmax probabilities (what every peer explains)."""

    def forward(inp: torch.Tensor) -> torch.Tensor:
        return s.vm.module(inp).softmax(dim=1)

    return forward


# ------------------------------------------------------------------------- implementations


def ours(s: Setup, method: str) -> Explainer:
    """``seethrough.explain`` on the preprocessed tensor, with the shared settings."""

    def run(n: int, seed: int) -> np.ndarray:
        if method == "occlusion":
            params: dict[str, Any] = {"window": WINDOW, "stride": STRIDE}
        else:
            params = {"segments": s.labels, "n_samples": n}
        e = seethrough.explain(
            s.vm,
            s.x[0],
            method,
            hide=0.0,
            batch_size=s.batch,
            seed=seed,
            score="probability",
            **params,
        )
        assert not isinstance(e, list) and e.target == s.target
        if method == "occlusion":
            return np.asarray(e.raw, dtype=np.float64)
        return np.asarray(e.weights, dtype=np.float64)

    return run


def lime_package(s: Setup) -> Explainer:
    """``lime``'s LimeImageExplainer on the normalised HWC float image, our segments."""
    import lime.lime_image
    from lime.lime_image import LimeImageExplainer

    lime.lime_image.tqdm = lambda rows: rows  # its per-sample progress bar, to stderr
    image = s.x[0].permute(1, 2, 0).contiguous().numpy()  # normalised, float32, HWC
    forward = _probabilities(s)

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            return forward(batch).numpy()

    def run(n: int, seed: int) -> np.ndarray:
        explainer = LimeImageExplainer(
            kernel_width=LIME_KERNEL_WIDTH, feature_selection="none", random_state=seed
        )
        e = explainer.explain_instance(
            image,
            classifier_fn,
            labels=(s.target,),
            hide_color=0,
            top_labels=None,
            num_features=s.features,
            num_samples=n,
            batch_size=s.batch,
            segmentation_fn=lambda _: s.labels,
            random_seed=seed,
        )
        weights = np.zeros(s.features)
        for feature, weight in e.local_exp[s.target]:
            weights[feature] = weight
        return weights

    return run


def _cosine_kernel(
    original: torch.Tensor, perturbed: torch.Tensor, interpretable: torch.Tensor, **_: object
) -> float:
    """lime's (and our) kernel on the indicators: sqrt(exp(-d^2 / 0.25^2)), d cosine distance."""
    kept = float(interpretable.sum())
    d = 1.0 - math.sqrt(kept) / math.sqrt(interpretable.numel()) if kept > 0 else 1.0
    return math.sqrt(math.exp(-(d**2) / LIME_KERNEL_WIDTH**2))


def captum(s: Setup, method: str) -> Explainer:
    """Captum's Lime / KernelShap / Occlusion with our features, baseline 0 and batch."""
    from captum.attr import KernelShap, Lime, Occlusion

    forward = _probabilities(s)
    mask = torch.from_numpy(s.labels).long()[None, None]  # (1, 1, H, W), broadcast over C

    def run(n: int, seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        if method == "occlusion":
            out = Occlusion(forward).attribute(
                s.x,
                sliding_window_shapes=(s.x.shape[1], WINDOW, WINDOW),
                strides=(s.x.shape[1], STRIDE, STRIDE),
                baselines=0.0,
                target=s.target,
                perturbations_per_eval=s.batch,
            )
            return out[0, 0].double().numpy()
        if method == "lime":
            from captum._utils.models.linear_model import SkLearnRidge

            explainer: Any = Lime(
                forward, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=_cosine_kernel
            )
        else:
            explainer = KernelShap(forward)
        out = explainer.attribute(
            s.x,
            target=s.target,
            baselines=0.0,
            feature_mask=mask,
            n_samples=n,
            perturbations_per_eval=s.batch,
            return_input_shape=False,
        )
        return out.reshape(-1).double().numpy()

    return run


def shap_kernel(s: Setup) -> Explainer:
    """``shap.KernelExplainer`` on the F superpixel indicators (background: all hidden)."""
    import shap

    segments = torch.from_numpy(s.labels).long()
    forward = _probabilities(s)

    def f(z: np.ndarray) -> np.ndarray:
        """Indicators ``(M, F)`` -> probability of the class ``(M,)``, in batches."""
        out = []
        with torch.no_grad():
            for i in range(0, len(z), s.batch):
                masks = torch.from_numpy(z[i : i + s.batch]).to(s.x.dtype)[:, segments]
                out.append(forward(s.x * masks[:, None])[:, s.target])
        return torch.cat(out).double().numpy()

    def run(n: int, seed: int) -> np.ndarray:
        np.random.seed(seed)
        explainer = shap.KernelExplainer(f, np.zeros((1, s.features)))
        values = explainer.shap_values(
            np.ones((1, s.features)), nsamples=n, l1_reg=False, silent=True
        )
        return np.asarray(values, dtype=np.float64).reshape(-1)

    return run


def explainer(s: Setup, method: str, impl: str) -> Explainer:
    """The implementation ``impl`` ("ours", "lime", "shap", "captum") of ``method``."""
    if impl == "ours":
        return ours(s, method)
    if impl == "lime":
        return lime_package(s)
    if impl == "shap":
        return shap_kernel(s)
    return captum(s, method)


# --------------------------------------------------------------------------- table 1: speed


@dataclass
class SpeedResult:
    """One model's interleaved run: timings, evaluation counts, outputs at the table's n."""

    setup: Setup
    timings: dict[str, bench.Timing] = field(default_factory=dict)
    evals: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def _floor_candidate(
    s: Setup, layout: str, batch: int, images: int, nhwc: torch.nn.Module
) -> bench.Candidate:
    """``images`` images (rounded to whole batches) through the network at batch ``batch``:
    the model as loaded (``nchw``) or ``nhwc``, its channels-last copy fed channels-last input."""
    xb = s.x.expand(batch, -1, -1, -1).contiguous()
    net = s.vm.module
    if layout == "nhwc":
        xb, net = xb.contiguous(memory_format=torch.channels_last), nhwc
    calls = max(1, round(images / batch))

    def run() -> None:
        with torch.no_grad():
            for _ in range(calls):
                net(xb)

    return bench.Candidate(f"floor:{layout}:{batch}", run, units=calls * batch, warmup=0)


def _method_candidate(
    s: Setup, result: SpeedResult, method: str, impl: str, n: int, seed: int
) -> bench.Candidate:
    """One explanation per call; records the counted evaluations and the output."""
    run = explainer(s, method, impl)
    key = f"{impl}:{method}"

    def call() -> None:
        start = s.counter.n
        result.outputs[key] = run(n, seed)
        result.evals[key] = s.counter.n - start

    return bench.Candidate(key, call, warmup=0)


def speed(s: Setup, args: argparse.Namespace) -> SpeedResult:
    """Prime every code path, then the timed rounds, in ABBA order.

    Round ``r`` times every candidate once, in the listed order for even ``r`` and in the
    reverse order for odd ``r``: a load that rises or falls during the run then favours no
    candidate over an even number of rounds (a plain rotation of the start, with a dozen
    candidates, would leave each peer after ours in most rounds).
    """
    result = SpeedResult(s)
    pairs = [(m, impl) for m in args.methods for impl in ("ours", *PEERS[m])]
    for method, impl in pairs:  # imports, lazily built state, allocator: untimed and small
        if method != "occlusion":
            explainer(s, method, impl)(min(args.n_samples, s.batch + 2), args.seed)
    nhwc = copy.deepcopy(s.vm.module).to(memory_format=torch.channels_last)
    candidates = [_floor_candidate(s, *f, args.floor_images, nhwc) for f in FLOORS]
    for c in candidates:
        c.fn()  # untimed warm-up of each floor batch size
    candidates += [
        _method_candidate(s, result, method, impl, args.n_samples, args.seed)
        for method, impl in pairs
    ]
    bench.log(f"{s.name}: {len(candidates)} candidates, {args.repeats} rounds (ABBA order)")
    start = time.perf_counter()
    result.timings = {c.name: bench.Timing(c.name) for c in candidates}
    for r in range(args.repeats):
        order = candidates if r % 2 == 0 else candidates[::-1]
        one = bench.run_interleaved(order, 1, warmup=0)
        for name, t in one.items():
            merged = result.timings[name]
            merged.samples += t.samples
            merged.cpu += t.cpu
            merged.rounds += [r] * len(t.samples)
        bench.log(f"  round {r + 1}/{args.repeats} done at {time.perf_counter() - start:.1f} s")
    return result


def _floor_per_round(
    r: SpeedResult, *, cpu: bool = False
) -> dict[int, tuple[float, tuple[str, int]]]:
    """Round -> (best per-image forward seconds over layouts and batches, that layout and
    batch); wall or CPU."""
    best: dict[int, tuple[float, tuple[str, int]]] = {}
    for layout, b in FLOORS:
        t = r.timings[f"floor:{layout}:{b}"]
        for rnd, sample in zip(t.rounds, t.cpu if cpu else t.samples, strict=True):
            if rnd not in best or sample < best[rnd][0]:
                best[rnd] = (sample, (layout, b))
    return best


def _best_floor(r: SpeedResult) -> tuple[float, tuple[str, int]]:
    """The best per-image forward over all rounds, layouts and batches (min of mins), and its
    layout and batch."""
    return min((r.timings[f"floor:{lay}:{b}"].min, (lay, b)) for lay, b in FLOORS)


def _paired_floor_ratio(
    t: bench.Timing,
    evals: int,
    floor: dict[int, tuple[float, tuple[str, int]]],
    *,
    cpu: bool = False,
) -> float:
    """Median over rounds of (time / (evals x that round's floor))."""
    samples = t.cpu if cpu else t.samples
    ratios = [s / (evals * floor[rnd][0]) for rnd, s in zip(t.rounds, samples, strict=True)]
    return statistics.median(ratios)


def speed_rows(r: SpeedResult) -> list[dict[str, Any]]:
    """One row per implementation and method (seconds per image).

    The status is PASS / FAIL on the paired wall-clock median; a ``?`` says that the best case
    (``@min``) or the process CPU time gives the other verdict.
    """
    floor_wall, floor_cpu = _floor_per_round(r), _floor_per_round(r, cpu=True)
    floor_min = _best_floor(r)[0]
    floor_median = statistics.median(v for v, _ in floor_wall.values())
    rows: list[dict[str, Any]] = []
    for method in (m for m in METHODS if f"ours:{m}" in r.timings):
        mine = r.timings[f"ours:{method}"]
        for impl in ("ours", *PEERS[method]):
            key = f"{impl}:{method}"
            t, evals = r.timings[key], r.evals[key]
            row: dict[str, Any] = {
                "model": r.setup.name,
                "method": method,
                "impl": "seethrough" if impl == "ours" else PEER_TITLES[(method, impl)],
                "evals": evals,
                "median": t.median,
                "min": t.min,
                "spread": t.spread,
                "floor": evals * floor_median,
                "ratio": _paired_floor_ratio(t, evals, floor_wall),
                "ratio_at_min": t.min / (evals * floor_min),
                "cpu_ratio": _paired_floor_ratio(t, evals, floor_cpu, cpu=True),
                "samples": t.to_dict(),
            }
            if impl == "ours":
                checks = [row[k] <= RATIO_TARGET for k in ("ratio", "ratio_at_min", "cpu_ratio")]
                row["target"] = f"ratio <= {RATIO_TARGET:.2f}"
            else:
                row["ours_faster"] = bench.paired_ratio(t, mine)
                row["ours_faster_at_min"] = t.min / mine.min
                row["ours_faster_cpu"] = bench.paired_ratio(t, mine, cpu=True)
                checks = [
                    row[k] >= 1.0 for k in ("ours_faster", "ours_faster_at_min", "ours_faster_cpu")
                ]
                row["target"] = "ours faster >= 1"
            value, threshold = (
                (row["ratio"], RATIO_TARGET) if impl == "ours" else (row["ours_faster"], 1.0)
            )
            close = abs(value / threshold - 1) < CLOSE
            row["status"] = ("PASS" if checks[0] else "FAIL") + (
                " ?" if len(set(checks)) > 1 or close else ""
            )
            rows.append(row)
    return rows


SPEED_HEADERS = (
    "model",
    "method",
    "implementation",
    "evals",
    "s/img median",
    "s/img min",
    "spread",
    "floor s",
    "ratio",
    "ratio@min",
    "cpu ratio",
    "ours faster",
    "@min",
    "cpu",
    "target",
    "status",
)


def _speed_cells(row: dict[str, Any]) -> list[str]:
    def times(key: str) -> str:
        return "-" if key not in row else f"{row[key]:.2f}x"

    return [
        row["model"],
        row["method"],
        row["impl"],
        str(row["evals"]),
        f"{row['median']:.2f}",
        f"{row['min']:.2f}",
        f"{row['spread']:.0%}",
        f"{row['floor']:.2f}",
        f"{row['ratio']:.2f}",
        f"{row['ratio_at_min']:.2f}",
        f"{row['cpu_ratio']:.2f}",
        times("ours_faster"),
        times("ours_faster_at_min"),
        times("ours_faster_cpu"),
        row["target"],
        row["status"],
    ]


def _floor_lines(r: SpeedResult) -> list[str]:
    """Per-image forward time (median of rounds) at every floor layout and batch."""
    cells = {
        layout: ", ".join(
            f"b{b} {r.timings[f'floor:{layout}:{b}'].median * 1000:.1f}" for b in FLOOR_BATCHES
        )
        for layout in FLOOR_LAYOUTS
    }
    best, (layout, batch) = _best_floor(r)
    return [
        f"- {r.setup.name}: forward ms/img (median) {'; '.join(f'{k} {v}' for k, v in cells.items())}; "
        f"best {best * 1000:.1f} ms ({layout}, batch {batch}); our batch {r.setup.batch}; "
        f"{r.setup.features} segments; class {r.setup.target} ({r.setup.vm.label(r.setup.target)})"
    ]


def _occlusion_check(r: SpeedResult) -> str | None:
    """Ours vs Captum occlusion maps: the same windows and baseline must give the same map."""
    a, b = r.outputs.get("ours:occlusion"), r.outputs.get("captum:occlusion")
    if a is None or b is None:
        return None
    gap = float(np.abs(a - b).max())
    scale = float(np.abs(b).max())
    return f"- {r.setup.name}: occlusion map, max |ours - captum| = {gap:.2e} (scale {scale:.2e})"


# ------------------------------------------------------------------------- table 2: quality


def _top_overlap(w: np.ndarray, ref: np.ndarray, k: int = 5) -> float:
    top = set(np.argsort(-w, kind="stable")[:k].tolist())
    return len(top & set(np.argsort(-ref, kind="stable")[:k].tolist())) / k


def _spearman(w: np.ndarray, ref: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(w, ref).statistic)


@dataclass
class QualityCell:
    """One implementation at one n: mean over seeds of overlap and rho, and the evaluations."""

    top5: float
    rho: float
    evals: float


def quality(
    s: Setup, args: argparse.Namespace, reuse: SpeedResult | None
) -> dict[str, dict[int, QualityCell]]:
    """``"impl:method" -> n -> cell``, against our same method at ``--reference-samples``."""
    results: dict[str, dict[int, QualityCell]] = {}
    for method in QUALITY_METHODS:
        start = time.perf_counter()
        before = s.counter.n
        ref = ours(s, method)(args.reference_samples, args.reference_seed)
        bench.log(
            f"quality {method}: reference ({s.counter.n - before} evals) in "
            f"{time.perf_counter() - start:.1f} s"
        )
        for impl in ("ours", *PEERS[method]):
            key = f"{impl}:{method}"
            run = explainer(s, method, impl)
            results[key] = {}
            for n in args.quality_n_samples:
                cells = []
                for seed in range(args.seed, args.seed + args.quality_seeds):
                    if (
                        reuse is not None
                        and seed == args.seed
                        and n == args.n_samples
                        and key in reuse.outputs
                    ):
                        w, evals = reuse.outputs[key], reuse.evals[key]  # the timed run's output
                    else:
                        before = s.counter.n
                        w = run(n, seed)
                        evals = s.counter.n - before
                    cells.append((_top_overlap(w, ref), _spearman(w, ref), evals))
                results[key][n] = QualityCell(
                    *(float(np.mean(c)) for c in zip(*cells, strict=True))
                )
            bench.log(f"  {key} done ({time.perf_counter() - start:.1f} s)")
    return results


def _quality_tables(results: dict[str, dict[int, QualityCell]], ns: Sequence[int]) -> str:
    headers = ["method", "implementation", *(f"n={n} top5 / rho" for n in ns)]
    rows = []
    for key, cells in results.items():
        impl, method = key.split(":")
        title = "seethrough" if impl == "ours" else PEER_TITLES[(method, impl)]
        rows.append([method, title, *(f"{cells[n].top5:.2f} / {cells[n].rho:.3f}" for n in ns)])
    evals = [
        [key.split(":")[1], key.split(":")[0], *(f"{results[key][n].evals:.0f}" for n in ns)]
        for key in results
    ]
    return (
        bench.markdown_table(headers, rows)
        + "\n\nModel evaluations per cell:\n\n"
        + bench.markdown_table(["method", "implementation", *(f"n={n}" for n in ns)], evals)
    )


def _calls_to_reach(curve: dict[int, QualityCell], rho: float) -> float | None:
    """Model calls at which ``curve`` first reaches ``rho`` (linear in log(calls) in between).

    ``None`` if it never does; the first point's calls if that point is already above.
    """
    points = [(math.log(c.evals), c.rho) for _, c in sorted(curve.items())]
    if points[0][1] >= rho:
        return math.exp(points[0][0])
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if y1 >= rho:
            return math.exp(x0 + (rho - y0) / (y1 - y0) * (x1 - x0))
    return None


def _equivalence(results: dict[str, dict[int, QualityCell]], ns: Sequence[int]) -> list[str]:
    """For each peer and n: the model calls at which our rho reaches the peer's rho."""
    lines = []
    for key, cells in results.items():
        impl, method = key.split(":")
        if impl == "ours":
            continue
        mine = results[f"ours:{method}"]
        for n in ns:
            calls = _calls_to_reach(mine, cells[n].rho)
            if calls is None:
                verdict = f"ours does not reach it up to n={ns[-1]} (ours {mine[ns[-1]].rho:.3f})"
            else:
                at_least = (
                    " (or fewer: our first point is above)" if calls == mine[ns[0]].evals else ""
                )
                fewer = cells[n].evals / calls
                ratio = f"{fewer:.2f}x fewer" if fewer >= 1 else f"{1 / fewer:.2f}x MORE"
                verdict = f"ours at ~{calls:.0f} model calls{at_least}: {ratio} calls"
            lines.append(
                f"- {method}: {PEER_TITLES[(method, impl)]} at n={n} "
                f"(rho {cells[n].rho:.3f}) = {verdict}"
            )
    return lines


# ------------------------------------------------------------------------------------ main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", nargs="+", default=["resnet18", "efficientnet_lite0"])
    p.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="table 1 methods"
    )
    p.add_argument("--n-samples", type=int, default=1000, help="table 1 perturbations per image")
    p.add_argument(
        "--repeats", type=int, default=2, help="timed rounds (table 1; even: whole ABBA pairs)"
    )
    p.add_argument("--batch-size", type=int, default=0, help="0: the batch explain picks itself")
    p.add_argument("--floor-images", type=int, default=256, help="images per floor call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)"
    )
    p.add_argument("--tables", nargs="+", type=int, default=[1, 2], choices=(1, 2))
    p.add_argument("--quality-model", default="efficientnet_lite0")
    p.add_argument("--quality-n-samples", nargs="+", type=int, default=[100, 200, 500, 1000, 2000])
    p.add_argument("--reference-samples", type=int, default=10000)
    p.add_argument("--reference-seed", type=int, default=12345)
    p.add_argument("--quality-seeds", type=int, default=1, help="seeds averaged per cell")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~2 min on a quiet machine): table 1 at n=200 with 1 round, table 2 "
        "at n in (100, 200) against a 1000-sample reference",
    )
    p.add_argument("--json", metavar="PATH", help="also save the raw numbers here")
    args = p.parse_args(argv)
    if args.quick:
        args.n_samples, args.repeats, args.floor_images = 200, 1, 64
        args.quality_n_samples, args.reference_samples = [100, 200], 1000
    if min(args.n_samples, args.repeats, args.floor_images, args.quality_seeds) < 1:
        p.error("--n-samples, --repeats, --floor-images and --quality-seeds must be >= 1")
    if args.threads < 0:
        p.error("--threads must be >= 0")
    args.quality_n_samples = sorted(set(args.quality_n_samples))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the environment header and the tables."""
    args = _parse(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    env = bench.environment()
    wall = time.perf_counter()
    setups: dict[str, Setup] = {}

    def setup(name: str) -> Setup:
        if name not in setups:
            setups[name] = load(name, args.batch_size)
        return setups[name]

    speeds = [speed(setup(m), args) for m in args.models] if 1 in args.tables else []
    quality_results = None
    if 2 in args.tables:
        reuse = next((r for r in speeds if r.setup.name == args.quality_model), None)
        quality_results = quality(setup(args.quality_model), args, reuse)
    total = time.perf_counter() - wall

    bench.print_header("Perturbation methods: speed and quality per model call", env)
    print(f"- command: {' '.join(sys.argv)}")
    print(f"- total run time: {total:.0f} s")
    out: dict[str, Any] = {"environment": env, "args": vars(args), "seconds": total}
    if speeds:
        rows = [row for r in speeds for row in speed_rows(r)]
        print(
            f"\n## Table 1: speed at equal settings ({args.n_samples} samples, "
            f"{args.repeats} rounds, seconds per image)\n"
        )
        for r in speeds:
            print("\n".join(_floor_lines(r)))
        for r in speeds:
            check = _occlusion_check(r)
            if check:
                print(check)
        print()
        print(bench.markdown_table(SPEED_HEADERS, [_speed_cells(row) for row in rows]))
        failed = [f"{r['model']} {r['method']} {r['impl']}" for r in rows if "FAIL" in r["status"]]
        print(f"\nTable 1: {'FAIL: ' + '; '.join(failed) if failed else 'PASS'}")
        out["speed"] = rows
    if quality_results is not None:
        ns = args.quality_n_samples
        print(
            f"\n## Table 2: quality per model call ({args.quality_model}; reference: ours at "
            f"{args.reference_samples} samples, seed {args.reference_seed}; "
            f"{args.quality_seeds} seed(s) per cell; batch {setups[args.quality_model].batch})\n"
        )
        print(_quality_tables(quality_results, ns))
        print("\nSame quality (Spearman rho) at fewer model calls:\n")
        print("\n".join(_equivalence(quality_results, ns)))
        out["quality"] = {
            key: {str(n): vars(c) for n, c in cells.items()}
            for key, cells in quality_results.items()
        }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)
        bench.log(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
