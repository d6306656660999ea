"""ONNX models: loading checks, onnxruntime and converted runs against PyTorch, export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import seethrough
from seethrough.cli.main import app
from seethrough.errors import (
    InvalidParameterError,
    MethodNotApplicableError,
    UnknownLayerError,
    UnsafeModelError,
)
from seethrough.images import list_samples, load_image
from seethrough.models.onnx import export_onnx, load_onnx
from seethrough.models.onnx.checks import image_input
from seethrough.models.onnx.convert import convert, prepare
from seethrough.models.onnx.runtime import OnnxGraph
from seethrough.models.preprocessing import Preprocessing
from seethrough.models.vision_model import VisionModel

from .conftest import make_tiny
from .test_common import FAST, METHODS

OPSET = 20


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def lite0_pair(tmp_path_factory):
    """The bundled EfficientNet-Lite0 and its ONNX export, loaded back (once per module)."""
    source = seethrough.load_model()
    path = tmp_path_factory.mktemp("onnx") / "lite0.onnx"
    export_onnx(source, path)
    return source, load_onnx(path), path


def tiny_model() -> VisionModel:
    return VisionModel(
        make_tiny(),
        Preprocessing(size=16),
        ["a", "b", "c", "d"],
        name="tiny",
        source="test",
        weights="random",
    )


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    source = tiny_model()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(source, path)
    return source, load_onnx(path)


# ------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_onnxruntime_keeps_the_top5_on_every_bundled_photo(lite0_pair):
    source, exported, _ = lite0_pair
    assert exported.framework == "onnx" and exported.name == source.name
    assert exported.preprocessing == source.preprocessing
    images = [load_image(f"sample:{n}") for n in list_samples()]
    for a, b in zip(source.predict(images), exported.predict(images), strict=True):
        assert [p.index for p in a] == [p.index for p in b]
        assert max(abs(p.probability - q.probability) for p, q in zip(a, b, strict=True)) < 1e-4


def test_layers_are_tensors_and_the_default_is_bn2s(lite0_pair):
    _, exported, _ = lite0_pair
    runner = exported.make_runner()
    x = exported.preprocess("sample:chelsea")
    layers = runner.spatial_layers(x)
    assert layers[-1] == ("hardtanh_32", (1, 1280, 7, 7))
    assert runner.resolve_layer(None, x)[0] == "hardtanh_32"
    assert runner.resolve_layer("n4_33")[0] == "hardtanh_32"  # the node's name
    with pytest.raises(UnknownLayerError, match="hardtanh_32"):
        runner.resolve_layer("hardtanh_3x")
    with pytest.raises(MethodNotApplicableError, match="gradients"):
        seethrough.get_method("gradcam").cls()(exported.make_runner(), x)


@pytest.mark.parametrize("method", ["cam", "eigencam"])
def test_activation_cams_on_onnxruntime_equal_pytorchs(lite0_pair, method):
    source, exported, _ = lite0_pair
    a = seethrough.explain(source, "sample:chelsea", method, layer="bn2")
    b = seethrough.explain(exported, "sample:chelsea", method)
    assert b.layer == "hardtanh_32"
    np.testing.assert_allclose(b.raw, a.raw, rtol=1e-3, atol=1e-3 * np.abs(a.raw).max())


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_gradient_methods_run_through_the_conversion(lite0_pair, method):
    source, exported, _ = lite0_pair
    layer = {"layer": "bn2"} if method == "gradcam" else {}
    a = seethrough.explain(source, "sample:chelsea", method, **layer)
    b = seethrough.explain(exported, "sample:chelsea", method)
    assert corr(a.map, b.map) >= 0.999
    assert b.label == a.label == "Egyptian cat"


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("occlusion", {"window": 56, "stride": 56}),
        pytest.param("lime", {"n_samples": 32, "n_segments": 8, "seed": 3}, marks=pytest.mark.slow),
    ],
)
def test_perturbation_on_onnxruntime_equals_pytorch(lite0_pair, method, params):
    source, exported, _ = lite0_pair
    a = seethrough.explain(source, "sample:chelsea", method, **params)
    b = seethrough.explain(exported, "sample:chelsea", method, **params)
    np.testing.assert_allclose(b.raw, a.raw, rtol=1e-3, atol=1e-4 * np.abs(a.raw).max())


# ----------------------------------------------------------------- the tiny model


def test_scorecam_on_onnxruntime_equals_pytorch(tiny_pair, tiny_input):
    source, exported = tiny_pair
    for method in ("scorecam", "cam", "feature_maps"):
        a = seethrough.explain(source, tiny_input, method, layer="features.4")
        b = seethrough.explain(exported, tiny_input, method)
        for ea, eb in zip(a, b, strict=True):
            np.testing.assert_allclose(eb.raw, ea.raw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_common_suite_over_the_onnx_model(tiny_pair, tiny_input, method):
    """Every method runs (or refuses clearly), and a batch gives what each image gives."""
    _, exported = tiny_pair
    params = FAST.get(method, {})
    try:
        batch = seethrough.explain(exported, tiny_input, method, **params)
    except MethodNotApplicableError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for i, e in enumerate(batch):
        assert np.isfinite(e.map).all()
        single = seethrough.explain(exported, tiny_input[i], method, target=e.target, **params)
        np.testing.assert_allclose(single.raw, e.raw, rtol=1e-4, atol=1e-6)


def test_a_method_that_swaps_modules_runs_on_the_converted_model(tiny_pair, tiny_input):
    source, exported = tiny_pair
    a = seethrough.explain(source, tiny_input[0], "guided_backprop")
    b = seethrough.explain(exported, tiny_input[0], "guided_backprop")
    assert corr(a.raw, b.raw) > 0.999


# ------------------------------------------------------------ the pass before onnx2torch


def _model(nodes, inputs, output, initializers, opset=OPSET):
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _image(name="x", shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _converted_matches_onnxruntime(model, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    graph = OnnxGraph(model, image_input(path, model), "m")
    module = convert(graph)  # checks itself against onnxruntime; compare once more here
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(module(x), graph.run(x)[0], rtol=1e-5, atol=1e-5)


def _head(source):
    """``source`` (1, C, 8, 8) -> scores (1, 2) by a reshape and a Gemm."""
    w = numpy_helper.from_array(np.arange(2 * 3 * 64, dtype=np.float32).reshape(2, 192) / 1e3, "w")
    shape = numpy_helper.from_array(np.array([-1, 192], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", [source, "shape"], ["flat"], allowzero=1),
        helper.make_node("Gemm", ["flat", "w"], ["y"], transB=1),
    ]
    return nodes, [w, shape]


def test_prepass_reduce_mean_with_axes_as_an_input(tmp_path):
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    head, inits = _head("m")
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["r"], keepdims=1),
        helper.make_node("Expand", ["r", "full"], ["m"]),
        *head,
    ]
    full = numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64), "full")
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    _converted_matches_onnxruntime(_model(nodes, [_image()], out, [axes, full, *inits]), tmp_path)


def test_prepass_reshape_allowzero_and_identity_fed_weights(tmp_path):
    weight = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(3, 3, 3, 3)).astype(np.float32), "w0"
    )
    head, inits = _head("c")
    nodes = [
        helper.make_node("Identity", ["w0"], ["w1"]),
        helper.make_node("Identity", ["w1"], ["w2"]),
        helper.make_node("Conv", ["x", "w2"], ["c"], pads=[1, 1, 1, 1]),
        *head,
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    model = _model(nodes, [_image()], out, [weight, *inits])
    prepared = prepare(model)
    assert [n.op_type for n in prepared.graph.node] == ["Conv", "Reshape", "Gemm"]
    assert not prepared.graph.node[1].attribute  # allowzero dropped: the shape has no 0
    _converted_matches_onnxruntime(model, tmp_path)


def test_an_operator_without_conversion_is_named_and_forward_methods_still_run(tmp_path):
    head, inits = _head("s")
    nodes = [helper.make_node("Shrink", ["x"], ["s"], lambd=0.1), *head]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    model = _model(nodes, [_image(shape=("n", 3, 8, 8))], out, inits)
    onnx.save(model, tmp_path / "s.onnx")
    vm = seethrough.load_model(tmp_path / "s.onnx")
    assert vm.preprocessing.output_size == (8, 8) and vm.labels == ["class 0", "class 1"]
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(MethodNotApplicableError, match="'Shrink'"):
        seethrough.explain(vm, x, "saliency")
    e = seethrough.explain(vm, x, "occlusion", window=4, stride=4)
    assert all(np.abs(i.raw).max() > 0 for i in e)


# ---------------------------------------------------------------------------- bad input


def _external_model(tmp_path, location: str):
    model = _model(
        [helper.make_node("Gemm", ["flat", "w"], ["y"], transB=1)],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, [1, 4])],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
        [numpy_helper.from_array(np.ones((2, 4), np.float32), "w")],
    )
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "32")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "models" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("where", ["../secret.bin", "ABSOLUTE", "link.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, where):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(8, np.float32).tobytes())
    location = str(secret) if where == "ABSOLUTE" else where
    path = _external_model(tmp_path, location)
    if where == "link.bin":
        (path.parent / "link.bin").symlink_to(secret)
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        seethrough.load_model(path)


def test_a_truncated_file_is_an_invalid_parameter(lite0_pair, tmp_path):
    data = lite0_pair[2].read_bytes()
    for cut in (len(data) // 2, 100):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(InvalidParameterError, match="truncated or corrupt"):
            seethrough.load_model(path)


def test_an_input_that_is_not_an_image_is_refused(tmp_path):
    model = _model(
        [helper.make_node("Gemm", ["v", "w"], ["y"], transB=1)],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["n", 10])],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2]),
        [numpy_helper.from_array(np.ones((2, 10), np.float32), "w")],
    )
    onnx.save(model, tmp_path / "v.onnx")
    with pytest.raises(InvalidParameterError, match=r"'v' .* is float32 \(n, 10\)"):
        seethrough.load_model(tmp_path / "v.onnx")


def test_a_custom_domain_operator_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Evil", ["x"], ["y"], domain="my.ops")],
        "g",
        [_image()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("my.ops", 1)]
    )
    onnx.save(model, tmp_path / "c.onnx")
    with pytest.raises(UnsafeModelError, match="'Evil' of the custom domain 'my.ops'"):
        seethrough.load_model(tmp_path / "c.onnx")


def test_a_channels_last_grayscale_model(tmp_path):
    """NHWC with one channel: the luma of the input, moved last; sizes from the graph."""
    head, inits = _head("t")
    nodes = [
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Concat", ["nchw", "nchw", "nchw"], ["t"], axis=1),
        *head,
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    model = _model(nodes, [_image(shape=(1, 8, 8, 1))], out, inits)
    onnx.save(model, tmp_path / "g.onnx")
    vm = seethrough.load_model(tmp_path / "g.onnx")
    x = torch.rand(1, 3, 8, 8)
    gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    w = numpy_helper.to_array(inits[0])
    expected = gray.repeat(1, 3, 1, 1).reshape(1, -1) @ torch.tensor(w).T
    torch.testing.assert_close(vm.module(x), expected, rtol=1e-4, atol=1e-5)
    a = seethrough.explain(vm, x[0], "saliency")  # through the conversion, with gradients
    assert np.abs(a.raw).max() > 0


# -------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_layers_explain_and_export_check(tmp_path, lite0_pair):
    cli = CliRunner()
    path = lite0_pair[2]
    res = cli.invoke(app, ["layers", "--model", str(path)])
    assert res.exit_code == 0, res.output
    assert "hardtanh_32" in res.output and "1280x7x7" in res.output
    res = cli.invoke(
        app,
        ["explain", "sample:chelsea", "--model", str(path), "--method", "occlusion",
         "-p", "window=56", "-p", "stride=56", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert any((tmp_path / "out").rglob("*.png"))
    out = tmp_path / "digits.onnx"
    args = ["export-onnx", "synthetic_digits", str(out), "--weights", "none"]
    res = cli.invoke(app, [*args, "--check"])
    assert res.exit_code == 0, res.output
    assert "check passed" in res.output
    assert load_onnx(out).preprocessing.output_size == (64, 64)
    res = cli.invoke(app, args)
    assert isinstance(res.exception, InvalidParameterError) and "--force" in str(res.exception)
