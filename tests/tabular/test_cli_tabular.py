"""``seethrough tabular``: a row of a CSV file explained with an ONNX, skops or TorchScript file,
values checked against their closed form; every unsafe file refused in one line, unread."""

from __future__ import annotations

import contextlib
import csv
import io
import operator
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from onnx import helper as oh
from torch import nn

from seethrough.attribution import FeatureExplanation
from seethrough.errors import UnsafeModelError
from seethrough.tabular import explain_tabular, load_tabular_model
from tests.test_cli import cli, one_error_line
from tests.test_torchscript_safety import SECRET, Writer, script_bytes

skops_io = pytest.importorskip("skops.io")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated, supported

WEIGHTS = np.array([2.0, -1.0, 0.5])
BIAS = 0.3
RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3))
Y = (X @ WEIGHTS > 0).astype(int)


def linear() -> nn.Module:
    layer = nn.Linear(3, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(WEIGHTS[None], dtype=torch.float32))
        layer.bias.fill_(BIAS)
    return nn.Sequential(layer)


def linear_shapley(row: int) -> np.ndarray:
    """A linear model's interventional Shapley values: w_j (x_j - mean of the background)."""
    return WEIGHTS * (X[row] - X.mean(0))


def write_csv(path: Path, rows: np.ndarray, header: list[str], label: np.ndarray | None = None):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + (["label"] if label is not None else []))
        for i, values in enumerate(rows):
            writer.writerow([*values, *([label[i]] if label is not None else [])])
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return write_csv(tmp_path / "data.csv", X, ["a", "b", "c"], Y)


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    """The linear model exported by torch.onnx.export (a batch of any size)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            linear().eval(),
            (torch.zeros(2, 3),),
            None,
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            input_names=["rows"],
            output_names=["score"],
        )
    return program.model_proto.SerializeToString()


def saved(e_path: Path) -> FeatureExplanation:
    return FeatureExplanation.load(e_path)


# ------------------------------------------------------------------------------ models that run


def test_onnx_linear_model_gives_its_closed_form_shapley_values(capsys, tmp_path, data, onnx_bytes):
    model = tmp_path / "linear.onnx"
    model.write_bytes(onnx_bytes)
    out = tmp_path / "out"
    code, stdout, err = cli(
        capsys, "tabular", str(model), str(data), "--row", "5", "--label-column", "label",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    e = saved(out / "row5-kernelshap.json")
    np.testing.assert_allclose(e.values, linear_shapley(5), atol=1e-5)
    assert e.prediction == pytest.approx(X[5] @ WEIGHTS + BIAS, abs=1e-5)
    assert e.base_value + e.values.sum() == pytest.approx(e.prediction, abs=1e-6)
    top = e.features[int(np.argmax(np.abs(linear_shapley(5))))]
    assert stdout.splitlines()[3].strip().startswith(f"{top} = ")  # ranked first in the table
    assert "output 'score'" in stdout and "row5-kernelshap.json" in stdout


def test_torchscript_linear_model_gives_the_same_values(capsys, tmp_path, data):
    model = tmp_path / "linear.pt"
    model.write_bytes(script_bytes(linear()))
    out = tmp_path / "out"
    code, stdout, err = cli(
        capsys, "tabular", str(model), str(data), "--row", "0", "--label-column", "label",
        "--method", "exact_shapley", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    np.testing.assert_allclose(
        saved(out / "row0-exact_shapley.json").values, linear_shapley(0), atol=1e-5
    )
    assert "TorchScript" in stdout


def zipmap_model(path: Path) -> Path:
    """A graph as skl2onnx writes a classifier: a label output first, then the probabilities as
    a ZipMap (one {class: probability} per row) with the classes "no" and "yes"."""
    w = np.array([[1.0, -1.0], [0.5, 0.2], [0.0, 2.0]], np.float32)
    nodes = [
        oh.make_node("MatMul", ["x", "W"], ["z"]),
        oh.make_node("Softmax", ["z"], ["p"], axis=1),
        oh.make_node("ArgMax", ["p"], ["output_label"], axis=1, keepdims=0),
        oh.make_node(
            "ZipMap", ["p"], ["output_probability"], domain="ai.onnx.ml",
            classlabels_strings=["no", "yes"],
        ),
    ]  # fmt: skip
    probabilities = onnx.ValueInfoProto(name="output_probability")
    probabilities.type.CopyFrom(
        oh.make_sequence_type_proto(
            oh.make_map_type_proto(
                TensorProto.STRING, oh.make_tensor_type_proto(TensorProto.FLOAT, [])
            )
        )
    )
    graph = oh.make_graph(
        nodes, "classifier", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [oh.make_tensor_value_info("output_label", TensorProto.INT64, ["N"]), probabilities],
        [numpy_helper.from_array(w, "W")],
    )  # fmt: skip
    model = oh.make_model(
        graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_onnx_classifier_explains_its_probabilities_output_by_class_name(capsys, tmp_path, data):
    model = zipmap_model(tmp_path / "clf.onnx")
    score = load_tabular_model(model)
    assert score.labels == ["no", "yes"] and score.output == "output 'output_probability'"
    z = X[:4] @ np.array([[1.0, -1.0], [0.5, 0.2], [0.0, 2.0]])
    expected = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(score(X[:4]), expected, atol=1e-6)
    out = tmp_path / "out"
    code, stdout, err = cli(
        capsys, "tabular", str(model), str(data), "--row", "2", "--label-column", "label",
        "--target", "yes", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    e = saved(out / "row2-kernelshap.json")
    assert e.label == "yes" and e.target == 1
    assert e.prediction == pytest.approx(expected[2, 1], abs=1e-6)
    assert "of yes" in stdout


def test_skops_estimator_matches_the_library(capsys, tmp_path, data):
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, Y)
    model = tmp_path / "forest.skops"
    skops_io.dump(forest, model)
    out = tmp_path / "out"
    code, stdout, err = cli(
        capsys, "tabular", str(model), str(data), "--row", "7", "--label-column", "label",
        "--background", "25", "--target", "1", "--out", str(out), "--top", "2",
    )  # fmt: skip
    assert code == 0, err
    mine = saved(out / "row7-kernelshap.json")
    library = explain_tabular(
        forest, X, X[7], target=1, feature_names=["a", "b", "c"], max_background=25
    )
    np.testing.assert_allclose(mine.values, library.values, atol=1e-12)
    assert mine.params["background_rows"] == 25
    assert len([line for line in stdout.splitlines() if line.startswith("  ")]) == 2  # --top 2
    assert "RandomForestClassifier" in stdout


def test_skops_pipeline_with_a_categorical_column(capsys, tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    colours = np.array(["red", "green", "blue"])[np.arange(40) % 3]
    table = np.column_stack([X[:, :2].astype(object), colours])
    target = ((colours == "red") ^ (X[:, 0] > 1)).astype(int)
    pipe = make_pipeline(
        ColumnTransformer([("colour", OneHotEncoder(), [2])], remainder="passthrough"),
        LogisticRegression(C=100.0),
    ).fit(table, target)
    model = tmp_path / "pipe.skops"
    skops_io.dump(pipe, model)
    data = write_csv(tmp_path / "colours.csv", table, ["a", "b", "colour"])
    out = tmp_path / "out"
    code, stdout, err = cli(
        capsys, "tabular", str(model), str(data), "--row", "0", "--target", "1", "--out", str(out)
    )
    assert code == 0, err
    e = saved(out / "row0-kernelshap.json")
    assert e.features == ["a", "b", "colour"] and e.shown[2] == "red"
    assert e.ranked(1)[0][0] == "colour"  # red decides, and row 0 is red
    assert e.base_value + e.values.sum() == pytest.approx(e.prediction, abs=1e-9)


# ----------------------------------------------------------------------------- refused files


class Mkdir:
    """Unpickling this makes a folder: a stand-in for any code a pickle can run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib", "model.pt", "model.bin"])
