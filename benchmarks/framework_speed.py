"""Grad-CAM and occlusion per image on one architecture in every framework seethrough runs.

For each model pair (defaults: torchvision's ``resnet50`` with Keras' ``ResNet50``, both with
random weights, and the bundled ``efficientnet_lite0``, which has no Keras twin), one image
(the sample photo ``chelsea``, batch 1, each model's own preprocessing), in ONE interleaved run
per pair (see ``_timing.py``: warm-up, then round-robin, median and min of the rounds):

- PyTorch: ``seethrough.explain`` on the PyTorch model;
- Keras on torch: ``seethrough.explain`` on ``load_model("keras:NAME", weights="none")``
  (Keras 3 on its torch backend; ``-`` where the pair has no Keras model);
- TF ``tf.function``: a hand-written Grad-CAM (``GradientTape`` inside ``tf.function``) and a
  hand-written occlusion on the same Keras architecture in a child process started with
  ``KERAS_BACKEND=tensorflow`` (a process has one Keras backend); ``not installed`` when
  TensorFlow does not import;
- onnxruntime: the PyTorch model exported once with ``export_onnx`` to a temporary folder and
  loaded back. Occlusion runs on onnxruntime; Grad-CAM needs gradients, so it runs through the
  conversion of the graph to PyTorch (the column says so).

Occlusion uses ``--window`` / ``--stride`` (32 / 32: 49 windows on 224x224, plus the clean
forward that picks the class) and the batch size ``explain`` picks itself.

The floors, timed in the same rounds:

- ``forward``: the network alone at batch 1 under ``torch.no_grad()`` (PyTorch, Keras), and an
  ``onnxruntime.InferenceSession`` of the exported file run directly on a contiguous numpy
  array (same thread count), at batch 1 and at the batch the occlusion uses;
- ``fwd+bwd>layer``: the forward, then ``torch.autograd.grad`` of the top class score with
  respect to the Grad-CAM layer's output (a hook hands the rest of the network that output
  detached and requiring gradients, so nothing before it joins the graph): what Grad-CAM
  itself must compute; ``fwd+bwd>input``: the same differentiated down to the input.

Targets (paired median over rounds of the ratio within a round; ``?`` when ``ratio@min`` or the
CPU-time ratio gives the other verdict):

- Keras Grad-CAM / the Keras model's own ``fwd+bwd>layer`` <= 1.2 (with TensorFlow installed the
  issue's reference is the ``tf.function`` Grad-CAM instead: that ratio is printed too);
- occlusion on the ONNX model / (evaluations x onnxruntime's per-image forward at the
  occlusion's batch) <= 1.1; evaluations are counted on the graph's runs, not assumed;
- for information: onnxruntime's forward against torch's, at batch 1 and at the occlusion's
  batch (above 1: onnxruntime faster).

Keras' ResNet50 is ResNet v1 (the stride in the first 1x1 convolution of a block), torchvision's
v1.5 (the stride in the 3x3): the same layers and nearly the same work, not the same network,
so the Keras / PyTorch column compares frameworks only roughly; the targets compare each model
with itself.

Use ``--threads 1`` on a shared machine (two threads that other jobs preempt wait for each other
at every layer). Run: ``.venv/bin/python benchmarks/framework_speed.py --threads 1``. Tables go
to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _timing as bench
import numpy as np
import torch
from torch import nn

import seethrough
from seethrough.images import sample_image
from seethrough.models import VisionModel

KERAS_TARGET = 1.2
ONNX_TARGET = 1.1
FRAMEWORKS = ("pytorch", "keras", "tf", "onnx")
TITLES = {
    "pytorch": "PyTorch",
    "keras": "Keras on torch",
    "tf": "TF tf.function",
    "onnx": "onnxruntime",
}


@dataclass
class Pair:
    """One architecture in every framework, with its inputs and the occlusion's settings."""

    name: str
    keras_name: str | None
    torch_vm: VisionModel
    onnx_vm: VisionModel
    onnx_path: Path
    keras_vm: VisionModel | None = None
    x: dict[str, torch.Tensor] = field(default_factory=dict)  # framework -> (1, C, H, W)
    layers: dict[str, str] = field(default_factory=dict)  # framework -> Grad-CAM layer
    batch: int = 1  # inputs per forward of the occlusion on the ONNX model (counted)
    evals: dict[str, int] = field(default_factory=dict)  # framework -> counted evaluations
    batches: dict[str, list[int]] = field(default_factory=dict)  # their batch sizes
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # occlusion maps
    timings: dict[str, bench.Timing] = field(default_factory=dict)
    tf: dict[str, Any] | None = None  # the child's medians, or None

    def models(self) -> dict[str, VisionModel]:
        """The loaded models by framework (no Keras one where the pair has none)."""
        out = {"pytorch": self.torch_vm, "onnx": self.onnx_vm}
        if self.keras_vm is not None:
            out["keras"] = self.keras_vm
        return out


