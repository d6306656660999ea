"""Inputs the library must refuse with a typed, one-line error that names what is wrong.

Image-valued parameters (``baseline``, ``hide``) are checked for shape, dtype and finiteness
under their own name; targets must not be booleans; a model input must have the channels the
model takes and finite values; a symlink loop is reported as one; a refused pickle prints
nothing but the error line; the pixel limit in force is the only one a message quotes.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import seethrough
from seethrough.cli.main import main
from seethrough.core.inputs import image_parameter
from seethrough.dashboard import service as svc
from seethrough.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    InvalidTargetError,
    SeethroughError,
)
from seethrough.images import DEFAULT_MAX_PIXELS, load_image
from seethrough.metrics import deletion
from seethrough.models import Preprocessing, VisionModel
from seethrough.models.zoo import read_state_dict

SHAPE = (3, 8, 8)


class Net(nn.Module):
    """conv -> ReLU -> global average pool -> linear, 5 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def snapshot(model: nn.Module) -> tuple:
    """What an explanation must leave as it was: flags, requires_grad, grads, submodules."""
    return (
        {n: m.training for n, m in model.named_modules()},
        {n: (p.requires_grad, p.grad) for n, p in model.named_parameters()},
        dict(model.named_modules()),
        [h for m in model.modules() for h in (m._forward_hooks, m._backward_hooks) if h],
    )


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand((2, *SHAPE), generator=torch.Generator().manual_seed(1))


GRADIENT = {"integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 4}}
PERTURBATION = {"occlusion": {"window": 4, "stride": 4}, "rise": {"n_samples": 8}}


def message(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------ image-valued params


@pytest.mark.parametrize("method", list(GRADIENT))
@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (1, 3, 1, 8), (3, 8, 1), (2, 1, 8, 8)])
def test_baseline_of_another_shape_is_refused(net, x, method, shape):
    """No broadcasting: one channel for three, or one row, used to pass silently
    (gradient_shap) or fail in torch (integrated_gradients)."""
    with pytest.raises(InvalidParameterError) as exc:
        seethrough.explain(net, x[:1], method, baseline=torch.zeros(shape), **GRADIENT[method])
    text = message(exc)
    assert text.startswith("baseline has shape") and str(shape) in text
    assert "(3, 8, 8)" in text and "hide" not in text


@pytest.mark.parametrize("method", list(GRADIENT))
@pytest.mark.parametrize("bad", [float("nan"), "nan", float("inf"), np.float32("nan")])
def test_non_finite_baseline_names_baseline(net, x, method, bad):
    with pytest.raises(InvalidParameterError) as exc:
        seethrough.explain(net, x, method, baseline=bad, **GRADIENT[method])
    assert message(exc).startswith("baseline=") and "hide" not in message(exc)


@pytest.mark.parametrize("method", list(GRADIENT))
def test_baseline_tensor_values_and_dtype_are_checked(net, x, method):
    base = torch.zeros(SHAPE)
    base[0, 2, 3] = float("nan")
    with pytest.raises(InvalidParameterError, match=r"^baseline holds 1 non-finite value"):
        seethrough.explain(net, x, method, baseline=base, **GRADIENT[method])
    with pytest.raises(InvalidParameterError, match=r"^baseline has dtype torch\.bool"):
        seethrough.explain(
            net, x, method, baseline=torch.zeros(SHAPE, dtype=torch.bool), **GRADIENT[method]
        )


@pytest.mark.parametrize("method", list(GRADIENT))
def test_baseline_that_is_not_an_image_names_baseline(net, x, method):
    with pytest.raises(InvalidParameterError) as exc:
        seethrough.explain(net, x, method, baseline="zero", **GRADIENT[method])
    assert message(exc).startswith("baseline='zero'")
    with pytest.raises(InvalidParameterError, match=r"^baseline=True"):
        seethrough.explain(net, x, method, baseline=True, **GRADIENT[method])


