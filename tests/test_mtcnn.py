"""MTCNN, a trained face detector (facenet-pytorch's weights), through the detector adapter:
it finds the astronaut's face, and occlusion, Grad-CAM and saliency of the face box put most
of their positive mass inside the box. Skipped, saying why, without facenet-pytorch."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

import seethrough
from seethrough.core.detection import box_iou
from seethrough.core.hooks import count_hooks
from seethrough.errors import InvalidTargetError, MissingDependencyError
from seethrough.models import mtcnn
from seethrough.models.mtcnn import BoxFeatures, MTCNNDetector, _Layout
from seethrough.targets import Box

from .test_cli import cli

needs_facenet = pytest.mark.skipif(
    importlib.util.find_spec("facenet_pytorch") is None,
    reason=f"facenet-pytorch is not installed ({mtcnn.INSTALL})",
)

# The face in skimage's astronaut (512x512), checked by eye: forehead to chin, ear to ear.
FACE = (183.0, 64.0, 268.0, 172.0)
# The head, cropped (rows 0-255, columns 96-351) and halved to 128x128: a fast cascade.
HEAD_CROP = (96, 0)


def iou(a, b) -> float:
    return float(box_iou(torch.tensor([a]), torch.tensor(b))[0])


def inside(values: np.ndarray, box) -> float:
    """The share of the positive mass of ``values`` (H, W) inside ``box`` (xyxy pixels)."""
    positive = np.clip(values.astype(np.float64), 0, None)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return float(positive[y0:y1, x0:x1].sum() / positive.sum())


@pytest.fixture(scope="module")
def model():
    return seethrough.load_model("mtcnn")


@pytest.fixture(scope="module")
def head() -> np.ndarray:
    x, y = HEAD_CROP
    crop = Image.fromarray(data.astronaut()[y : y + 256, x : x + 256])
    return np.asarray(crop.resize((128, 128), Image.Resampling.BILINEAR))


def head_face() -> tuple[float, ...]:
    x, y = HEAD_CROP
    x0, y0, x1, y1 = FACE
    return ((x0 - x) / 2, (y0 - y) / 2, (x1 - x) / 2, (y1 - y) / 2)


# ------------------------------------------------------------------- without facenet-pytorch


def test_missing_facenet_is_one_typed_error_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        mtcnn.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "facenet_pytorch" else real(name, *a),
    )
    with pytest.raises(MissingDependencyError) as info:
        seethrough.load_model("mtcnn")
    assert "pip install --no-deps facenet-pytorch" in str(info.value)
    assert "\n" not in str(info.value)


def test_box_features_layout_is_block_diagonal_and_split_undoes_it():
    features = torch.arange(3 * 2 * 1 * 2, dtype=torch.float32).reshape(3, 2, 1, 2) + 1
    tiled = BoxFeatures()(features, [2, 1])  # image 0: boxes 0, 1; image 1: box 2
    assert tiled.shape == (2, 4, 1, 4)
    torch.testing.assert_close(tiled[0, 0:2, :, 0:2], features[0])  # block 0, tile 0
    torch.testing.assert_close(tiled[0, 2:4, :, 2:4], features[1])  # block 1, tile 1
    torch.testing.assert_close(tiled[1, 0:2, :, 0:2], features[2])
    assert tiled[0, 0:2, :, 2:4].abs().sum() == 0 and tiled[0, 2:4, :, 0:2].abs().sum() == 0
    assert tiled[1, 2:].abs().sum() == 0 and tiled[1, :, :, 2:].abs().sum() == 0
    torch.testing.assert_close(BoxFeatures.split(tiled, [2, 1], 2), features)


def test_align_map_pastes_each_tile_onto_its_box():
    detector = MTCNNDetector(nn.Identity(), nn.Identity(), nn.Identity())
    boxes = torch.tensor([[0.0, 0.0, 4.0, 2.0], [6.0, 4.0, 8.0, 8.0]])
    detector.layout = _Layout((8, 10), [boxes], (1, 1))  # one 1x1 tile per box
    mapped = detector.align_map(torch.tensor([[[2.0, 5.0]]]))
    want = torch.zeros(1, 8, 10)
    want[0, 0:2, 0:4] = 2.0
    want[0, 4:8, 6:8] = 5.0
    torch.testing.assert_close(mapped, want)
    at_input = torch.rand(1, 8, 10)  # a map at the input's size passes unchanged
    assert detector.align_map(at_input) is at_input


# ------------------------------------------------------------------------ the trained model


@needs_facenet
def test_predict_finds_the_astronauts_face(model):
    (face,) = model.predict("sample:astronaut")
    assert face.label == "face" and face.score > 0.9
    assert iou(face.box, FACE) > 0.8


@needs_facenet
def test_an_image_without_faces_gives_no_box_and_a_typed_error(model):
    coffee = data.coffee()[::4, ::4]
    assert model.predict(coffee) == []
    with pytest.raises(InvalidTargetError, match="no box"):
        seethrough.explain(model, coffee, "gradcam", target=Box(index=0))


@needs_facenet
@pytest.mark.parametrize(
    ("method", "params", "least"),
    [
        # the window and stride are a quarter and an eighth of the 128-pixel image: 7x7 windows
        ("occlusion", {"window": 32, "stride": 16}, 0.6),
        ("gradcam", {}, 0.99),  # the box's own tile, pasted onto the box
        ("saliency", {}, 0.95),  # O-Net sees only the box's crop
    ],
)
def test_explanations_of_the_face_box_lie_in_the_box(model, head, method, params, least):
    (face,) = model.predict(head)
    assert iou(face.box, head_face()) > 0.8 and face.score > 0.9
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    e = seethrough.explain(model, head, method, target=Box(index=0), **params)
    assert e.map.shape == (128, 128) and e.region.box == pytest.approx(face.box, abs=1e-3)
    assert e.score > 0.85  # the face log-odds, above logit(0.7)
    assert inside(e.map, face.box) > least
    assert count_hooks(model.module) == 0 and model.module.layout is not None
    assert not model.module.training
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())


@needs_facenet
def test_gradcam_of_a_box_is_its_tile_pasted_onto_the_box(model, head):
    e = seethrough.explain(model, head, "gradcam", target=Box(index=0))
    assert e.raw.shape == (128, 128)  # mapped onto the input by the model's layout
    x0, y0, x1, y1 = (int(round(v)) for v in e.region.box)
    outside = np.ones(e.raw.shape, dtype=bool)
    outside[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = False
    assert np.abs(e.raw[outside]).max() == 0
    assert np.abs(e.raw[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]).min() >= 0
    assert e.raw[y0:y1, x0:x1].max() > 0


@needs_facenet
def test_predict_on_the_command_line(capsys):
    code, out, err = cli(capsys, "predict", "-m", "mtcnn", "sample:astronaut")
    assert code == 0, err
    assert "face" in out
