"""Keras models run natively in TensorFlow (``KERAS_BACKEND=tensorflow``) against the same
models on Keras' torch backend.

Keras keeps one backend per process and this process runs it on torch, so the TensorFlow side
runs in a child process started with ``KERAS_BACKEND=tensorflow``: it loads the same saved
``.keras`` file with ``seethrough.load_model``, explains the same inputs and writes its maps to
an ``.npz`` file, compared here with the torch backend's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

if not all(importlib.util.find_spec(p) for p in ("keras", "h5py")):
    pytest.skip("the keras extra is not installed", allow_module_level=True)
if importlib.util.find_spec("tensorflow") is None:
    pytest.skip(
        "TensorFlow is not installed (pip install 'seethrough[tensorflow]')",
        allow_module_level=True,
    )

import seethrough  # noqa: E402
from seethrough.models.keras import keras_module  # noqa: E402

keras = keras_module()

SIZE, CLASSES = 32, 4
MAPS = {
    "gradcam": ("gradcam", {}),
    "gradcam_inner": ("gradcam", {"layer": "inner"}),  # inside a residual block
    "saliency": ("saliency", {}),
    "occlusion": ("occlusion", {"window": 8, "stride": 8}),
}

# The child: explains with the TensorFlow path and records what the tests check.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, torch
    import seethrough
    from seethrough.errors import SeethroughError

    model_file, lambda_file, inputs_file, out = sys.argv[1:5]
    maps = json.loads(sys.argv[5])
    vm = seethrough.load_model(model_file)
    facts = {"onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
    facts["module"] = type(vm.module).__name__
    facts["default_layer"] = vm.default_layer
    keras_model = vm.module.model
    before = [w.copy() for w in keras_model.get_weights()]
    x = torch.from_numpy(np.load(inputs_file))
    arrays = {"logits": vm.module(x).detach().numpy()}
    for key, (method, params) in maps.items():
        found = seethrough.explain(vm, x, method=method, target=1, **params)
        arrays[key] = np.stack([e.raw for e in found])

    def weights_kept():
        return all(np.array_equal(a, b) for a, b in zip(before, keras_model.get_weights()))

    facts["kept_after_call"] = weights_kept()

    def cancel(done, total):
        if done:
            raise RuntimeError("stopped")
        return True

    try:
        seethrough.explain(vm, x, method="integrated_gradients", target=1, progress=cancel)
    except RuntimeError:
        facts["raised"] = True
    facts["kept_after_error"] = weights_kept()
    try:
        seethrough.load_model(lambda_file)
    except SeethroughError as exc:
        facts["lambda"] = [type(exc).__name__, str(exc)]
    np.savez(out, **arrays)
    print(json.dumps(facts))
    """
)