def test_pickles_are_refused_unread(capsys, tmp_path, data, name):
    hit = tmp_path / "unpickled"
    model = tmp_path / name
    model.write_bytes(pickle.dumps(Mkdir(str(hit))))
    code, _, err = cli(capsys, "tabular", str(model), str(data), "--row", "0")
    line = one_error_line(err)
    assert code == 2 and "pickle" in line and "skops" in line
    assert not hit.exists()


def test_a_torch_save_archive_is_a_pickle(capsys, tmp_path, data):
    model = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(3)}, model)
    with pytest.raises(UnsafeModelError, match="pickle"):
        load_tabular_model(model)


def test_hostile_torchscript_is_refused_before_it_runs(capsys, tmp_path, data):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(SECRET)
    model = tmp_path / "writer.pt"
    model.write_bytes(script_bytes(Writer(str(victim))))
    code, _, err = cli(capsys, "tabular", str(model), str(data), "--row", "0")
    assert code == 2 and "aten::from_file" in one_error_line(err)
    assert victim.read_bytes() == SECRET


class Custom:
    """A class of the user's own: skops would have to trust code outside scikit-learn."""

    def __init__(self) -> None:
        self.scale = 2.0

    def predict(self, rows):
        return np.asarray(rows)[:, 0] * self.scale