# ---------------------------------------------------------------------------------- setup


def _parse_pair(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=keras:KERASNAME``."""
    name, _, keras_name = spec.partition("=")
    return name, keras_name or None


def load_pair(spec: str, folder: Path) -> Pair:
    """Load the PyTorch model, its Keras twin and its ONNX export (written into ``folder``)."""
    from seethrough.models.onnx import export_onnx

    name, keras_name = _parse_pair(spec)
    weights = "default" if name == "efficientnet_lite0" else "none"
    torch_vm = seethrough.load_model(name, weights=weights)
    path = folder / f"{name}.onnx"
    start = time.perf_counter()
    export_onnx(torch_vm, path)
    bench.log(f"{name}: exported to ONNX in {time.perf_counter() - start:.1f} s")
    pair = Pair(name, keras_name, torch_vm, seethrough.load_model(str(path)), path)
    if keras_name is not None:
        pair.keras_vm = seethrough.load_model(keras_name, weights="none")
    image = sample_image("chelsea")
    for fw, vm in pair.models().items():
        pair.x[fw] = vm.preprocess(image)
    return pair


# ------------------------------------------------------------------------------ candidates


def _explain(vm: VisionModel, x: torch.Tensor, method: str, args: argparse.Namespace) -> Any:
    """``seethrough.explain`` of the one image of ``x`` ``(1, C, H, W)`` (one Explanation)."""
    params: dict[str, Any] = {}
    if method == "occlusion":
        params = {"window": args.window, "stride": args.stride}
    return seethrough.explain(vm, x[0], method, **params)


def _protected(vm: VisionModel, fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` in eval mode with every parameter frozen (restored after), as ``explain`` runs."""
    runner = vm.make_runner()

    def run() -> None:
        with runner.protected():
            fn()

    return run


def _layer_module(vm: VisionModel, layer: str) -> nn.Module:
    """The module whose forward hook sees ``layer``'s output (a Keras layer itself)."""
    module = vm.make_runner().resolve_layer(layer)[1]
    return getattr(module, "keras_layer", module)


def _floors(pair: Pair, fw: str) -> list[bench.Candidate]:
    """Forward at batch 1, forward + backward to the Grad-CAM layer and to the input."""
    vm = pair.models()[fw]
    x, module = pair.x[fw], vm.module
    layer = _layer_module(vm, pair.layers[fw])

    def forward() -> None:
        with torch.no_grad():
            module(x)

    def to_layer() -> None:
        started: list[torch.Tensor] = []

        def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
            started.append(out.detach().requires_grad_(True))
            return started[-1]

        handle = layer.register_forward_hook(hook)
        try:
            out = module(x)
        finally:
            handle.remove()
        top = out.argmax(dim=1, keepdim=True)
        torch.autograd.grad(out.gather(1, top).sum(), started[-1])

    def to_input() -> None:
        xi = x.detach().requires_grad_(True)
        out = module(xi)
        top = out.argmax(dim=1, keepdim=True)
        torch.autograd.grad(out.gather(1, top).sum(), xi)

    out = [
        bench.Candidate(f"{fw}:forward", _protected(vm, forward)),
        bench.Candidate(f"{fw}:fwd+bwd>layer", _protected(vm, to_layer)),
    ]
    if fw == "keras":
        out.append(bench.Candidate(f"{fw}:fwd+bwd>input", _protected(vm, to_input)))
    return out


def _session_floors(pair: Pair, threads: int) -> list[bench.Candidate]:
    """The exported file on a session of its own, fed numpy directly: batch 1 and the
    occlusion's batch (seconds per image)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(pair.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    out: list[bench.Candidate] = []
    for batch in sorted({1, pair.batch}):
        feed = {name: np.ascontiguousarray(pair.x["onnx"].expand(batch, -1, -1, -1).numpy())}
        calls = max(1, pair.batch // batch)  # about as many images per call at either batch

        def run(feed: dict[str, np.ndarray] = feed, calls: int = calls) -> None:
            for _ in range(calls):
                session.run(None, feed)

        out.append(bench.Candidate(f"ort:forward@{batch}", run, units=calls * batch))
    return out


def _torch_batch_floor(pair: Pair) -> bench.Candidate:
    """The PyTorch network at the occlusion's batch, as loaded (seconds per image)."""
    module, xb = pair.torch_vm.module, pair.x["pytorch"].expand(pair.batch, -1, -1, -1)
    xb = xb.contiguous()

    def run() -> None:
        with torch.no_grad():
            module(xb)

    return bench.Candidate(
        f"pytorch:forward@{pair.batch}", _protected(pair.torch_vm, run), units=pair.batch
    )


def candidates(pair: Pair, args: argparse.Namespace) -> list[bench.Candidate]:
    """Everything timed for one pair."""
    out: list[bench.Candidate] = []
    for fw, vm in pair.models().items():
        x = pair.x[fw]
        for method in ("gradcam", "occlusion"):

            def run(vm: VisionModel = vm, x: torch.Tensor = x, method: str = method) -> None:
                _explain(vm, x, method, args)

            out.append(bench.Candidate(f"{fw}:{method}", run))
        if fw != "onnx":
            out += _floors(pair, fw)
    out += _session_floors(pair, torch.get_num_threads())
    if pair.batch != 1:
        out.append(_torch_batch_floor(pair))
    return out


def _counted_occlusion(
    vm: VisionModel, x: torch.Tensor, onnx: bool, args: argparse.Namespace
) -> tuple[list[int], Any]:
    """One occlusion, with the batch size of every forward of the network (images counted on
    the graph's runs for an ONNX model, by a pre-hook on the module otherwise)."""
    sizes: list[int] = []
    if onnx:
        graph = vm.module.graph
        run = graph.run

        def counting(x: torch.Tensor, extra: tuple[str, ...] = ()) -> Any:
            sizes.append(int(x.shape[0]))
            return run(x, extra)

        graph.run = counting
        try:
            return sizes, _explain(vm, x, "occlusion", args)
        finally:
            del graph.run
    handle = vm.module.register_forward_pre_hook(lambda _m, a: sizes.append(int(a[0].shape[0])))
    try:
        return sizes, _explain(vm, x, "occlusion", args)
    finally:
        handle.remove()


def count(pair: Pair, args: argparse.Namespace) -> None:
    """Untimed calls per framework: the Grad-CAM layer, and one occlusion with its evaluations
    (images through the network, counted), their batch sizes and the map."""
    for fw, vm in pair.models().items():
        pair.layers[fw] = _explain(vm, pair.x[fw], "gradcam", args).layer
        sizes, e = _counted_occlusion(vm, pair.x[fw], fw == "onnx", args)
        pair.evals[fw], pair.batches[fw] = sum(sizes), sizes
        pair.maps[fw] = np.asarray(e.raw, dtype=np.float64)
    pair.batch = max(pair.batches["onnx"])  # the batch explain picked for the ONNX model


# -------------------------------------------------------------------------------- TF child


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported here (the ``[tensorflow]`` extra)."""
    return importlib.util.find_spec("tensorflow") is not None


def run_tf_child(pair: Pair, args: argparse.Namespace) -> dict[str, Any] | None:
    """The TF measurements of ``pair``'s Keras architecture, from a child process running
    Keras on TensorFlow (``TF_ENABLE_ONEDNN_OPTS=0``: TF 2.21's oneDNN aborts in the backward of
    a 1x1 stride-2 convolution on an even-sized input)."""
    if pair.keras_vm is None or not tensorflow_available():
        return None
    job = {
        "keras_name": pair.keras_name,
        "x": pair.x["keras"].permute(0, 2, 3, 1).numpy().tolist(),
        "layer": pair.layers["keras"],
        "bgr": bool(getattr(pair.keras_vm.module, "bgr", False)),
        "window": args.window,
        "stride": args.stride,
        "batch": pair.batch,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "warmup": args.warmup,
    }
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_ENABLE_ONEDNN_OPTS="0")
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(job, fh)
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--tf-child", fh.name],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        bench.log(f"TF child failed: {tail}")
        return {"error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def tf_child(path: str) -> int:
    """Child process: time a ``tf.function`` Grad-CAM, occlusion and forward; print JSON."""
    import keras
    import tensorflow as tf

    job = json.loads(Path(path).read_text())
    tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    name = job["keras_name"].split(":", 1)[1]
    model = getattr(keras.applications, name)(weights=None)
    x = tf.constant(np.asarray(job["x"], np.float32))
    if job["bgr"]:
        x = x[..., ::-1]
    sub = keras.Model(model.inputs, [model.get_layer(job["layer"]).output, model.output])

    @tf.function(reduce_retracing=True)
    def gradcam(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            act, out = sub(x, training=False)
            score = tf.reduce_max(out, axis=1)
        grads = tape.gradient(score, act)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * act, axis=-1))

    @tf.function(reduce_retracing=True)
    def forward(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    h, w = int(x.shape[1]), int(x.shape[2])
    win, step = job["window"], job["stride"]
    ys = sorted({*range(0, max(h - win, 0) + 1, step), max(h - win, 0)})
    xs = sorted({*range(0, max(w - win, 0) + 1, step), max(w - win, 0)})
    masks = np.ones((len(ys) * len(xs), h, w, 1), np.float32)
    for i, (y0, x0) in enumerate((y0, x0) for y0 in ys for x0 in xs):
        masks[i, y0 : y0 + win, x0 : x0 + win] = 0.0

    def occlusion() -> None:
        top = int(tf.argmax(forward(x)[0]))
        for i in range(0, len(masks), job["batch"]):
            forward(x * masks[i : i + job["batch"]])[:, top].numpy()

    timings = bench.run_interleaved(
        [
            bench.Candidate("gradcam", lambda: gradcam(x).numpy()),
            bench.Candidate("occlusion", occlusion),
            bench.Candidate("forward", lambda: forward(x).numpy()),
        ],
        job["repeats"],
        max(job["warmup"], 1),  # the first call traces the function
    )
    print(json.dumps({k: t.median for k, t in timings.items()}))
    return 0


# ------------------------------------------------------------------------------- reporting


def _cell(pair: Pair, fw: str, key: str, base: float | None) -> str:
    """Seconds per image and, beside PyTorch, the ratio to PyTorch's."""
    if fw == "tf":
        if not tensorflow_available():
            return "not installed"
        if pair.tf is None:
            return "-"
        if "error" in pair.tf:
            return "failed"
        value = pair.tf.get(key)
    else:
        t = pair.timings.get(key if key.startswith("ort:") else f"{fw}:{key}")
        value = None if t is None else t.median
    if value is None:
        return "-"
    if base is None or fw == "pytorch":
        return bench.seconds(value)
    return f"{bench.seconds(value)} ({value / base:.2f}x)"


def main_table(pairs: Sequence[Pair]) -> str:
    """Seconds per image per framework, each with its ratio to PyTorch's."""
    headers = [
        "model",
        "method",
        *(TITLES[fw] + (" (Grad-CAM via onnx2torch)" if fw == "onnx" else "") for fw in FRAMEWORKS),
    ]
    rows = []
    for pair in pairs:
        for key, title in (
            ("gradcam", "gradcam"),
            ("occlusion", f"occlusion ({pair.evals['pytorch']} evals)"),
            ("forward", "forward, batch 1"),
        ):
            base = pair.timings[f"pytorch:{key}"].median
            cells = []
            for fw in FRAMEWORKS:
                name = "ort:forward@1" if (fw, key) == ("onnx", "forward") else key
                cells.append(_cell(pair, fw, name, base))
            rows.append([pair.name, title, *cells])
    return bench.markdown_table(headers, rows)


def _target_row(
    what: str, ratio: float, at_min: float, cpu: float, target: float | None = None
) -> dict[str, Any]:
    """A ratio row; with a ``target``, its verdict (the cross-checks that were measured)."""
    checks = [c for c in (at_min, cpu) if c == c]
    return {
        "what": what,
        "ratio": ratio,
        "at_min": at_min,
        "cpu": cpu,
        "target": "-" if target is None else f"<= {target}",
        "status": "-" if target is None else bench.verdict(ratio, checks, target),
    }


def target_rows(pair: Pair) -> list[dict[str, Any]]:
    """The issue's targets as ratio rows (paired medians), and the forward comparison."""
    t = pair.timings
    rows: list[dict[str, Any]] = []
    if pair.keras_vm is not None:
        for floor in ("fwd+bwd>layer", "fwd+bwd>input"):
            target = KERAS_TARGET if floor == "fwd+bwd>layer" else None
            measured = bench.ratios(t["keras:gradcam"], t[f"keras:{floor}"])
            rows.append(_target_row(f"Keras gradcam / Keras {floor}", *measured, target))
        if pair.tf is not None and "gradcam" in pair.tf:
            ratio = t["keras:gradcam"].median / pair.tf["gradcam"]
            what = "Keras gradcam / TF tf.function gradcam (other process)"
            rows.append(_target_row(what, ratio, float("nan"), float("nan"), KERAS_TARGET))
    evals, floor = pair.evals["onnx"], t[f"ort:forward@{pair.batch}"]
    occ = t["onnx:occlusion"]
    ratio = bench.paired_ratio(occ, floor) / evals
    checks = (occ.min / (evals * floor.min), bench.paired_ratio(occ, floor, cpu=True) / evals)
    what = f"ONNX occlusion / ({evals} evals x session forward@{pair.batch})"
    rows.append(_target_row(what, ratio, *checks, ONNX_TARGET))
    for batch in sorted({1, pair.batch}):
        torch_forward = t[f"pytorch:forward@{batch}" if batch > 1 else "pytorch:forward"]
        what = f"torch forward@{batch} / onnxruntime forward@{batch} (>1: ort faster)"
        rows.append(_target_row(what, *bench.ratios(torch_forward, t[f"ort:forward@{batch}"])))
    measured = bench.ratios(t["pytorch:gradcam"], t["pytorch:fwd+bwd>layer"])
    rows.append(_target_row("PyTorch gradcam / PyTorch fwd+bwd>layer", *measured))
    return rows


TARGET_HEADERS = ("model", "ratio", "value", "ratio@min", "cpu ratio", "target", "status")


def _target_cells(pair: Pair, row: dict[str, Any]) -> list[str]:
    def num(v: float) -> str:
        return "-" if v != v else f"{v:.2f}"

    return [
        pair.name,
        row["what"],
        num(row["ratio"]),
        num(row["at_min"]),
        num(row["cpu"]),
        row["target"],
        row["status"],
    ]


def detail_lines(pair: Pair) -> list[str]:
    """Layers, batches, evaluation counts and the agreement of the occlusion maps."""
    lines = [
        f"- {pair.name}: Grad-CAM layers "
        + ", ".join(f"{TITLES[fw]} `{layer}`" for fw, layer in pair.layers.items())
    ]
    for fw, sizes in pair.batches.items():
        lines.append(
            f"- {pair.name} {TITLES[fw]}: occlusion ran {pair.evals[fw]} images in "
            f"{len(sizes)} forwards (batches {sorted(set(sizes), reverse=True)})"
        )
    gap = float(np.abs(pair.maps["onnx"] - pair.maps["pytorch"]).max())
    scale = float(np.abs(pair.maps["pytorch"]).max())
    lines.append(
        f"- {pair.name}: occlusion map, max |onnxruntime - PyTorch| = {gap:.2e} (scale {scale:.2e})"
    )
    forwards = ", ".join(
        f"b{b} {pair.timings[f'ort:forward@{b}'].median * 1000:.1f}"
        for b in sorted({1, pair.batch})
    )
    lines.append(f"- {pair.name}: session forward ms/img (median) {forwards}")
    if pair.tf is not None and "error" in pair.tf:
        lines.append(f"- {pair.name}: TF child failed: {pair.tf['error']}")
    return lines


# ------------------------------------------------------------------------------------ main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = bench.parser(__doc__)
    p.add_argument(
        "--pairs",
        nargs="+",
        default=["resnet50=keras:ResNet50", "efficientnet_lite0"],
        metavar="NAME[=keras:NAME]",
        help="PyTorch model names, each with its Keras twin where there is one "
        "(efficientnet_lite0 gets its bundled weights, others random weights)",
    )
    p.add_argument("--window", type=int, default=32, help="occlusion window")
    p.add_argument("--stride", type=int, default=32, help="occlusion stride")
    bench.add_rounds(p, repeats=5, warmup=1)
    bench.add_threads(
        p,
        "call torch.set_num_threads(N) first (onnxruntime sessions take the same count; "
        "default: leave torch's default); 1 for stable ratios on a shared machine",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the raw numbers here")
    p.add_argument("--tf-child", metavar="JOB", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if min(args.window, args.stride) < 1:
        p.error("--window and --stride must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the environment header and the tables."""
    args = _parse(argv)
    if args.tf_child:
        return tf_child(args.tf_child)
    env, wall = bench.begin_run(args.threads, Warning)
    env["onnxruntime"] = importlib.import_module("onnxruntime").__version__
    env["tensorflow"] = "installed" if tensorflow_available() else "not installed"
    pairs: list[Pair] = []
    with tempfile.TemporaryDirectory() as folder:
        for spec in args.pairs:
            pair = load_pair(spec, Path(folder))
            env["keras"] = (
                importlib.import_module("keras").__version__
                if pair.keras_vm
                else env.get("keras", "-")
            )
            count(pair, args)
            pair.timings = bench.timed(pair.name, candidates(pair, args), args.repeats, args.warmup)
            pair.tf = run_tf_child(pair, args)
            pairs.append(pair)
    total = time.perf_counter() - wall

    bench.print_header("Frameworks: Grad-CAM and occlusion per image", env)
    print(
        f"- rounds: {args.repeats}, warm-up {args.warmup}; sample photo `chelsea`, batch 1; "
        f"occlusion window {args.window} stride {args.stride}"
    )
    for pair in pairs:
        print("\n".join(detail_lines(pair)))
    print(f"- total benchmark time: {total:.0f} s\n")
    print("Seconds per image (median of rounds); in brackets the ratio to PyTorch's.\n")
    print(main_table(pairs))
    print("\nTargets and ratios (paired median over rounds):\n")
    rows = [(pair, row) for pair in pairs for row in target_rows(pair)]
    print(bench.markdown_table(TARGET_HEADERS, [_target_cells(p, r) for p, r in rows]))
    statuses = [r["status"] for _, r in rows if r["status"] != "-"]
    print(f"\n{bench.status_line(statuses)}.")
    if args.json is not None:
        results = [
            {
                "model": p.name,
                "keras": p.keras_name,
                "layers": p.layers,
                "batch": p.batch,
                "evals": p.evals,
                "targets": target_rows(p),
                "tf": p.tf,
                "timings": {k: v.to_dict() for k, v in p.timings.items()},
            }
            for p in pairs
        ]
        bench.save_json(args.json, env, args, total, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