@pytest.mark.parametrize("method", list(GRADIENT))
def test_valid_baselines_agree_in_every_documented_form(net, x, method):
    """A number, one image, the same image once per input, an integer tensor: the same
    reference, so the same attributions. (For Gradient SHAP a (1, C, H, W) baseline with two
    inputs is a set of one to draw from: other random draws, as it always was.)"""
    image = torch.rand(SHAPE, generator=torch.Generator().manual_seed(3))
    kw = dict(target=[1, 3], **GRADIENT[method])

    def attributions(baseline: object, inputs: torch.Tensor = x) -> np.ndarray:
        es = seethrough.explain(net, inputs, method, baseline=baseline, **kw)
        return np.stack([e.attributions for e in es])

    one = attributions(image)
    np.testing.assert_allclose(attributions(image.expand(2, -1, -1, -1).clone()), one, atol=1e-6)
    single = dict(kw, target=1)
    np.testing.assert_allclose(
        seethrough.explain(net, x[0], method, baseline=image[None], **single).attributions,
        seethrough.explain(net, x[0], method, baseline=image, **single).attributions,
        rtol=0,
        atol=0,
    )
    number = attributions(0.5)
    np.testing.assert_allclose(attributions(torch.full(SHAPE, 0.5)), number, atol=1e-6)
    np.testing.assert_allclose(attributions("0.5"), number, rtol=0, atol=0)
    np.testing.assert_allclose(
        attributions(torch.ones(SHAPE, dtype=torch.int64)), attributions(1.0)
    )


def test_gradient_shap_still_takes_a_set_of_baselines(net, x):
    """(M, C, H, W) with M different from the batch is a distribution to draw from."""
    es = seethrough.explain(
        net, x, "gradient_shap", baseline=torch.rand(5, *SHAPE), n_samples=4, target=[0, 1]
    )
    assert np.isfinite(es[0].attributions).all()
    with pytest.raises(InvalidParameterError, match=r"^baseline has shape \(5, 1, 8, 8\)"):
        seethrough.explain(net, x, "gradient_shap", baseline=torch.rand(5, 1, 8, 8), n_samples=4)


@pytest.mark.parametrize("method", list(PERTURBATION))
@pytest.mark.parametrize(
    "bad",
    [float("nan"), "inf", torch.zeros(1, 1, 8, 8), torch.zeros(3, 8, 1), torch.zeros(3, *SHAPE)],
)
def test_bad_hide_names_hide(net, x, method, bad):
    with pytest.raises(InvalidParameterError) as exc:
        seethrough.explain(net, x, method, hide=bad, **PERTURBATION[method])
    assert message(exc).startswith("hide")


def test_hide_may_be_one_image_per_input(net, x):
    hide = torch.rand((2, *SHAPE), generator=torch.Generator().manual_seed(4))
    both = seethrough.explain(net, x, "occlusion", hide=hide, target=0, **PERTURBATION["occlusion"])
    first = seethrough.explain(
        net, x[0], "occlusion", hide=hide[0], target=0, **PERTURBATION["occlusion"]
    )
    np.testing.assert_allclose(both[0].map, first.map, atol=1e-6)


def test_metric_hide_names_hide(net, x):
    with pytest.raises(InvalidParameterError, match=r"^hide=nan"):
        deletion(net, x[0], np.ones((8, 8)), hide=float("nan"))


def test_image_parameter_forms():
    x = torch.zeros(2, *SHAPE, dtype=torch.float64)
    assert image_parameter("p", np.int64(2), x) == 2.0
    assert image_parameter("p", torch.tensor(0.5), x) == 0.5
    assert image_parameter("p", "blur", x, keywords=("blur",)) == "blur"
    out = image_parameter("p", torch.ones(SHAPE, dtype=torch.uint8), x)
    assert out.dtype == torch.float64 and out.shape == SHAPE
    with pytest.raises(InvalidParameterError, match=r"^p='blur'"):
        image_parameter("p", "blur", x)  # not one of this parameter's keywords
    with pytest.raises(InvalidParameterError, match=r"^p=\[0\.5\]"):
        image_parameter("p", [0.5], x)
    with pytest.raises(InvalidParameterError, match=r"give \(3, 8, 8\) or \(1 or 2, 3, 8, 8\)"):
        image_parameter("p", torch.zeros(3, *SHAPE), x)


# ------------------------------------------------------------------------------------ targets


@pytest.mark.parametrize("target", [True, False, np.True_, torch.tensor(True), [0, True]])
def test_boolean_target_is_refused(net, x, target):
    """``int(True)`` is 1: a boolean used to explain class 1 without a word."""
    with pytest.raises(InvalidParameterError, match="boolean is not a class index"):
        seethrough.explain(net, x, "gradcam", target=target)


@pytest.mark.parametrize("target", [True, np.True_])
def test_metrics_resolve_targets_on_explains_path(net, target):
    image, good = np.full((8, 8, 3), 128, np.uint8), np.ones((8, 8))
    with pytest.raises(InvalidParameterError, match="boolean is not a class index"):
        deletion(net, image, good, target=target, steps=2)
    with pytest.raises(InvalidTargetError, match="not a callable"):
        deletion(net, image, good, target=lambda out: out[:, 0], steps=2)
    with pytest.raises(InvalidTargetError, match="out of range"):
        deletion(net, image, good, target=5, steps=2)
    assert deletion(net, image, good, target=np.int64(3), steps=2).target == 3