def test_skops_refuses_types_outside_the_allow_list(capsys, tmp_path, data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.utils import shuffle

    custom = tmp_path / "custom.skops"
    skops_io.dump(Custom(), custom)
    code, _, err = cli(capsys, "tabular", str(custom), str(data), "--row", "0")
    line = one_error_line(err)
    assert code == 2 and f"{__name__}.Custom" in line and "refusing" in line
    # a function, even scikit-learn's, would be called on the rows: never trusted
    for func, name in ((operator.neg, "_operator.neg"), (shuffle, "sklearn.utils")):
        pipe = make_pipeline(FunctionTransformer(func), LogisticRegression()).fit(X, Y)
        path = tmp_path / "function.skops"
        skops_io.dump(pipe, path)
        with pytest.raises(UnsafeModelError, match=name):
            load_tabular_model(path)


def test_onnx_checks_are_the_image_models(capsys, tmp_path, data, onnx_bytes):
    proto = onnx.load_from_string(onnx_bytes)
    proto.graph.node[0].domain = "evil.ops"
    model = tmp_path / "custom.onnx"
    model.write_bytes(proto.SerializeToString())
    code, _, err = cli(capsys, "tabular", str(model), str(data), "--row", "0")
    assert code == 2 and "custom domain 'evil.ops'" in one_error_line(err)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "args, rows, message",
    [
        ([], None, "has 4 columns and the model takes 3"),
        (["--label-column", "label", "--row", "40"], None, "--row 40: "),
        (["--label-column", "label", "--background", "0"], None, "--background must be >= 1"),
        (["--label-column", "label"], [["1", "", "2", "0"]], "column 'b' is empty"),
        (["--label-column", "label"], [["1", "2", "0"]], "3 values for 4 columns"),
        (["--label-column", "label"], [["1", "x", "2", "0"]], "column 'b' holds 'x'"),
        (["--label-column", "label", "--method", "shapely"], None, "unknown tabular method"),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, data, onnx_bytes, args, rows, message):
    model = tmp_path / "linear.onnx"
    model.write_bytes(onnx_bytes)
    if rows is not None:
        with data.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
    if "--row" not in args:
        args = [*args, "--row", "0"]
    code, _, err = cli(capsys, "tabular", str(model), str(data), *args)
    assert code == 2 and message in one_error_line(err)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("broken.skops", b"not a zip", "is not a readable skops file"),
        ("broken.onnx", b"\x08\x07garbage", "is not a readable ONNX model"),
        ("model.txt", b"weights", "expected .onnx, .skops or a TorchScript archive"),
    ],
)
def test_unreadable_model_files_are_one_line(capsys, tmp_path, data, name, content, message):
    model = tmp_path / name
    model.write_bytes(content)
    code, _, err = cli(capsys, "tabular", str(model), str(data), "--row", "0")
    assert code == 2 and message in one_error_line(err)
