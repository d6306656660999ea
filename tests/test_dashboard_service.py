"""The dashboard's logic without a page: uploads, forms, model pool, runs, caches, downloads.

Everything here runs on a tiny random conv model (32x32 input) or on no model at all; the page
itself is tested in ``test_dashboard_app.py``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import seethrough
import seethrough.dashboard as dashboard
from seethrough.dashboard import service as svc
from seethrough.errors import (
    CancelledError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    WeightsUnavailableError,
)
from seethrough.registry import get_method
from tests.test_cli import cli, one_error_line

# ---------------------------------------------------------------------------------------------
# helpers


def image_bytes(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient_image(width: int = 40, height: int = 24) -> Image.Image:
    """An RGB image whose every pixel differs from its neighbours (so orientation is visible)."""
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1), "RGB")


def tiny_module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def tiny_vm(seed: int = 0) -> seethrough.VisionModel:
    return seethrough.VisionModel(
        tiny_module(seed),
        seethrough.Preprocessing(size=32),
        ["apple", "banana", "cherry"],
        name="tiny",
        source="file",
        weights="none (random)",
    )


SPEC = svc.ModelSpec(name="tiny-test-model", weights="none")

KERAS_MISSING = svc.missing_extra("Keras")
ONNX_MISSING = svc.missing_extra("ONNX")
needs_keras = pytest.mark.skipif(KERAS_MISSING is not None, reason=str(KERAS_MISSING))
needs_onnx = pytest.mark.skipif(ONNX_MISSING is not None, reason=str(ONNX_MISSING))


def tiny_keras(lambda_layer: bool = False):
    """A tiny Keras CNN (32x32 RGB -> 3 logits) on the torch backend, made with the library's
    own Keras import (which sets the backend first); with ``lambda_layer``, code in it."""
    from seethrough.models.keras import keras_module

    keras = keras_module()
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(inp) if lambda_layer else inp
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, keras.layers.Dense(3, name="fc")(h))


def keras_bytes(model, suffix: str = ".keras") -> bytes:
    """``model`` saved as a ``.keras`` (or legacy ``.h5``) file, as the bytes an upload gives."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # .h5 is Keras' legacy format: it says so
        path = Path(tmp) / f"model{suffix}"
        model.save(path)
        return path.read_bytes()


