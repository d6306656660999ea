"""The Keras callback of the explanation recorder: it records every epoch of ``model.fit`` with
the epoch's logs, explains the model as seethrough explains a Keras file (logits, not the
softmax), and leaves training exactly as it was."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("keras") is None:
    pytest.skip("the [keras] extra is not installed", allow_module_level=True)

import seethrough  # noqa: E402
from seethrough import errors  # noqa: E402
from seethrough.datasets import make_digits  # noqa: E402
from seethrough.models.keras import keras_module, vision_model_of  # noqa: E402
from seethrough.training import ExplanationRecorder, keras_callback, read_run  # noqa: E402

keras = keras_module()

SIZE = 24
DATA = make_digits(96 + 4, size=SIZE, seed=3)
TRAIN_X = DATA.images[:96].astype("float32") / 255
TRAIN_Y = DATA.labels[:96]
PROBES, MASKS, LABELS = DATA.images[96:], DATA.masks[96:], DATA.labels[96:]
EPOCHS = 2


def tiny_cnn() -> keras.Model:
    """conv-BN-ReLU, conv-ReLU, dropout, GAP, Dense(softmax): training draws from Keras' seed
    generator (dropout, shuffling) and updates BN statistics."""
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.SpatialDropout2D(0.2)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(10, activation="softmax", name="fc")(h)
    return keras.Model(inp, out)


def fit(callbacks: list, seed: int = 0) -> tuple[keras.Model, dict]:
    keras.utils.set_random_seed(seed)
    model = tiny_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        TRAIN_X, TRAIN_Y, epochs=EPOCHS, batch_size=16, shuffle=True, verbose=0, callbacks=callbacks
    )
    return model, history.history


def weights(model: keras.Model) -> list[np.ndarray]:
    return [v.value.detach().cpu().numpy().copy() for v in model.variables]


def test_fit_records_every_epoch_and_changes_no_weight(tmp_path) -> None:
    plain, _ = fit([])
    rec = ExplanationRecorder(
        PROBES, methods=("gradcam",), masks=MASKS, labels=LABELS.tolist(), out=tmp_path / "run"
    )
    callback = keras_callback(rec)
    assert isinstance(callback, keras.callbacks.Callback)
    model, history = fit([callback])

    # the same weights (BN statistics, optimizer state, seed generators included) bit for bit
    for a, b in zip(weights(plain), weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("fc").activation is keras.activations.softmax  # restored
    assert all(layer.trainable for layer in model.layers)
    assert all(v.value.requires_grad for v in model.trainable_variables)

    run = read_run(tmp_path / "run")
    assert run.epochs == [1, 2] and run.map_epochs == [1, 2]
    assert [s["epoch"] for s in callback.summaries] == [1, 2]
    for name in ("loss", "accuracy"):
        logged = {r.epoch: r.value for r in run.rows if r.metric == name and r.image == ""}
        assert logged == pytest.approx(dict(enumerate(history[name], start=1)), rel=1e-6)

    # confidence is the model's own probability (logits explained, not softmax(softmax))
    last = run.maps(EPOCHS)
    probabilities = model(PROBES.astype("float32") / 255).detach().cpu().numpy()
    np.testing.assert_array_equal(last["predicted"], probabilities.argmax(1))
    np.testing.assert_allclose(last["confidence"], probabilities.max(1), rtol=1e-5)

    # the maps are seethrough's Grad-CAM of the trained model for the probes' labels
    with callback.vision_model(model) as vm:
        expected = seethrough.explain(vm, list(PROBES), "gradcam", target=LABELS.tolist())
    assert model.get_layer("fc").activation is keras.activations.softmax
    for got, e in zip(last["gradcam"], expected, strict=True):
        ref = np.asarray(e.map, dtype=np.float32)
        np.testing.assert_allclose(got, ref / ref.max(), atol=1e-5)
    pointing = [r.value for r in run.rows if r.epoch == EPOCHS and r.metric == "pointing_game"]
    assert len(pointing) == len(PROBES)


def test_a_label_beyond_the_classes_fails_before_the_first_epoch(tmp_path) -> None:
    rec = ExplanationRecorder(PROBES, labels=[0, 1, 2, 12], out=tmp_path / "run")
    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    before = weights(model)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(errors.UnknownClassError, match="12"):
        model.fit(TRAIN_X, TRAIN_Y, epochs=1, verbose=0, callbacks=[keras_callback(rec)])
    for a, b in zip(before, weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "run").exists()


def test_vision_model_of_checks_its_arguments() -> None:
    model = tiny_cnn()
    with pytest.raises(errors.InvalidParameterError, match="mode"):
        vision_model_of(model, preprocessing="bgr")
    with pytest.raises(errors.InvalidParameterError, match="3 labels"):
        vision_model_of(model, labels=["a", "b", "c"])
    vm = vision_model_of(model, preprocessing="tf")
    assert vm.preprocessing.mean == (0.5, 0.5, 0.5) and vm.preprocessing.output_size == (24, 24)


def test_the_training_package_imports_without_keras() -> None:
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "import seethrough.training as t\n"
        "from seethrough.errors import MissingDependencyError\n"
        "try:\n"
        "    t.keras_callback(None)\n"
        "except MissingDependencyError:\n"
        "    print('missing')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "missing", done.stderr
