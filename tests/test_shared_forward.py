"""k targets of one image: one forward and k backwards for the gradient CAMs, same results as
k calls (``explain(model, image, method, target=[t1, ..., tk])``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.core.hooks import count_hooks
from seethrough.errors import InvalidParameterError, InvalidTargetError
from seethrough.targets import Box

from .conftest import make_tiny

SHARED = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")


def count_forwards(model: nn.Module) -> tuple[list[int], object]:
    """A counter of ``model``'s forward calls, and the hook's handle (to remove it)."""
    calls = [0]

    def hook(module: nn.Module, args: tuple) -> None:
        calls[0] += 1

    return calls, model.register_forward_pre_hook(hook)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two maps differ by more than 1% of their scale (random weights give tiny maps)."""
    return bool(np.abs(a - b).max() > 1e-2 * max(np.abs(a).max(), np.abs(b).max()))


def assert_same(together, apart) -> None:
    """Each explanation of the k-target call equals the one of its own call."""
    assert len(together) == len(apart)
    for a, b in zip(together, apart, strict=True):
        assert a.target == b.target and a.label == b.label
        assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-6)
        assert np.abs(b.raw).max() > 0  # a map of zeros would pass anything
        for ours, alone in ((a.raw, b.raw), (a.map, b.map)):  # tolerance relative to the scale
            np.testing.assert_allclose(ours, alone, rtol=1e-5, atol=1e-5 * np.abs(alone).max())
        assert (a.region is None) == (b.region is None)
        if a.region is not None:
            assert a.region.box == b.region.box


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("method", SHARED)
def test_k_classes_of_one_image_equal_k_calls_in_one_forward(method, image):
    model = make_tiny()
    forwards, handle = count_forwards(model)
    try:
        together = seethrough.explain(model, image, method, target=[0, 3, 1], layer="features")
        assert forwards[0] == 1
        apart = [
            seethrough.explain(model, image, method, target=t, layer="features") for t in (0, 3, 1)
        ]
        assert forwards[0] == 4
    finally:
        handle.remove()
    assert isinstance(together, list) and [e.target for e in together] == [0, 3, 1]
    assert_same(together, apart)
    assert differ(together[0].raw, together[1].raw)  # the classes' maps differ
    assert count_hooks(model) == 0


@pytest.mark.parametrize("method", ["eigencam", "saliency", "occlusion"])
def test_other_methods_take_k_targets_row_by_row(method, image):
    model = make_tiny()
    kw = {"window": 6, "stride": 4} if method == "occlusion" else {}
    together = seethrough.explain(model, image, method, target=[2, 0], **kw)
    apart = [seethrough.explain(model, image, method, target=t, **kw) for t in (2, 0)]
    assert_same(together, apart)


def test_model_state_is_restored(image):
    model = make_tiny()
    model.fc.weight.requires_grad_(False)
    model.features[3].train()
    seethrough.explain(model, image, "gradcam", target=[1, 2])
    assert count_hooks(model) == 0
    assert not model.fc.weight.requires_grad and model.fc.bias.requires_grad
    assert model.features[3].training and not model.features[0].training
    assert all(p.grad is None for p in model.parameters())


def test_a_list_of_one_target_gives_a_list_and_an_empty_list_is_refused(image):
    model = make_tiny()
    (one,) = seethrough.explain(model, image, "gradcam", target=[2])
    assert one.target == 2
    np.testing.assert_allclose(
        one.raw, seethrough.explain(model, image, "gradcam", target=2).raw, rtol=1e-6
    )
    with pytest.raises(InvalidTargetError, match="empty"):
        seethrough.explain(model, image, "gradcam", target=[])


def test_a_batch_with_targets_per_image_is_unchanged(image):
    model = make_tiny()
    batch = torch.stack([image, image.flip(-1)])
    forwards, handle = count_forwards(model)
    try:
        both = seethrough.explain(model, batch, "gradcam", target=[1, 2], layer="features")
    finally:
        handle.remove()
    assert forwards[0] == 1 and [e.target for e in both] == [1, 2]
    second = seethrough.explain(model, image.flip(-1), "gradcam", target=2)
    np.testing.assert_allclose(both[1].raw, second.raw, rtol=1e-5, atol=1e-6)