def test_integer_like_targets_still_work(net, x):
    es = seethrough.explain(net, x, "gradcam", target=[np.int64(1), torch.tensor(2)])
    assert [e.target for e in es] == [1, 2]


# ------------------------------------------------------------------------------ model inputs


def _vision_model(module: nn.Module) -> VisionModel:
    labels = [f"c{i}" for i in range(5)]
    return VisionModel(module, Preprocessing(size=8), labels, name="t", source="t", weights="t")


def test_tensor_with_other_channels_for_a_vision_model(net):
    vm = _vision_model(net)
    with pytest.raises(InvalidImageError) as exc:
        seethrough.explain(vm, torch.rand(1, 1, 8, 8), "gradcam")
    assert "1 channel" in message(exc) and "takes 3" in message(exc)
    with pytest.raises(InvalidImageError, match="takes 3"):
        vm.predict(torch.rand(1, 1, 8, 8))


def test_tensor_with_other_channels_for_a_bare_module(net):
    """Raised from the model's own failure (the torch error chained), the model left as it was."""
    before = snapshot(net)
    for method in ("gradcam", "saliency", "occlusion"):
        with pytest.raises(InvalidImageError) as exc:
            seethrough.explain(net, torch.rand(1, 1, 8, 8), method)
        text = message(exc)
        assert "the input has 1 channel" in text and "'conv' takes 3" in text
        assert isinstance(exc.value.__cause__, RuntimeError)
        assert snapshot(net) == before


def test_input_a_bare_module_cannot_take_gives_one_typed_line():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    with pytest.raises(InvalidImageError) as exc:
        seethrough.explain(mlp, torch.rand(1, 3, 4, 4), "saliency")
    assert message(exc).startswith("the model cannot run on the input of shape (1, 3, 4, 4): ")


def test_errors_of_the_method_itself_are_not_rewritten(net, x):
    """A RuntimeError raised outside the model's forward is not turned into an input error."""

    def target(out: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("from the target")

    with pytest.raises(RuntimeError, match="from the target") as exc:
        seethrough.explain(net, x, "saliency", target=target)
    assert not isinstance(exc.value, SeethroughError)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused_without_a_warning(net, x, bad):
    x = x.clone()
    x[1, 0, 2, :3] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidImageError, match=r"^the input has 3 non-finite values"):
            seethrough.explain(net, x, "gradcam")
        with pytest.raises(InvalidImageError, match="non-finite"):
            _vision_model(net).predict(x)


BAD_INPUTS = [
    torch.zeros(3, 8, 8, dtype=torch.uint8),  # not a float
    torch.rand(8, 8),  # another rank
    torch.rand(1, 1, 8, 8),  # another channel count
    torch.full((1, 3, 8, 8), float("nan")),  # non-finite
    [],  # no image
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=["uint8", "2d", "channels", "nan", "empty"])
def test_one_bad_input_gives_one_error_through_every_entry_point(net, bad):
    """predict, explain and a metric turn images into a batch on one path: same class, same line."""
    vm = _vision_model(net)
    good = np.ones((8, 8))
    errors = []
    for call in (
        lambda: vm.predict(bad),
        lambda: seethrough.explain(vm, bad, "gradcam"),
        lambda: deletion(vm, bad, good, steps=2),
    ):
        with pytest.raises(InvalidImageError) as exc:
            call()
        errors.append((type(exc.value), message(exc)))
    assert errors[0] == errors[1] == errors[2]


def test_an_input_that_is_no_input_is_both_an_image_and_a_parameter_error(net):
    from seethrough.errors import InvalidInputError

    vm = _vision_model(net)
    for entry in (vm.predict, lambda v: seethrough.explain(vm, v, "gradcam")):
        with pytest.raises(InvalidInputError) as exc:
            entry(torch.zeros(2, 2, dtype=torch.long))
        assert isinstance(exc.value, InvalidImageError)
        assert isinstance(exc.value, InvalidParameterError)