def small_cnn(size: int = SIZE, classes: int = CLASSES, seed: int = 0):
    """A conv net with a GAP head and a softmax, its 1x1 stride-2 convolution on an even-sized
    input (the convolution whose backward aborts TensorFlow 2.21 under oneDNN), a residual
    block (``inner``, which does not cut the graph) and a last convolution that does."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inp = keras.Input((size, size, 3))
    a = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    b = layers.Conv2D(16, 1, strides=2, name="down")(a)
    c = layers.Conv2D(16, 3, padding="same", activation="relu", name="inner")(b)
    d = layers.Add(name="add")([c, b])
    e = layers.Conv2D(16, 3, padding="same", activation="relu", name="last")(d)
    pooled = layers.GlobalAveragePooling2D(name="gap")(e)
    out = layers.Dense(classes, activation="softmax", name="fc")(pooled)
    return keras.Model(inp, out)


def lambda_cnn():
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(x))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tf")
    paths = {"model": root / "cnn.keras", "lambda": root / "lambda.keras"}
    small_cnn().save(paths["model"])
    lambda_cnn().save(paths["lambda"])
    paths["inputs"] = root / "x.npy"
    np.save(
        paths["inputs"],
        torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).numpy(),
    )
    return paths


@pytest.fixture(scope="module")
def on_tensorflow(files, tmp_path_factory) -> tuple[dict, dict[str, np.ndarray]]:
    """What the TensorFlow path gave, run in a child process (facts, arrays)."""
    root = tmp_path_factory.mktemp("tf_child")
    script, out = root / "child.py", root / "maps.npz"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    args = [str(files["model"]), str(files["lambda"]), str(files["inputs"]), str(out)]
    done = subprocess.run(
        [sys.executable, str(script), *args, json.dumps(MAPS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as arrays:
        return facts, dict(arrays)


@pytest.fixture(scope="module")
def on_torch(files) -> dict[str, np.ndarray]:
    vm = seethrough.load_model(files["model"])
    x = torch.from_numpy(np.load(files["inputs"]))
    arrays = {"logits": vm.module(x).detach().numpy()}
    for key, (method, params) in MAPS.items():
        found = seethrough.explain(vm, x, method=method, target=1, **params)
        arrays[key] = np.stack([e.raw for e in found])
    return arrays


def test_the_child_ran_on_tensorflow_with_onednn_off(on_tensorflow):
    facts, _ = on_tensorflow
    assert facts["module"] == "TFModule"
    assert facts["onednn"] == "0"  # set by seethrough before TensorFlow was imported
    assert facts["default_layer"] == "last"


def test_predictions_equal_the_torch_backend(on_tensorflow, on_torch):
    _, tf_arrays = on_tensorflow
    np.testing.assert_allclose(tf_arrays["logits"], on_torch["logits"], atol=1e-4)
    # the model is not trivially constant: the classes differ between images
    assert np.ptp(on_torch["logits"], axis=1).min() > 1e-3


@pytest.mark.parametrize("key", ["gradcam", "gradcam_inner", "saliency"])
def test_gradient_maps_agree_with_the_torch_backend(on_tensorflow, on_torch, key):
    """Grad-CAM at the last convolution (which cuts the graph: the gradient runs through the
    rest of the model), Grad-CAM inside a residual block (the gradient is taken from the
    input's forward) and saliency (TensorFlow's input gradient; its backward passes the 1x1
    stride-2 convolution of an even-sized input, which aborts under oneDNN)."""
    _, tf_arrays = on_tensorflow
    tf_map, torch_map = tf_arrays[key], on_torch[key]
    assert tf_map.shape == torch_map.shape
    assert np.abs(torch_map).max() > 0
    for a, b in zip(tf_map, torch_map, strict=True):
        assert corr(a, b) >= 0.99
    np.testing.assert_allclose(tf_map, torch_map, rtol=1e-3, atol=1e-5 * np.abs(torch_map).max())


def test_occlusion_equals_the_torch_backend(on_tensorflow, on_torch):
    _, tf_arrays = on_tensorflow
    assert np.abs(on_torch["occlusion"]).max() > 0
    np.testing.assert_allclose(tf_arrays["occlusion"], on_torch["occlusion"], atol=1e-5)


def test_the_keras_weights_are_unchanged_after_a_call_and_after_an_error(on_tensorflow):
    facts, _ = on_tensorflow
    assert facts["kept_after_call"]
    assert facts["raised"]
    assert facts["kept_after_error"]


def test_a_lambda_layer_is_refused_on_tensorflow_too(on_tensorflow):
    facts, _ = on_tensorflow
    kind, message = facts["lambda"]
    assert kind == "UnsafeModelError"
    assert "Lambda" in message and "double" in message


# ------------------------------------------------------------------------------- SavedModel

# The child for SavedModels: exports the same model with Keras' model.export, writes two
# SavedModels whose graphs write a file and run Python, loads the three, explains the first.
SAVED_CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, torch
    import seethrough
    from seethrough.errors import SeethroughError
    from seethrough.models.tensorflow import tensorflow_module

    tf = tensorflow_module()  # oneDNN off, as seethrough imports it
    import keras

    model_file, inputs_file, root, out = sys.argv[1:5]
    maps = json.loads(sys.argv[5])
    keras.saving.load_model(model_file).export(os.path.join(root, "exported"), verbose=False)
    written = os.path.join(root, "written.txt")

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3])])
        def __call__(self, x):
            tf.io.write_file(written, "written")
            return tf.reduce_mean(x, axis=[1, 2])

    class Python(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3])])
        def __call__(self, x):
            return tf.reduce_mean(tf.py_function(lambda t: t * 2, [x], tf.float32), axis=[1, 2])

    facts = {}
    for name, module in (("writer", Writer()), ("python", Python())):
        folder = os.path.join(root, name)
        tf.saved_model.save(module, folder, signatures=module.__call__)
        try:
            seethrough.load_model(folder)
            facts[name] = ["loaded", ""]
        except SeethroughError as exc:
            facts[name] = [type(exc).__name__, str(exc)]
    facts["written"] = os.path.exists(written)
    vm = seethrough.load_model(os.path.join(root, "exported"))
    facts["module"] = type(vm.module).__name__
    facts["weights"] = vm.weights
    facts["size"] = list(vm.preprocessing.output_size)
    facts["describe"] = vm.preprocessing.describe()
    facts["labels"] = list(vm.labels)
    x = torch.from_numpy(np.load(inputs_file))
    arrays = {"logits": vm.module(x).detach().numpy()}
    for key, (method, params) in maps.items():
        found = seethrough.explain(vm, x, method=method, target=1, **params)
        arrays[key] = np.stack([e.raw for e in found])
    try:
        seethrough.explain(vm, x, method="gradcam", target=1)
    except SeethroughError as exc:
        facts["gradcam"] = [type(exc).__name__, str(exc)]
    np.savez(out, **arrays)
    print(json.dumps(facts))
    """
)
SAVED_MAPS = {"saliency": MAPS["saliency"], "occlusion": MAPS["occlusion"]}


