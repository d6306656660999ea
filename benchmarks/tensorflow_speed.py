"""Speed of Grad-CAM on a Keras model run natively in TensorFlow, against a hand-written
``tf.function`` Grad-CAM.

Keras keeps one backend per process, so the measurement runs in a child process started with
``KERAS_BACKEND=tensorflow`` (this script with ``--child``); the parent only starts it and
prints its table. In the child, on one ``(1, 3, S, S)`` random model input, in one interleaved
run (see ``_timing.py``: warm-up, then round-robin over the candidates, median and min):

- ``seethrough``: ``seethrough.explain(vm, x, "gradcam", target=T, layer=L)`` on
  ``vm = load_model("keras:NAME", weights="none")``, the whole public call on the TensorFlow
  path (the model's forward and the gradient at the layer in ``tf.function``\\ s, bridged to
  the torch core);
- ``hand-written``: one ``tf.function`` with a ``GradientTape`` over
  ``keras.Model(model.inputs, [layer.output, model.output])``: the target score, its gradient
  at the layer, the channel means of the gradient as weights, the ReLU of the weighted sum
  (channels-last input made once, outside the timing);
- ``forward``: the model's forward in a ``tf.function``, for scale.

``ratio`` is the paired median over rounds of seethrough / hand-written; the target is
``<= 1.2``. ``L`` is the model's default layer (the last spatial one), ``T`` the top class of
the input. Without TensorFlow the script says so and exits 0.

Run: ``python benchmarks/tensorflow_speed.py [--model ResNet50] [--size 224] [--repeats 10]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (  # noqa: E402
    Candidate,
    environment,
    markdown_table,
    paired_ratio,
    run_interleaved,
)

TARGET = 1.2


def child(args: argparse.Namespace) -> int:
    """Time the candidates on the TensorFlow path and print one JSON line."""
    import numpy as np
    import torch

    import seethrough

    vm = seethrough.load_model(f"keras:{args.model}", weights="none")
    import keras
    import tensorflow as tf

    assert keras.backend.backend() == "tensorflow", keras.backend.backend()
    model = vm.module.model
    layer = vm.default_layer
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    nhwc = x.permute(0, 2, 3, 1)
    if vm.preprocessing.mode == "caffe":
        nhwc = nhwc.flip(-1)
    x_tf = tf.constant(np.ascontiguousarray(nhwc.numpy()))
    sub = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])

    @tf.function(reduce_retracing=True)
    def forward(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    target = int(tf.argmax(forward(x_tf)[0]))

    @tf.function(reduce_retracing=True)
    def gradcam(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            act, out = sub(x, training=False)
            score = out[:, target]
        grads = tape.gradient(score, act)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * act, axis=-1))

    (ours,) = seethrough.explain(vm, x, "gradcam", target=target, layer=layer)
    theirs = gradcam(x_tf).numpy()[0]
    corr = float(np.corrcoef(np.ravel(ours.raw), np.ravel(theirs))[0, 1])

    timings = run_interleaved(
        [
            Candidate(
                "seethrough",
                lambda: seethrough.explain(vm, x, "gradcam", target=target, layer=layer),
            ),
            Candidate("hand-written", lambda: gradcam(x_tf).numpy()),
            Candidate("forward", lambda: forward(x_tf).numpy()),
        ],
        args.repeats,
        max(args.warmup, 1),  # the first call traces the functions
    )
    result = {
        "model": args.model,
        "size": args.size,
        "layer": layer,
        "corr": corr,
        "median": {k: t.median for k, t in timings.items()},
        "min": {k: t.min for k, t in timings.items()},
        "ratio": paired_ratio(timings["seethrough"], timings["hand-written"]),
        "cpu_ratio": paired_ratio(timings["seethrough"], timings["hand-written"], cpu=True),
    }
    print(json.dumps(result))
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ResNet50", help="a keras.applications name")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return child(args)
    print("# Grad-CAM on TensorFlow: seethrough vs a hand-written tf.function\n")
    env = environment()
    if importlib.util.find_spec("tensorflow") is None:
        print("TensorFlow: not installed (pip install 'seethrough[tensorflow]'); nothing to time")
        return 0
    print(", ".join(f"{k}: {v}" for k, v in env.items()))
    child_env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    child_env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # seethrough sets it before TF is imported
    command = [sys.executable, __file__, "--child", *(argv if argv is not None else sys.argv[1:])]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    r = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [
        [name, f"{r['median'][name]:.4f}", f"{r['min'][name]:.4f}"]
        for name in ("seethrough", "hand-written", "forward")
    ]
    print(
        f"\n{r['model']} at {r['size']}x{r['size']}, batch 1, layer {r['layer']} "
        f"(maps correlate {r['corr']:.4f})\n"
    )
    print(markdown_table(["candidate", "median s", "min s"], rows))
    verdict = "ok" if r["ratio"] <= TARGET else "over target"
    print(
        f"\nseethrough / hand-written: {r['ratio']:.3f} (cpu {r['cpu_ratio']:.3f}), "
        f"target <= {TARGET}: {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