def test_shared_rows_of_a_batch_run_each_distinct_input_once(image):
    """A method called on rows [a, a, b, b] with shared_rows [0, 0, 1, 1] forwards [a, b]."""
    model = make_tiny()
    other = image.flip(-1)
    x = torch.stack([image, image, other, other])
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        result = seethrough.get_method("gradcam").cls()(
            model, x, [0, 3, 1, 2], layer="features", shared_rows=[0, 0, 1, 1]
        )
    finally:
        handle.remove()
    assert sizes == [2]
    for row, (img, t) in enumerate([(image, 0), (image, 3), (other, 1), (other, 2)]):
        alone = seethrough.explain(model, img, "gradcam", target=t, layer="features")
        np.testing.assert_allclose(result.raw[row].numpy(), alone.raw, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidParameterError, match="shared_rows"):
        seethrough.get_method("gradcam").cls()(model, x, 0, shared_rows=[0, 0])


def test_shared_rows_split_in_chunks_stay_correct(image, monkeypatch):
    """Where the distinct inputs do not fit one pass, chunks of rows still give each row's map."""
    from seethrough.methods.cam import base

    monkeypatch.setattr(base, "chunk_size", lambda x, forward=None, policy=None: 1)
    monkeypatch.setattr(seethrough.methods.base, "chunk_size", lambda x, *a, **k: 1)
    model = make_tiny()
    together = seethrough.explain(model, image, "layercam", target=[0, 1, 2])
    apart = [seethrough.explain(model, image, "layercam", target=t) for t in (0, 1, 2)]
    assert_same(together, apart)


def _detector(name: str):
    torch.manual_seed(0)
    model = seethrough.load_model(name, weights="none", max_boxes=10)
    model.module.transform.min_size = (96,)
    model.module.transform.max_size = 128
    return model


def _scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = (rng.random((80, 96, 3)) * 60).astype(np.uint8)
    img[20:60, 30:80] = 200
    return img


@pytest.mark.parametrize(
    "name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "ssdlite320_mobilenet_v3_large"]
)
def test_boxes_of_a_detector_in_one_forward_equal_separate_calls(name):
    detector = _detector(name)
    image = _scene()
    forwards, handle = count_forwards(detector.module)
    try:
        together = seethrough.explain(detector, image, "gradcam", target=[Box(0), Box(index=2)])
        assert forwards[0] == 1  # the detector's default layer is named: no probing forward
        apart = [
            seethrough.explain(detector, image, "gradcam", target=Box(index=i)) for i in (0, 2)
        ]
        assert forwards[0] == 3
    finally:
        handle.remove()
    assert_same(together, apart)
    assert together[0].region.box != together[1].region.box
    if name.startswith("ssd"):  # random Faster R-CNN heads give every box the same gradient
        assert differ(together[0].raw, together[1].raw)
    assert count_hooks(detector.module) == 0


@pytest.mark.slow
def test_the_command_line_explains_the_boxes_of_an_image_in_one_forward(
    capsys, tmp_path, monkeypatch
):
    from PIL import Image

    from seethrough.cli import main as cli_main
    from seethrough.explanation import Explanation

    from .test_cli import cli

    path = tmp_path / "scene.png"
    Image.fromarray(_scene()).save(path)
    calls: list[object] = []
    explain = cli_main.explain_api

    def recorded(*args, **kw):
        calls.append(kw["target"])
        return explain(*args, **kw)

    monkeypatch.setattr(cli_main, "explain_api", recorded)
    torch.manual_seed(0)
    args = ("-m", "ssdlite320_mobilenet_v3_large", "--weights", "none", "--max-boxes", "5")
    code, _, err = cli(
        capsys, "explain", str(path), *args, "--top-boxes", "3", "--out", str(tmp_path)
    )
    assert code == 0, err
    assert calls == [[Box(index=0), Box(index=1), Box(index=2)]]  # one call for the three boxes
    saved = [Explanation.load(tmp_path / "scene" / f"gradcam-box{k}.json") for k in range(3)]
    assert len({e.region.box for e in saved}) == 3
    torch.manual_seed(0)
    alone = seethrough.explain(
        seethrough.load_model("ssdlite320_mobilenet_v3_large", weights="none", max_boxes=5),
        str(path),
        "gradcam",
        target=Box(index=1),
    )
    np.testing.assert_allclose(
        saved[1].raw, alone.raw, rtol=1e-5, atol=1e-5 * np.abs(alone.raw).max()
    )