@pytest.fixture(scope="module")
def saved_model(files, tmp_path_factory) -> tuple[dict, dict[str, np.ndarray]]:
    """What the SavedModel path gave, run in a child process (facts, arrays)."""
    root = tmp_path_factory.mktemp("tf_saved")
    script, out = root / "child.py", root / "maps.npz"
    script.write_text(SAVED_CHILD)
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    args = [str(files["model"]), str(files["inputs"]), str(root), str(out)]
    done = subprocess.run(
        [sys.executable, str(script), *args, json.dumps(SAVED_MAPS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as arrays:
        return facts, dict(arrays)


def test_a_saved_model_predicts_like_the_keras_file(saved_model, on_torch):
    facts, arrays = saved_model
    assert facts["module"] == "SavedModelModule"
    assert "final softmax removed" in facts["weights"]
    assert facts["size"] == [SIZE, SIZE] and "'tf' mode" in facts["describe"]
    assert facts["labels"] == [f"class {i}" for i in range(CLASSES)]
    # logits (the softmax removed in both), equal to the .keras file's on the torch backend
    np.testing.assert_allclose(arrays["logits"], on_torch["logits"], atol=1e-4)


def test_saliency_and_occlusion_of_a_saved_model_equal_the_torch_backend(saved_model, on_torch):
    _, arrays = saved_model
    for key in SAVED_MAPS:
        ref = on_torch[key]
        assert np.abs(ref).max() > 0
        for a, b in zip(arrays[key], ref, strict=True):
            assert corr(a, b) >= 0.99
        np.testing.assert_allclose(arrays[key], ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())


def test_a_saved_model_has_no_layers_for_the_cam_family(saved_model):
    facts, _ = saved_model
    kind, message = facts["gradcam"]
    assert kind == "MethodNotApplicableError"
    assert "SavedModel" in message and "without Keras layers" in message


def test_a_saved_model_that_writes_a_file_or_runs_python_is_refused(saved_model):
    facts, _ = saved_model
    kind, message = facts["writer"]
    assert kind == "UnsafeModelError"
    assert "'WriteFile'" in message and "graph that runs" in message
    assert not facts["written"]  # refused before TensorFlow loaded, let alone ran, the graph
    kind, message = facts["python"]
    assert kind == "UnsafeModelError" and "'EagerPyFunc'" in message and "Python" in message


def test_a_saved_model_without_tensorflow_needs_the_extra(tmp_path, monkeypatch):
    import importlib.util as util

    from seethrough.errors import MissingDependencyError

    find_spec = util.find_spec
    monkeypatch.setattr(
        util, "find_spec", lambda name, *a: None if name == "tensorflow" else find_spec(name, *a)
    )
    (tmp_path / "saved_model.pb").write_bytes(b"\0")
    with pytest.raises(MissingDependencyError, match=r"seethrough\[tensorflow\].*\.keras"):
        seethrough.load_model(tmp_path)