def onnx_bytes(module: nn.Module, size: int = 32) -> bytes:
    """``module`` exported to one self-contained ONNX file (batch axis dynamic)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated upstream
        torch.onnx.export(
            module,
            torch.zeros(1, 3, size, size),
            buf,
            input_names=["image"],
            dynamic_axes={"image": {0: "batch"}},
            external_data=False,
            dynamo=False,
        )
    return buf.getvalue()


@pytest.fixture
def slot() -> svc.ModelSlot:
    return svc.ModelSlot(tiny_vm())


@pytest.fixture
def photo() -> Image.Image:
    return gradient_image(48, 40)


def hook_count(module: nn.Module) -> int:
    return sum(
        len(getattr(m, attr))
        for m in module.modules()
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    )


# ---------------------------------------------------------------------------------------------
# read_upload


@pytest.mark.parametrize("fmt, name", [("PNG", "photo.png"), ("JPEG", "photo.JPG")])
def test_read_upload_decodes_png_and_jpeg(fmt, name):
    source = gradient_image()
    image = svc.read_upload(image_bytes(source, fmt), name)
    assert image.mode == "RGB" and image.size == (40, 24)
    assert image.info["name"] == name
    diff = np.abs(np.asarray(image, dtype=int) - np.asarray(source, dtype=int))
    assert diff.mean() < (0.5 if fmt == "PNG" else 12)


def test_read_upload_applies_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    data = image_bytes(gradient_image(40, 24), "JPEG", exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (40, 24)  # stored landscape
    assert svc.read_upload(data, "phone.jpg").size == (24, 40)  # shown portrait


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_read_upload_gives_rgb(mode):
    source = gradient_image().convert(mode)
    image = svc.read_upload(image_bytes(source, "PNG"), f"{mode}.png")
    assert image.mode == "RGB" and image.size == (40, 24)


def test_decoded_upload_decodes_and_hashes_each_upload_once(monkeypatch):
    calls = []
    real = svc.read_upload
    monkeypatch.setattr(svc, "read_upload", lambda *a: calls.append(a[1]) or real(*a))
    monkeypatch.setattr(svc, "_UPLOADS", svc._LRU(4))
    data = image_bytes(gradient_image(), "PNG")
    first = svc.decoded_upload(data, "a.png")
    assert svc.decoded_upload(data, "a.png") is first and calls == ["a.png"]
    assert svc._DIGESTS.get(id(first))[1] == svc.image_digest(first)
    other = svc.decoded_upload(image_bytes(gradient_image().rotate(90), "PNG"), "a.png")
    assert other is not first and calls == ["a.png", "a.png"]
    assert svc.image_digest(other) != svc.image_digest(first)
    for _ in range(2):  # a refused upload is not kept: each rerun says why again
        with pytest.raises(InvalidImageError):
            svc.decoded_upload(b"not an image", "b.png")
    assert calls == ["a.png", "a.png", "b.png", "b.png"]


def test_image_digest_follows_the_pixels_not_the_object():
    a, b = gradient_image(), gradient_image()
    assert a is not b and svc.image_digest(a) == svc.image_digest(b)
    changed = gradient_image()
    changed.putpixel((0, 0), (1, 2, 3))
    assert svc.image_digest(changed) != svc.image_digest(a)
    assert svc.image_digest(a.convert("L")) != svc.image_digest(a)
    assert svc.image_digest(a.resize((20, 12))) != svc.image_digest(a)


def short_error(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message.strip() and len(message) < 300 and "Traceback" not in message
    return message


def test_read_upload_refuses_a_text_file():
    with pytest.raises(InvalidImageError) as exc:
        svc.read_upload(b"remember the milk\n", "notes.txt")
    assert "notes.txt" in short_error(exc)


def test_read_upload_refuses_bytes_that_are_not_an_image():
    with pytest.raises(InvalidImageError) as exc:
        svc.read_upload(b"\x89PNG but not really" * 20, "x.png")
    short_error(exc)


def test_read_upload_errors_name_the_uploaded_file(monkeypatch):
    with pytest.raises(InvalidImageError) as exc:
        svc.read_upload(b"\x89PNG but not really" * 20, "holiday.png")
    assert "holiday.png" in str(exc.value) and "<bytes>" not in str(exc.value)
    monkeypatch.setattr(svc, "MAX_UPLOAD_PIXELS", 100)
    with pytest.raises(ImageTooLargeError) as exc:
        svc.read_upload(image_bytes(gradient_image(), "PNG"), "big.png")
    assert "big.png" in str(exc.value)


def test_read_upload_refuses_an_empty_file():
    with pytest.raises(InvalidImageError) as exc:
        svc.read_upload(b"", "empty.png")
    assert "empty" in short_error(exc)


def test_read_upload_refuses_a_file_over_the_byte_limit(monkeypatch):
    data = image_bytes(gradient_image(), "PNG")
    monkeypatch.setattr(svc, "MAX_UPLOAD_BYTES", len(data) - 1)
    with pytest.raises(InvalidImageError) as exc:
        svc.read_upload(data, "large.png")
    assert "large.png" in short_error(exc) and "limit" in str(exc.value)
    monkeypatch.setattr(svc, "MAX_UPLOAD_BYTES", len(data))
    assert svc.read_upload(data, "large.png").size == (40, 24)


def test_read_upload_refuses_too_many_pixels(monkeypatch):
    data = image_bytes(gradient_image(40, 24), "PNG")
    monkeypatch.setattr(svc, "MAX_UPLOAD_PIXELS", 40 * 24 - 1)
    with pytest.raises(ImageTooLargeError) as exc:
        svc.read_upload(data, "huge.png")
    short_error(exc)
    monkeypatch.setattr(svc, "MAX_UPLOAD_PIXELS", 40 * 24)
    assert svc.read_upload(data, "huge.png").size == (40, 24)


# ---------------------------------------------------------------------------------------------
# image_digest


def test_image_digest_follows_the_pixels():
    a, b = gradient_image(), gradient_image()
    b.info["name"] = "something else"
    assert a is not b and svc.image_digest(a) == svc.image_digest(b)
    pixels = np.array(a)
    pixels[3, 5, 1] ^= 1
    assert svc.image_digest(Image.fromarray(pixels)) != svc.image_digest(a)
    blank = np.zeros((2, 3, 3), np.uint8)
    assert svc.image_digest(Image.fromarray(blank)) != svc.image_digest(
        Image.fromarray(blank.reshape(3, 2, 3))
    )


# ---------------------------------------------------------------------------------------------
# forms


UNSAFE = ["/etc/passwd", "../secret", "sub/dir", "C:evil", "http://x", "a;b", "$(id)", "~"]


@pytest.mark.parametrize(
    "method, name", [("lime", "hide"), ("lime", "segments"), ("integrated_gradients", "baseline")]
)
@pytest.mark.parametrize("text", UNSAFE)
def test_clean_params_refuses_paths(method, name, text):
    with pytest.raises(InvalidParameterError) as exc:
        svc.clean_params(get_method(method), {name: text})
    assert name in str(exc.value)


@pytest.mark.parametrize(
    "method, name", [("lime", "hide"), ("lime", "segments"), ("integrated_gradients", "baseline")]
)
def test_clean_params_refuses_the_name_of_an_existing_file(tmp_path, monkeypatch, method, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "baseline.npy").write_bytes(b"\x93NUMPY")
    (tmp_path / "mean").write_text("not a keyword")
    for text in ("baseline.npy", "mean", " baseline.npy "):
        with pytest.raises(InvalidParameterError):
            svc.clean_params(get_method(method), {name: text})
    word = "grid" if name == "segments" else "blur"  # a word the parameter takes
    assert svc.clean_params(get_method(method), {name: word}) == {name: word}


def test_clean_params_refuses_long_text_with_its_own_error():
    with pytest.raises(InvalidParameterError):
        svc.clean_params(get_method("lime"), {"hide": "9" * 300})


def test_clean_params_accepts_defaults_and_choices_whatever_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for name in ("slic", "logit"):
        (tmp_path / name).write_text("")
    lime = get_method("lime")
    assert svc.clean_params(lime, {"segments": "slic", "score": "probability"}) == {}
    assert svc.clean_params(lime, {"score": "logit"}) == {"score": "logit"}


@pytest.mark.parametrize(
    "method, values, expected",
    [
        ("lime", {"segments": "slic", "hide": "mean"}, {"hide": "mean"}),
        ("lime", {"hide": "blur", "n_samples": 64}, {"hide": "blur", "n_samples": 64}),
        ("lime", {"hide": " 0.5 ", "compactness": 3.5}, {"hide": 0.5, "compactness": 3.5}),
        ("lime", {"segments": "quickshift"}, {"segments": "quickshift"}),
        (
            "integrated_gradients",
            {"baseline": "blur", "n_steps": 8},
            {"baseline": "blur", "n_steps": 8},
        ),
        (
            "occlusion",
            {"window": "56", "stride": "28,28"},
            {"window": (56, 56), "stride": (28, 28)},
        ),
        ("gradcam", {"relu": False}, {"relu": False}),
        ("rise", {"p_keep": 0.25, "score": "logit"}, {"p_keep": 0.25, "score": "logit"}),
    ],
)
def test_clean_params_accepts_keywords_and_numbers(method, values, expected):
    assert svc.clean_params(get_method(method), values) == expected


@pytest.mark.parametrize("info", seethrough.list_methods(), ids=lambda m: m.name)
def test_clean_params_keeps_only_changed_values(info):
    form = {f.name: f.default for f in svc.param_fields(info)}
    assert svc.clean_params(info, form) == {}
    text = {f.name: str(f.default) for f in svc.param_fields(info) if f.kind == "text"}
    assert svc.clean_params(info, text) == {}


@pytest.mark.parametrize(
    "method, values",
    [
        ("lime", {"n_samples": 0}),
        ("lime", {"n_samples": -5}),
        ("lime", {"n_samples": 2.5}),
        ("lime", {"n_samples": "many"}),
        ("lime", {"compactness": -1.0}),
        ("lime", {"score": "softmax"}),
        ("rise", {"p_keep": 1.5}),
        ("attention_rollout", {"discard_ratio": 1.0}),
        ("integrated_gradients", {"n_steps": 0}),
    ],
)
def test_clean_params_refuses_out_of_range(method, values):
    with pytest.raises(InvalidParameterError) as exc:
        svc.clean_params(get_method(method), values)
    assert next(iter(values)) in str(exc.value)


@pytest.mark.parametrize("info", seethrough.list_methods(), ids=lambda m: m.name)
def test_param_fields_match_the_registry(info):
    fields = svc.param_fields(info)
    assert [f.name for f in fields] == [p.name for p in info.params]
    for f, p in zip(fields, info.params, strict=True):
        assert f.param is p and p.help.strip(), f"{info.name}.{p.name} has no help"
        if p.type is bool:
            assert f.kind == "checkbox"
        elif p.choices is not None:
            assert f.kind == "select" and p.default in p.choices
        elif p.type is int:
            assert f.kind == "int" and isinstance(f.default, int)
        elif p.type is float:
            assert f.kind == "float" and isinstance(f.default, (int, float))
        else:
            assert f.kind == "text" and isinstance(f.default, (str, int, float))


def test_methods_by_family_covers_the_registry():
    groups = svc.methods_by_family()
    assert list(groups) == seethrough.registry.families()
    names = [m.name for infos in groups.values() for m in infos]
    assert names == [m.name for m in seethrough.list_methods()]
    assert groups["cam"][1].name == "gradcam"  # the compare view's default (index=1)


# ---------------------------------------------------------------------------------------------
# ModelPool


def counting_load(monkeypatch, delay: float = 0.0) -> list[svc.ModelSpec]:
    calls: list[svc.ModelSpec] = []
    guard = threading.Lock()

    def load(self: svc.ModelSpec) -> seethrough.VisionModel:
        with guard:
            calls.append(self)
        time.sleep(delay)
        return tiny_vm()

    monkeypatch.setattr(svc.ModelSpec, "load", load)
    return calls


def test_model_pool_loads_a_spec_once_for_concurrent_sessions(monkeypatch):
    calls = counting_load(monkeypatch, delay=0.3)
    pool = svc.ModelPool(size=4)
    barrier = threading.Barrier(4)
    slots: list[svc.ModelSlot] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            barrier.wait(timeout=10)
            slots.append(pool.get(SPEC))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(calls) == 1 and len(slots) == 4
    assert all(s is slots[0] for s in slots) and len(pool) == 1
    assert pool.get(svc.ModelSpec(name="tiny-test-model", weights="none")) is slots[0]
    assert len(calls) == 1


def test_model_pool_evicts_the_least_recently_used(monkeypatch):
    calls = counting_load(monkeypatch)
    pool = svc.ModelPool(size=2)
    a, b, c = (svc.ModelSpec(name=n, weights="none") for n in ("a", "b", "c"))
    slot_a = pool.get(a)
    pool.get(b)
    assert pool.get(a) is slot_a  # a is now the most recent
    pool.get(c)  # evicts b
    assert len(pool) == 2 and [s.name for s in calls] == ["a", "b", "c"]
    assert pool.get(a) is slot_a and pool.get(c) is pool.get(c)
    assert len(calls) == 3
    pool.get(b)  # reloaded, evicts a
    assert [s.name for s in calls] == ["a", "b", "c", "b"]
    assert pool.get(a) is not slot_a and len(calls) == 5


def test_model_pool_does_not_keep_a_failed_load(monkeypatch):
    attempts = []

    def load(self):
        attempts.append(self)
        if len(attempts) == 1:
            raise WeightsUnavailableError("no network")
        return tiny_vm()

    monkeypatch.setattr(svc.ModelSpec, "load", load)
    pool = svc.ModelPool()
    with pytest.raises(WeightsUnavailableError):
        pool.get(SPEC)
    assert len(pool) == 0
    assert isinstance(pool.get(SPEC).model, seethrough.VisionModel) and len(attempts) == 2


def test_model_spec_title():
    assert svc.ModelSpec().title() == "efficientnet_lite0"
    assert svc.ModelSpec("resnet18", weights="none").title() == "resnet18 (random weights)"
    own = svc.ModelSpec("/tmp/uploads/abc.safetensors", arch="squeezenet1_1")
    assert own.title() == "squeezenet1_1 (abc.safetensors)"
    assert svc.ModelSpec("/tmp/uploads/m.ts").title() == "m.ts"


# ---------------------------------------------------------------------------------------------
# run_method


def test_run_method_goes_through_the_cache(slot, photo):
    cache = svc.ResultCache()
    first = svc.run_method(slot, photo, "gradcam", cache=cache)
    assert isinstance(first, seethrough.Explanation) and first.method == "gradcam"
    assert np.isfinite(first.map).all() and cache.hits == 0 and len(cache) == 1
    again = svc.run_method(slot, photo.copy(), "gradcam", cache=cache)
    assert again is first and cache.hits == 1

    changed = np.array(photo)
    changed[0, 0] = 255 - changed[0, 0]
    others = [
        svc.run_method(slot, photo, "gradcam", params={"relu": False}, cache=cache),
        svc.run_method(slot, photo, "gradcam", target=2, cache=cache),
        svc.run_method(slot, photo, "gradcam", layer="0", cache=cache),
        svc.run_method(slot, Image.fromarray(changed), "gradcam", cache=cache),
        svc.run_method(slot, photo, "cam", cache=cache),
        # the same spec loaded again (after eviction, say) is another model: no stale result
        svc.run_method(svc.ModelSlot(slot.model), photo, "gradcam", cache=cache),
    ]
    assert cache.hits == 1 and len(cache) == 7
    assert all(o is not first for o in others) and len({id(o) for o in others}) == len(others)
    assert others[0].params["relu"] is False and others[1].target == 2
    assert others[2].layer == "0"
    assert svc.run_method(slot, photo, "gradcam", target=2, cache=cache) is others[1]
    assert cache.hits == 2


def test_run_method_without_a_cache(slot, photo):
    a = svc.run_method(slot, photo, "gradcam", cache=None)
    b = svc.run_method(slot, photo, "gradcam", cache=None)
    assert a is not b and np.allclose(a.map, b.map)


def test_run_method_holds_the_slot_lock(slot, photo):
    seen: list[tuple[int, int, bool]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total, slot.lock.locked()))

    e = svc.run_method(
        slot,
        photo,
        "occlusion",
        params={"window": "8", "stride": "8", "batch_size": 4},
        progress=progress,
        cache=svc.ResultCache(),
    )
    assert e.method == "occlusion" and np.isfinite(e.map).all()
    assert len(seen) >= 2 and all(locked for *_, locked in seen)
    assert seen[-1][0] == seen[-1][1]
    assert not slot.lock.locked()


def test_run_method_waits_for_a_busy_slot(slot, photo):
    cache = svc.ResultCache()
    done = threading.Event()

    def run() -> None:
        svc.run_method(slot, photo, "gradcam", cache=cache)
        done.set()

    with slot.lock:
        worker = threading.Thread(target=run)
        worker.start()
        assert not done.wait(0.3)
    worker.join(timeout=30)
    assert done.is_set() and len(cache) == 1


def state_of(module: nn.Module):
    return (
        {n: m.training for n, m in module.named_modules()},
        {n: p.requires_grad for n, p in module.named_parameters()},
    )


class Interrupt(BaseException):
    """What Streamlit raises inside a running script when the user clicks Cancel (a rerun)."""


@pytest.mark.parametrize("how", ["returns False", "raises"])
@pytest.mark.parametrize(
    "method, params",
    [
        ("occlusion", {"window": "8", "stride": "8", "batch_size": 2}),
        ("feature_inversion", {"n_steps": 5}),
        ("integrated_gradients", {"n_steps": 8, "batch_size": 2}),
    ],
)
def test_cancel_from_progress_leaves_nothing_behind(slot, photo, method, params, how):
    module = slot.model.module
    module[2].train()  # a mixed state that no run may change
    module[0].weight.requires_grad_(False)
    before = state_of(module)
    cache = svc.ResultCache()
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> bool:
        calls.append((done, total))
        if how == "raises":
            raise Interrupt
        return False

    with pytest.raises(CancelledError if how == "returns False" else Interrupt):
        svc.run_method(slot, photo, method, params=params, progress=progress, cache=cache)
    assert len(calls) == 1 and calls[0][0] < calls[0][1]
    assert not slot.lock.locked()
    assert hook_count(module) == 0
    assert state_of(module) == before
    assert len(cache) == 0 and cache.hits == 0
    e = svc.run_method(slot, photo, method, params=params, cache=cache)
    assert e.method == method and cache.hits == 0 and len(cache) == 1
    assert hook_count(module) == 0 and state_of(module) == before


# ---------------------------------------------------------------------------------------------
# pictures and downloads


def test_downloads(slot, photo):
    e = svc.run_method(slot, photo, "gradcam", cache=None)
    files = svc.downloads(e, e.method)
    assert list(files) == ["png", "npz", "json"]
    assert all(isinstance(v, bytes) and v for v in files.values())
    with np.load(io.BytesIO(files["npz"])) as data:
        assert "map" in data.files and np.allclose(data["map"], e.map)
    manifest = json.loads(files["json"])
    assert manifest["method"] == "gradcam" and manifest["target"] == e.target
    png = Image.open(io.BytesIO(files["png"]))
    assert png.format == "PNG" and png.size == (32, 32)
    assert list(svc.downloads(e)) == ["png", "npz", "json"]


def test_predict_holds_the_lock_and_is_kept_per_model_image_and_k(slot, photo, monkeypatch):
    monkeypatch.setattr(svc, "_PREDICTED", svc._LRU(8))
    calls: list[bool] = []
    real = slot.model.predict

    def predict(*args, **kwargs):
        calls.append(slot.lock.locked())
        return real(*args, **kwargs)

    monkeypatch.setattr(slot.model, "predict", predict)
    first = svc.predict(slot, photo, 3)
    assert calls == [True] and len(first.predictions) == 3
    assert first.predictions == real(photo, k=3)
    assert first.chart.ndim == 3 and first.seen.shape == (32, 32, 3)
    assert svc.predict(slot, photo.copy(), 3) is first and calls == [True]
    assert len(svc.predict(slot, photo, 2).predictions) == 2 and len(calls) == 2
    assert svc.predict(svc.ModelSlot(slot.model), photo, 3) is not first and len(calls) == 3


def test_result_views_render_and_extra_views(slot, photo):
    e = svc.run_method(slot, photo, "gradcam", cache=None)
    ((picture, caption),) = svc.result_views(e)
    assert picture.ndim == 3 and picture.shape[2] in (3, 4) and picture.dtype == np.uint8
    assert caption == "map" and svc.extra_views(e) == []
    shown = svc.render(e)
    assert svc.render(e) is shown and list(shown.files) == ["png", "npz", "json"]
    assert np.array_equal(shown.views[0][0], picture)
    twin = svc.run_method(slot, photo, "gradcam", cache=None)  # equal values, another object
    assert svc.render(twin) is not shown
    lime = svc.run_method(
        slot, photo, "lime", params={"n_samples": 30, "segments": "grid"}, cache=None
    )
    captions = [c for _, c in svc.result_views(lime)]
    assert captions[0] == "map" and len(captions) == 4
    assert "top 5 superpixels" in captions[1] and "top 5 on the image" in captions[2]
    assert "toward the class" in captions[3]
    runs = {  # (DFF's concepts are a table of text: test_concept_rows_...)
        "feature_maps": ({"top_k": 4}, "channels"),
        "feature_inversion": ({"n_steps": 3}, "loss"),
    }
    for method, (params, word) in runs.items():
        views = svc.extra_views(svc.run_method(slot, photo, method, params=params, cache=None))
        assert len(views) == 1, method
        ((view, caption),) = views
        assert view.ndim == 3 and view.dtype == np.uint8 and word in caption


# ---------------------------------------------------------------------------------------------
# store_upload


def test_store_upload_names_files_by_content(tmp_path):
    a = svc.store_upload(b"weights one", "model.safetensors", tmp_path)
    assert a.parent == tmp_path and a.suffix == ".safetensors" and a.read_bytes() == b"weights one"
    assert svc.store_upload(b"weights one", "other-name.safetensors", tmp_path) == a
    b = svc.store_upload(b"weights two", "model.safetensors", tmp_path)
    assert b != a and b.read_bytes() == b"weights two"
    assert svc.store_upload(b"weights one", "MODEL.PT", tmp_path).suffix == ".pt"
    assert "model" not in a.name  # the user's file name never reaches the file system


def test_store_upload_keeps_only_the_latest_files(tmp_path):
    import os

    paths = []
    for i in range(svc.KEEP_UPLOADED_WEIGHTS + 3):
        paths.append(svc.store_upload(f"weights {i}".encode(), "w.safetensors", tmp_path))
        os.utime(paths[-1], (1000 + i, 1000 + i))  # distinct, increasing times of use
    again = svc.store_upload(b"weights 0", "w.safetensors", tmp_path)  # used again: kept, newest
    kept = sorted(tmp_path.iterdir())
    assert len(kept) == svc.KEEP_UPLOADED_WEIGHTS and again in kept
    assert set(kept) == {again, *paths[-(svc.KEEP_UPLOADED_WEIGHTS - 1) :]}
    assert again.read_bytes() == b"weights 0" and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("name", ["model.exe", "model.py", "model", "model.pkl", "weights.txt"])
def test_store_upload_refuses_unknown_suffixes(tmp_path, name):
    with pytest.raises(InvalidParameterError) as exc:
        svc.store_upload(b"data", name, tmp_path)
    assert name in str(exc.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "framework, name",
    [
        ("PyTorch", "model.safetensors"),
        ("PyTorch", "model.pth"),
        ("Keras", "model.keras"),
        ("Keras", "model.h5"),
        ("Keras", "emotion_model.HDF5"),
        ("ONNX", "model.onnx"),
    ],
)
def test_store_upload_takes_each_frameworks_files(tmp_path, framework, name):
    path = svc.store_upload(b"model bytes", name, tmp_path, framework=framework)
    assert path.parent == tmp_path and path.read_bytes() == b"model bytes"
    assert path.suffix == Path(name).suffix.lower() and path.stem != Path(name).stem
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.parametrize(
    "framework, name, says",
    [
        ("PyTorch", "model.onnx", "choose ONNX as the framework"),
        ("PyTorch", "model.keras", "choose Keras as the framework"),
        ("Keras", "model.pt", "choose PyTorch as the framework"),
        ("Keras", "model.onnx", "a Keras model file must be one of .keras, .h5, .hdf5"),
        ("Keras", "saved_model.pb", "SavedModel is not taken here"),
        ("Keras", "model.py", "a Keras model file must be one of .keras, .h5, .hdf5"),
        ("ONNX", "model.keras", "an ONNX model file must be one of .onnx (choose Keras"),
        ("ONNX", "weights.data", "an ONNX model file must be one of .onnx"),
        ("ONNX", "model.pb", "SavedModel is not taken here"),
    ],
)
def test_store_upload_refuses_another_frameworks_files_in_one_line(tmp_path, framework, name, says):
    with pytest.raises(InvalidParameterError) as exc:
        svc.store_upload(b"data", name, tmp_path, framework=framework)
    assert short_error(exc).startswith(f"{name}: ") and says in str(exc.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("framework", svc.FRAMEWORKS)
def test_store_upload_refuses_torchscript_whatever_the_framework(tmp_path, framework, monkeypatch):
    from seethrough.errors import UnsafeModelError

    monkeypatch.delenv(svc.TORCHSCRIPT_ENV, raising=False)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(tiny_module()), buf)
    name = "model" + "." + svc.MODEL_FILE_TYPES[framework][0]
    with pytest.raises(UnsafeModelError, match="TorchScript file, which is a program"):
        svc.store_upload(buf.getvalue(), name, tmp_path, framework=framework)
    assert not any(tmp_path.iterdir())
    with pytest.raises(InvalidParameterError, match="unknown framework 'TensorFlow'"):
        svc.store_upload(b"data", "model.pb", tmp_path, framework="TensorFlow")


def test_missing_extra_names_the_pip_command_and_imports_nothing(monkeypatch):
    import importlib.util

    assert svc.missing_extra("PyTorch") is None
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **kw: None if name in ("keras", "onnxruntime") else real(name, *a, **kw),
    )
    assert (
        svc.missing_extra("Keras") == "a Keras model needs keras: pip install 'seethrough[keras]'"
    )
    assert svc.missing_extra("ONNX") == (
        "an ONNX model needs onnxruntime: pip install 'seethrough[onnx]'"
    )
    with pytest.raises(InvalidParameterError, match="use one of PyTorch, Keras, ONNX"):
        svc.missing_extra("TensorFlow")


def test_store_upload_refuses_empty_data(tmp_path):
    with pytest.raises(InvalidParameterError) as exc:
        svc.store_upload(b"", "model.pt", tmp_path)
    assert "empty" in str(exc.value) and not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# no streamlit in the library; the command line


def test_the_library_never_imports_streamlit_keras_or_onnx():
    code = (
        "import sys\n"
        "import seethrough, seethrough.cli.main, seethrough.evaluation, seethrough.metrics\n"
        "import seethrough.dashboard, seethrough.dashboard.service\n"
        "seethrough.dashboard.command()\n"
        "from seethrough.dashboard.service import FRAMEWORKS, missing_extra\n"
        "[missing_extra(f) for f in FRAMEWORKS]\n"
        "roots = ('streamlit', 'keras', 'onnx', 'onnxruntime', 'tensorflow')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_command():
    cmd = dashboard.command("127.0.0.2", 8765)
    assert cmd[0] == sys.executable and str(dashboard.APP_PATH) in cmd
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.2"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert dashboard.APP_PATH.is_file() and dashboard.APP_PATH.name == "app.py"
    default = dashboard.command()
    assert default[default.index("--server.address") + 1] == "127.0.0.1"


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_command_refuses_bad_ports(port):
    with pytest.raises(InvalidParameterError) as exc:
        dashboard.command("127.0.0.1", port)
    assert str(port) in str(exc.value)


def test_launch_without_streamlit(monkeypatch):
    real = dashboard.importlib.util.find_spec
    monkeypatch.setattr(
        dashboard.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "streamlit" else real(name, *a),
    )
    monkeypatch.setattr(dashboard.subprocess, "call", lambda *a, **k: pytest.fail("started"))
    with pytest.raises(dashboard.DashboardUnavailableError) as exc:
        dashboard.launch()
    assert "pip install" in str(exc.value)


@pytest.fixture
def launches(monkeypatch) -> list[tuple[str, int]]:
    calls: list[tuple[str, int]] = []

    def launch(host: str = "127.0.0.1", port: int = 8501, **options) -> int:
        calls.append((host, port))
        return 0

    monkeypatch.setattr(dashboard, "launch", launch)
    monkeypatch.setattr(dashboard, "check_port", lambda host, port: dashboard.command(host, port))
    return calls


@pytest.mark.parametrize("port", ["70000", "0"])
def test_cli_dashboard_bad_port_is_one_line(capsys, launches, port):
    code, out, err = cli(capsys, "dashboard", "--port", port)
    assert code != 0 and not launches
    assert port in one_error_line(err)
    assert "Traceback" not in out


def test_cli_dashboard_warns_about_a_public_host(capsys, launches):
    code, out, err = cli(capsys, "dashboard", "--host", "0.0.0.0", "--port", "8600")
    assert code == 0, err
    assert launches == [("0.0.0.0", 8600)]
    assert "warning" in err and "0.0.0.0" in err
    assert "http://0.0.0.0:8600" in out


def test_cli_dashboard_loopback_by_default(capsys, launches):
    code, out, err = cli(capsys, "dashboard")
    assert code == 0 and launches == [("127.0.0.1", 8501)]
    assert "warning" not in err and "http://127.0.0.1:8501" in out


def test_cli_dashboard_passes_the_server_exit_code(capsys, monkeypatch):
    monkeypatch.setattr(dashboard, "launch", lambda host, port, **options: 3)
    code, _, _ = cli(capsys, "dashboard", "--port", "8765")
    assert code == 3


# ---------------------------------------------------------------------------------------------
# what the page says of a model and of DFF's concepts


def test_layer_default_names_the_layer_or_says_why_there_is_none(photo):
    preferred = tiny_vm()
    preferred.default_layer = "2"
    assert svc.layer_default(svc.ModelSlot(preferred)) == svc.LayerDefault("2", "default layer 2")

    found = svc.layer_default(svc.ModelSlot(tiny_vm()))  # what the methods would pick
    assert found.name == "3" and found.note == "default layer 3 (the last spatial one)"
    e = svc.run_method(svc.ModelSlot(tiny_vm()), photo, "gradcam", cache=None)
    assert e.layer == found.name

    scripted = tiny_vm()
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, still supported
        warnings.simplefilter("ignore", FutureWarning)
        scripted.module = torch.jit.script(scripted.module)
    none = svc.layer_default(svc.ModelSlot(scripted))
    assert none.name is None and none.note.startswith("no default layer: a TorchScript file")
    assert "None" not in none.note

    flat = seethrough.VisionModel(
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).eval(),
        seethrough.Preprocessing(size=32),
        ["a", "b", "c"],
        name="flat",
        source="file",
        weights="none (random)",
    )
    slot = svc.ModelSlot(flat)
    none = svc.layer_default(slot)
    assert none.name is None and none.note.startswith("no default layer (")
    assert "spatial" in none.note and none.note.endswith("type one under Explain")
    assert svc.layer_default(slot) is none  # found once per loaded model


# ---------------------------------------------------------------------------------------------
# Keras and ONNX models through the pool, as the model panel asks for them


@needs_keras
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_an_uploaded_keras_file_loads_predicts_and_names_its_keras_layers(tmp_path, photo, suffix):
    model = tiny_keras()
    path = svc.store_upload(
        keras_bytes(model, suffix), f"mine{suffix}", tmp_path, framework="Keras"
    )
    spec = svc.ModelSpec(name=str(path), label=f"mine{suffix}")
    slot = svc.ModelPool().get(spec)
    vm = slot.model
    assert vm.framework == "keras" and vm.num_classes == 3 and spec.title() == f"mine{suffix}"
    x = vm.preprocess(photo)  # (1, 3, 32, 32): Keras computes channels-last
    with torch.no_grad():
        logits = torch.as_tensor(model(x.permute(0, 2, 3, 1).numpy())).cpu()
    expected = torch.softmax(logits, -1)[0]
    top = svc.predict(slot, photo, 3)
    assert [p.index for p in top.predictions] == expected.argsort(descending=True).tolist()
    got = [p.probability for p in top.predictions]
    np.testing.assert_allclose(got, expected.sort(descending=True).values, atol=1e-5)

    layer = svc.layer_default(slot)
    assert layer.name == "conv2" and "conv2" in layer.note  # Keras' name, as the methods pick
    e = svc.run_method(slot, photo, "gradcam", cache=None)
    assert e.layer == "conv2" and np.isfinite(e.map).all() and e.map.max() > 0
    with pytest.raises(seethrough.errors.MethodNotApplicableError) as exc:
        svc.run_method(slot, photo, "guided_backprop", cache=None)
    assert "guided backpropagation" in short_error(exc)


@needs_keras
def test_a_keras_file_with_a_lambda_layer_is_refused_in_one_line_naming_the_upload(tmp_path):
    from seethrough.errors import UnsafeModelError

    path = svc.store_upload(
        keras_bytes(tiny_keras(lambda_layer=True)), "mine.keras", tmp_path, framework="Keras"
    )
    with pytest.raises(UnsafeModelError) as exc:
        svc.ModelPool().get(svc.ModelSpec(name=str(path), label="mine.keras"))
    message = short_error(exc)
    assert "mine.keras" in message and "Lambda" in message and str(tmp_path) not in message


@needs_keras
def test_a_keras_application_loads_through_the_pool_with_its_own_preprocessing():
    assert "MobileNetV2" in svc.keras_applications() and "ResNet50" in svc.keras_applications()
    spec = svc.ModelSpec(name="keras:MobileNetV2", weights="none")
    assert spec.title() == "keras:MobileNetV2 (random weights)"
    slot = svc.MODELS.get(spec)  # the pool the page uses: its test finds this model loaded
    vm = slot.model
    assert vm.framework == "keras" and vm.num_classes == 1000 and vm.label(281) == "tabby"
    assert "Keras 'tf' mode" in vm.preprocessing.describe()
    assert svc.layer_default(slot).name == "out_relu"  # a Keras layer name
    with pytest.raises(seethrough.errors.UnknownModelError, match="MobileNetV2"):
        svc.ModelPool().get(svc.ModelSpec(name="keras:MobileNetV22", weights="none"))


@needs_onnx
def test_an_uploaded_onnx_file_predicts_and_explains_as_its_pytorch_source(tmp_path, photo):
    source = svc.ModelSlot(tiny_vm())
    path = svc.store_upload(onnx_bytes(tiny_module()), "tiny.onnx", tmp_path, framework="ONNX")
    slot = svc.ModelPool().get(svc.ModelSpec(name=str(path), label="tiny.onnx"))
    vm = slot.model
    assert vm.framework == "onnx" and vm.num_classes == 3
    torch.testing.assert_close(vm.preprocess(photo), source.model.preprocess(photo))
    got = svc.predict(slot, photo, 3).predictions
    want = svc.predict(source, photo, 3).predictions
    assert [p.index for p in got] == [p.index for p in want]
    np.testing.assert_allclose(
        [p.probability for p in got], [p.probability for p in want], atol=1e-5
    )

    params = {"window": 8, "stride": 4}
    onnx_map = svc.run_method(slot, photo, "occlusion", params=params, cache=None).map
    torch_map = svc.run_method(source, photo, "occlusion", params=params, cache=None).map
    assert np.abs(torch_map).max() > 0
    np.testing.assert_allclose(onnx_map, torch_map, atol=1e-5 * np.abs(torch_map).max() + 1e-7)

    layer = svc.layer_default(slot)  # an ONNX tensor name: the output of the last ReLU
    assert layer.name is not None and "Relu" in layer.name and layer.name in layer.note
    e = svc.run_method(slot, photo, "gradcam", cache=None)  # through the conversion to torch
    assert e.layer == layer.name
    expected = svc.run_method(source, photo, "gradcam", layer="3", cache=None).map
    np.testing.assert_allclose(e.map, expected, atol=1e-4)


@needs_onnx
def test_an_onnx_upload_with_external_data_says_one_file_is_taken(tmp_path):
    import onnx

    model = onnx.load_from_string(onnx_bytes(tiny_module()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save_model(
            model,
            tmp_path / "split.onnx",
            save_as_external_data=True,
            location="split.data",
            size_threshold=0,
        )
    uploads = tmp_path / "uploads"
    data = (tmp_path / "split.onnx").read_bytes()
    path = svc.store_upload(data, "split.onnx", uploads, framework="ONNX")
    with pytest.raises(InvalidParameterError) as exc:
        svc.ModelPool().get(svc.ModelSpec(name=str(path), label="split.onnx"))
    message = short_error(exc)
    assert "split.onnx" in message and "its external data cannot be" in message
    assert str(uploads) not in message


def test_predict_titles_the_chart_with_the_name_the_page_gives(slot, photo, chart_titles):
    titles = chart_titles
    first = svc.predict(slot, photo, 3)
    named = svc.predict(slot, photo, 3, name="my model.ts")
    assert titles == ["top-3: tiny", "top-3: my model.ts"]
    assert named is not first and named.predictions == first.predictions
    assert svc.predict(slot, photo, 3, name="my model.ts") is named and len(titles) == 2


def test_concept_rows_list_each_concept_as_text(slot, photo):
    from matplotlib.colors import to_hex

    from seethrough.viz import concept_colors

    e = svc.run_method(slot, photo, "dff", params={"n_concepts": 2, "n_iter": 10}, cache=None)
    rows = svc.concept_rows(e)
    labels, scores = e.extras["concept_labels"], e.extras["concept_scores"]
    assert [r["concept"] for r in rows] == [1, 2]
    assert [r["colour"] for r in rows] == [to_hex(c) for c in concept_colors(2)]
    for row, names, values in zip(rows, labels, scores, strict=True):
        assert row["top classes"] == ", ".join(
            f"{n} {s:.2f}" for n, s in zip(names, values, strict=True)
        )
    assert svc.extra_views(e) == []  # no picture of small text any more
    views = svc.result_views(e)  # the map and the concepts in colour, no legend drawn in them
    assert [c for _, c in views] == ["map", "concepts"]
    assert svc.concept_rows(svc.run_method(slot, photo, "gradcam", cache=None)) == []
    assert svc.ink_on("#ffffff") == "black" and svc.ink_on("#1f77b4") == "white"


def test_methods_are_offered_for_the_models_they_explain():
    names = {
        task: {m.name for ms in svc.methods_by_family(task).values() for m in ms}
        for task in ("classification", "detection", "segmentation")
    }
    assert "drise" in names["detection"]
    assert "drise" not in names["classification"] | names["segmentation"]
    assert {"gradcam", "lime", "saliency"} <= names["classification"] & names["segmentation"]
    every = {m.name for ms in svc.methods_by_family().values() for m in ms}
    assert every == {m.name for m in seethrough.list_methods()}