# ------------------------------------------------------------------------------------- files


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_loop_and_broken_link(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    os.symlink(b, a)
    os.symlink(a, b)
    with pytest.raises(InvalidImageError, match=r"a\.png': symlink loop$"):
        load_image(a)
    dangling = tmp_path / "dangling.png"
    os.symlink(tmp_path / "gone.png", dangling)
    with pytest.raises(InvalidImageError, match="broken symlink"):
        load_image(dangling)
    with pytest.raises(InvalidImageError, match="file not found"):
        load_image(tmp_path / "missing.png")


def _raw_pickle(path: Path) -> Path:
    """A plain pickle (not torch.save's archive) of a dict holding a Python object."""
    path.write_bytes(pickle.dumps({"weight": [1.0], "extra": argparse.Namespace(a=1)}))
    return path


def test_refused_pickle_draws_no_warning(tmp_path):
    path = _raw_pickle(tmp_path / "raw.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidParameterError, match="refusing weights file"):
            read_state_dict(path)
    assert [str(w.message) for w in caught] == []


def test_refused_pickle_is_one_line_from_the_cli(tmp_path, capsys):
    path = _raw_pickle(tmp_path / "raw.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as exc:
            main(["predict", "sample:chelsea", "--model", "resnet18", "--weights", str(path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and [str(w.message) for w in caught] == []
    assert err.count("\n") == 1 and err.startswith("error: refusing weights file")


@pytest.mark.slow
def test_refused_pickle_stderr_is_one_line_in_a_process(tmp_path):
    path = _raw_pickle(tmp_path / "raw.pt")
    command = ["predict", "sample:chelsea", "--model", "resnet18", "--weights", str(path)]
    proc = subprocess.run(
        [sys.executable, "-m", "seethrough.cli.main", *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: refusing"), proc.stderr


# ------------------------------------------------------------------------------- pixel limit


def _png_claiming(width: int, height: int) -> bytes:
    """A real 2x2 PNG whose IHDR is patched to claim ``width`` x ``height`` (CRC fixed)."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (10, 20, 30)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = 8 + 8  # signature, then the IHDR chunk's length and type
    assert data[12:16] == b"IHDR"
    data[start : start + 8] = struct.pack(">II", width, height)
    ihdr = bytes(data[12 : start + 13])
    data[start + 13 : start + 17] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def test_header_claim_is_read_back():
    with pytest.raises(ImageTooLargeError) as exc:
        load_image(_png_claiming(300, 200), max_pixels=100)
    assert exc.value.size == (300, 200) and exc.value.limit == 100


def test_raised_limit_rules_over_pils_cap(tmp_path, monkeypatch):
    """400 MP: over PIL's own cap (2 x 89,478,485), under a limit of 500 M. The header passes,
    the missing pixel data is what fails; PIL's cap is as it was afterwards."""
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(20000, 20000))
    cap = Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv("SEETHROUGH_MAX_PIXELS", "500000000")
    with pytest.raises(InvalidImageError) as exc:
        load_image(path)
    assert not isinstance(exc.value, ImageTooLargeError)
    assert "truncated" in message(exc) and "178956970" not in message(exc)
    assert Image.MAX_IMAGE_PIXELS == cap
    monkeypatch.setenv("SEETHROUGH_MAX_PIXELS", "300000000")
    with pytest.raises(ImageTooLargeError) as exc:
        load_image(path)
    text = message(exc)
    assert "20000x20000 = 400,000,000 pixels" in text and "limit of 300,000,000" in text
    assert "178956970" not in text and "178,956,970" not in text


def test_default_limit_quotes_only_itself(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(20000, 20000))
    with pytest.raises(ImageTooLargeError) as exc:
        load_image(path)
    text = message(exc)
    assert f"limit of {DEFAULT_MAX_PIXELS:,}" in text and "178956970" not in text


def test_image_over_pils_cap_decodes_under_our_limit(monkeypatch):
    """A real image: PIL's cap lowered to 1,000 pixels (refusal above 2,000), 60x50 decodes
    under our limit of 5,000 and is refused under 2,999 with our message."""
    buffer = io.BytesIO()
    Image.new("RGB", (60, 50), (1, 2, 3)).save(buffer, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    image = load_image(buffer.getvalue(), max_pixels=5000)
    assert image.size == (60, 50) and image.getpixel((5, 5)) == (1, 2, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(ImageTooLargeError, match=r"60x50 = 3,000 pixels.*limit of 2,999 "):
        load_image(buffer.getvalue(), max_pixels=2999)


def test_dashboard_upload_message_says_its_own_limit(monkeypatch):
    data = _png_claiming(9000, 5000)
    with pytest.raises(ImageTooLargeError) as exc:
        svc.read_upload(data, "poster.png")
    text = message(exc)
    assert text.startswith("poster.png is 9000x5000 = 45,000,000 pixels")
    assert f"{svc.MAX_UPLOAD_PIXELS:,}" in text
    assert "max_pixels" not in text and "SEETHROUGH_MAX_PIXELS" not in text
    monkeypatch.setenv("SEETHROUGH_MAX_PIXELS", "10")  # the variable does not apply there
    with pytest.raises(InvalidImageError, match="truncated"):
        svc.read_upload(_png_claiming(100, 100), "small.png")
