"""The dashboard page through Streamlit's AppTest: every widget path, and never a traceback.

Each test drives the real page script (``seethrough.dashboard.APP_PATH``) in this process. The
model pool is a module global of :mod:`seethrough.dashboard.service`, so the bundled
EfficientNet-Lite0 is loaded once per process and stays warm across AppTests.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seethrough
from seethrough.dashboard import APP_PATH
from seethrough.dashboard import service as svc
from seethrough.images import sample_image
from tests.test_dashboard_service import (
    keras_bytes,
    needs_keras,
    needs_onnx,
    onnx_bytes,
    tiny_keras,
    tiny_module,
)

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

pytestmark = pytest.mark.slow

OTHER_CLASS = "another class..."
METHODS = [m.name for m in seethrough.list_methods() if "classification" in m.tasks]

# Cheap settings for the slow methods, typed into their own widgets ("layer" is the page's
# layer field: Score-CAM runs one forward pass per channel, and blocks.1 has 24 of them).
CHEAP: dict[str, dict[str, object]] = {
    "scorecam": {"layer": "blocks.1"},
    "lime": {"n_samples": 48, "n_segments": 20},
    "kernelshap": {"n_samples": 48, "n_segments": 20},
    "occlusion": {"window": "56", "stride": "56"},
    "rise": {"n_samples": 48},
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 4},
    "gradient_shap": {"n_samples": 8},
    "dff": {"n_iter": 20},
    "feature_inversion": {"n_steps": 3},
    "sscam": {"layer": "blocks.1", "n_samples": 1},
    "iscam": {"layer": "blocks.1", "n_samples": 1},
    "ablationcam": {"layer": "blocks.1"},
    "smoothgradcam++": {"n_samples": 2},
    "shapley_sampling": {"n_samples": 2, "n_segments": 20},
    "feature_ablation": {"n_segments": 20},
    "dax": {"n_samples": 48, "steps": 10, "n_segments": 20},
    "deeplift_shap": {"n_samples": 4},
    "noise_tunnel": {"n_samples": 4},
}


# ---------------------------------------------------------------------------------------------
# helpers


def new_app() -> AppTest:
    at = AppTest.from_file(str(APP_PATH), default_timeout=180)
    at.run()
    no_exception(at)
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def sidebar_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.sidebar.error]


def captions(at: AppTest) -> list[str]:
    return [c for image in at.image for c in image.captions]


def applied(at: AppTest) -> str:
    """The applied preprocessing shown in the sidebar."""
    codes = [c.value for c in at.sidebar.code]
    assert len(codes) == 1, codes
    return codes[0]


def results(at: AppTest, key: str = "results") -> list[tuple[str, seethrough.Explanation | str]]:
    assert key in at.session_state, f"no {key} in the session"
    return at.session_state[key]


def explanation(at: AppTest, index: int = 0) -> seethrough.Explanation:
    title, e = results(at)[index]
    assert isinstance(e, seethrough.Explanation), (title, e)
    return e


def table_rows(at: AppTest) -> int:
    assert len(at.dataframe) == 1
    return len(at.dataframe[0].value)


def only_methods(at: AppTest, names: list[str]) -> None:
    """Select exactly ``names`` in the family multiselects."""
    for family in seethrough.registry.families():
        chosen = [n for n in names if seethrough.get_method(n).family == family]
        at.multiselect(key=f"methods.{family}").set_value(chosen)


def explain(at: AppTest) -> AppTest:
    at.button(key="explain").click().run()
    no_exception(at)
    return at


def upload_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def lite0_top5() -> list[seethrough.models.Prediction]:
    """What the page should predict for its default image (the pool's own model)."""
    slot = svc.MODELS.get(svc.ModelSpec())
    return slot.model.predict(sample_image("chelsea"), k=5)


# ---------------------------------------------------------------------------------------------
# the default page


def test_default_page(lite0_top5):
    at = new_app()
    assert not errors(at) and not at.warning
    assert at.selectbox(key="framework").options == list(svc.FRAMEWORKS)
    assert at.radio(key="model_source").value == "From the registry"
    assert at.selectbox(key="model_name").value == "efficientnet_lite0"
    assert at.radio(key="weights").value == "default"
    assert "cpu" in at.selectbox(key="device").options
    text = applied(at)
    assert "normalise" in text and "224x224" in text
    assert any("1000 classes" in c.value for c in at.sidebar.caption)

    assert at.radio(key="image_source").value == "Sample photo"
    assert at.selectbox(key="sample").value == "chelsea"
    assert captions(at)[:2] == ["sample:chelsea · 451x300", "what the model sees · 224x224"]
    assert at.slider(key="top_k").value == 5 and table_rows(at) == 5
    table = at.dataframe[0].value
    assert list(table["index"]) == [p.index for p in lite0_top5]

    options = at.selectbox(key="target").options
    assert options == [f"{p.label} ({p.probability:.2f})" for p in lite0_top5] + [OTHER_CLASS]
    assert at.selectbox(key="target").value == options[0]
    assert at.multiselect(key="methods.cam").value == ["gradcam"]
    for family in seethrough.registry.families():
        if family != "cam":
            assert at.multiselect(key=f"methods.{family}").value == []
    assert "results" not in at.session_state and not at.download_button

    explain(at)
    assert not errors(at)
    (title, e), *rest = results(at)
    assert not rest and title == "efficientnet_lite0"
    assert isinstance(e, seethrough.Explanation) and e.method == "gradcam"
    assert e.target == lite0_top5[0].index and e.map.shape == (224, 224)
    assert any("Grad-CAM" in c and "efficientnet_lite0" in c for c in captions(at))
    keys = [b.key for b in at.download_button]
    assert keys == ["download.explain.0.png", "download.explain.0.npz", "download.explain.0.json"]


def test_sidebar_and_explain_widgets(lite0_top5):
    at = new_app()
    at.slider(key="top_k").set_value(3).run()
    no_exception(at)
    assert table_rows(at) == 3 and len(at.selectbox(key="target").options) == 4

    at.selectbox(key="resize").set_value("crop").run()
    no_exception(at)
    assert "centre-crop 224x224" in applied(at)
    at.selectbox(key="resize").set_value("the model's").run()

    at.text_input(key="layer").input("blocks.6")
    at.checkbox(key="param.gradcam.relu").uncheck()
    explain(at)
    e = explanation(at)
    assert e.layer == "blocks.6" and e.params["relu"] is False

    at.text_input(key="layer").input("blocks.66")
    explain(at)
    ((_, message),) = results(at)
    assert isinstance(message, str) and "Grad-CAM" in message and "blocks.66" in message
    assert message in errors(at)

    at.selectbox(key="sample").set_value("coffee").run()
    no_exception(at)
    assert captions(at)[0].startswith("sample:coffee")
    assert "espresso" in at.selectbox(key="target").options[0]


def test_cancelled_run_shows_a_warning():
    at = new_app()
    at.session_state["cancelled"] = True  # what the Cancel button's callback sets
    at.run()
    no_exception(at)
    assert any("Cancelled" in w.value for w in at.warning)
    at.run()
    assert not at.warning  # shown once


def test_several_methods_side_by_side():
    at = new_app()
    only_methods(at, ["cam", "gradcam", "saliency"])
    explain(at)
    out = results(at)
    assert [e.method for _, e in out] == ["cam", "gradcam", "saliency"]
    assert len(at.download_button) == 9
    assert len({b.key for b in at.download_button}) == 9
    assert not at.get("progress")  # the progress bars are gone once the run ends


def test_predictions_hold_the_slot_lock(monkeypatch):
    slot = svc.MODELS.get(svc.ModelSpec())
    real = slot.model.predict
    held: list[bool] = []

    def predict(*args, **kwargs):
        held.append(slot.lock.locked())
        return real(*args, **kwargs)

    monkeypatch.setattr(slot.model, "predict", predict)
    monkeypatch.setattr(svc, "_PREDICTED", svc._LRU(4))  # nothing kept from earlier tests
    at = new_app()
    assert table_rows(at) == 5 and held
    assert all(held), held


# ---------------------------------------------------------------------------------------------
# every method


@pytest.fixture(scope="module")
def methods_app() -> AppTest:
    return new_app()


@pytest.mark.parametrize("method", METHODS)
def test_each_method_explains_or_says_why_not(methods_app, method):
    at = methods_app
    info = seethrough.get_method(method)
    only_methods(at, [method])
    cheap = dict(CHEAP.get(method, {}))
    at.text_input(key="layer").set_value(str(cheap.pop("layer", "")))
    at.run()
    no_exception(at)
    for name, value in cheap.items():
        at.get_by_key(f"param.{method}.{name}").set_value(value)
    explain(at)

    (title, e), *rest = results(at)
    assert not rest and title == "efficientnet_lite0"
    if info.family == "attention":  # needs a vision transformer; Lite0 is a CNN
        assert isinstance(e, str) and info.title in e, e
        assert e in errors(at)
        assert not at.download_button
        return
    assert isinstance(e, seethrough.Explanation), e
    assert e.method == method and e.map.shape == (224, 224) and np.isfinite(e.map).all()
    assert not errors(at)
    assert any(c.startswith(info.title) for c in captions(at))
    assert len(at.download_button) == 3


# ---------------------------------------------------------------------------------------------
# target


def test_target_choice(lite0_top5):
    at = new_app()
    options = at.selectbox(key="target").options
    at.selectbox(key="target").set_value(options[1])
    explain(at)
    assert explanation(at).target == lite0_top5[1].index

    at.selectbox(key="target").set_value(OTHER_CLASS).run()
    no_exception(at)
    assert any("class name" in i.value for i in at.info)
    at.text_input(key="target_text").input("tabby")
    explain(at)
    assert explanation(at).target == 281 and not errors(at)
    assert any("281" in c.value and "tabby" in c.value for c in at.caption)

    at.text_input(key="target_text").input("7")
    explain(at)
    assert explanation(at).target == 7

    at.text_input(key="target_text").input("no such class zzz").run()
    no_exception(at)
    assert any("no such class zzz" in m for m in errors(at))

    at.text_input(key="target_text").input("99999").run()
    no_exception(at)
    assert any("99999" in m for m in errors(at))


# ---------------------------------------------------------------------------------------------
# image upload


def test_upload():
    import skimage.data

    at = new_app()
    at.radio(key="image_source").set_value("Upload").run()
    no_exception(at)
    assert any("Choose an image" in i.value for i in at.info) and not at.dataframe

    data = upload_bytes(Image.fromarray(skimage.data.chelsea()))
    at.file_uploader(key="upload").set_value(("chelsea.png", data, "image/png")).run()
    no_exception(at)
    assert not errors(at) and table_rows(at) == 5
    assert captions(at)[0] == "chelsea.png · 451x300"
    explain(at)
    e = explanation(at)
    assert e.method == "gradcam" and np.isfinite(e.map).all()
    assert e.target in (281, 282, 285)  # tabby, tiger cat, Egyptian cat

    at.file_uploader(key="upload").set_value(("notes.txt", b"buy milk\n", "text/plain")).run()
    no_exception(at)
    assert any("notes.txt" in m for m in errors(at)), errors(at)
    assert not at.dataframe

    garbage = bytes(range(256)) * 4
    at.file_uploader(key="upload").set_value(("x.png", garbage, "image/png")).run()
    no_exception(at)
    assert errors(at) and not at.dataframe


# ---------------------------------------------------------------------------------------------
# model panel: preprocessing, weights


def test_bad_mean_and_std():
    at = new_app()
    at.text_input(key="mean").input("1,2").run()
    no_exception(at)
    assert any("mean" in m for m in sidebar_errors(at)), sidebar_errors(at)
    assert not at.sidebar.code and not at.dataframe  # the page waits for a model
    at.text_input(key="mean").input("").run()
    assert not errors(at)

    for bad in ("0,0,0", "a,b,c", "1,2,3,4"):
        at.text_input(key="std").input(bad).run()
        no_exception(at)
        assert any("std" in m for m in sidebar_errors(at)), (bad, sidebar_errors(at))

    at.text_input(key="std").input("0.5,0.5,0.5").run()
    at.text_input(key="mean").input("0.5, 0.5, 0.5").run()
    no_exception(at)
    assert not errors(at)
    assert "mean=(0.5, 0.5, 0.5) std=(0.5, 0.5, 0.5)" in applied(at)
    assert table_rows(at) == 5


def test_size_override():
    at = new_app()
    at.number_input(key="size").set_value(160).run()
    no_exception(at)
    assert "160x160" in applied(at)
    assert "what the model sees · 160x160" in captions(at)
    explain(at)
    assert explanation(at).map.shape == (160, 160)


def test_random_weights():
    at = new_app()
    at.selectbox(key="model_name").set_value("mobilenet_v3_small")
    at.radio(key="weights").set_value("none").run()
    no_exception(at)
    assert not errors(at) and table_rows(at) == 5
    explain(at)
    title, e = results(at)[0]
    assert title == "mobilenet_v3_small (random weights)"
    assert isinstance(e, seethrough.Explanation) and e.model == "mobilenet_v3_small"
    assert any(c.endswith("mobilenet_v3_small (random weights)") for c in captions(at))


def weights_cached(prefix: str) -> bool:
    return any((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{prefix}-*.pth"))


def test_pretrained_weights_offline():
    if weights_cached("resnet18"):
        pytest.skip("resnet18 weights are in the local torch cache")
    at = new_app()
    at.selectbox(key="model_name").set_value("resnet18").run()
    no_exception(at)
    (message,) = sidebar_errors(at)
    assert "resnet18" in message and "network" in message and "none" in message
    assert "\n" not in message and not at.dataframe


# ---------------------------------------------------------------------------------------------
# model panel: the user's own file


def own_file(at: AppTest, kind: str, name: str, data: bytes, arch: str | None = None) -> None:
    if at.radio(key="model_source").value != "My own file":
        at.radio(key="model_source").set_value("My own file").run()
    if kind != "State dict" or svc.torchscript_allowed():  # else the only kind offered
        at.radio(key="file_kind").set_value(kind).run()
    if arch is not None:
        at.selectbox(key="arch").set_value(arch)
    at.file_uploader(key="weights_file").set_value((name, data, "application/octet-stream"))
    at.run()
    no_exception(at)


def test_own_state_dict():
    from safetensors.torch import save
    from torchvision.models import squeezenet1_1

    at = new_app()
    at.radio(key="model_source").set_value("My own file").run()
    no_exception(at)
    assert any("Upload a weights file" in i.value for i in at.sidebar.info)
    assert not at.dataframe and not errors(at)

    torch.manual_seed(0)
    own_file(
        at, "State dict", "squeeze.safetensors", save(squeezenet1_1().state_dict()), "squeezenet1_1"
    )
    assert not errors(at) and table_rows(at) == 5
    assert "224x224" in applied(at)
    explain(at)
    title, e = results(at)[0]
    assert title.startswith("squeezenet1_1") and isinstance(e, seethrough.Explanation)
    assert np.isfinite(e.map).all()


def tiny_torchscript() -> bytes:
    """The service tests' tiny 3-class model, scripted."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(tiny_module()), buf)
    return buf.getvalue()


def test_own_torchscript(monkeypatch):
    monkeypatch.setenv(svc.TORCHSCRIPT_ENV, "1")  # seethrough dashboard --allow-torchscript
    at = new_app()
    own_file(at, "TorchScript", "tiny.ts", tiny_torchscript())
    assert not errors(at)
    assert any("3 classes" in c.value for c in at.sidebar.caption)
    assert table_rows(at) == 3
    explain(at)  # Grad-CAM needs hooks, which TorchScript does not allow
    ((_, message),) = results(at)
    assert isinstance(message, str) and "TorchScript" in message
    only_methods(at, ["saliency"])
    explain(at)
    e = explanation(at)
    assert e.method == "saliency" and np.isfinite(e.map).all()


def test_own_file_errors(monkeypatch):
    from torchvision.models import squeezenet1_1

    at = new_app()
    own_file(at, "State dict", "weights.txt", b"0123", "squeezenet1_1")
    (message,) = sidebar_errors(at)
    assert "weights.txt" in message and ".safetensors" in message

    torch.manual_seed(0)
    whole = io.BytesIO()
    torch.save(squeezenet1_1(), whole)
    own_file(at, "State dict", "whole.pt", whole.getvalue(), "squeezenet1_1")
    (message,) = sidebar_errors(at)
    assert "weights_only" in message and "state_dict" in message
    assert not at.dataframe

    state = io.BytesIO()
    torch.save(squeezenet1_1().state_dict(), state)
    own_file(at, "State dict", "squeeze.pt", state.getvalue(), "alexnet")
    (message,) = sidebar_errors(at)
    assert "alexnet" in message and "does not fit" in message

    monkeypatch.setenv(svc.TORCHSCRIPT_ENV, "1")  # seethrough dashboard --allow-torchscript
    at.run()
    own_file(at, "TorchScript", "junk.ts", b"not a torchscript archive")
    assert len(sidebar_errors(at)) == 1 and not at.dataframe


def test_own_file_messages_name_the_uploaded_file():
    from torchvision.models import squeezenet1_1

    at = new_app()
    whole = io.BytesIO()
    torch.save(squeezenet1_1(), whole)
    own_file(at, "State dict", "my-model.pt", whole.getvalue(), "squeezenet1_1")
    (message,) = sidebar_errors(at)
    assert "my-model.pt" in message and tempfile.gettempdir() not in message


# ---------------------------------------------------------------------------------------------
# model panel: Keras and ONNX


def choose_framework(at: AppTest, name: str) -> None:
    at.selectbox(key="framework").set_value(name).run()
    no_exception(at)


def upload_model(at: AppTest, key: str, name: str, data: bytes) -> None:
    at.file_uploader(key=key).set_value((name, data, "application/octet-stream"))
    at.run()
    no_exception(at)


@needs_keras
@needs_onnx
def test_keras_and_onnx_models_in_the_model_panel(monkeypatch):
    at = new_app()
    assert at.selectbox(key="framework").options == ["PyTorch", "Keras", "ONNX"]
    at.session_state["keras_weights"] = "none"  # offline: random weights, no download
    choose_framework(at, "Keras")
    assert at.radio(key="keras_source").value == "From keras.applications"
    assert at.selectbox(key="keras_name").value == "MobileNetV2"
    assert {"ResNet50", "EfficientNetB0"} <= set(at.selectbox(key="keras_name").options)
    assert at.radio(key="keras_weights").options == ["imagenet", "none"]
    assert not errors(at) and table_rows(at) == 5
    assert "Keras 'tf' mode" in applied(at)
    assert any(c.value == "1000 classes · default layer out_relu" for c in at.sidebar.caption)
    assert at.text_input(key="layer").placeholder == "default: out_relu"
    assert at.text_input(key="layer").help.startswith("A Keras layer name")

    at.radio(key="keras_source").set_value("My own file").run()
    no_exception(at)
    assert "Lambda layer" in at.file_uploader(key="keras_file").help
    assert any("Upload a Keras model file" in i.value for i in at.sidebar.info)
    assert any("upload its model file" in i.value for i in at.main.info) and not at.dataframe
    upload_model(at, "keras_file", "coded.keras", keras_bytes(tiny_keras(lambda_layer=True)))
    (message,) = sidebar_errors(at)
    assert "coded.keras" in message and "Lambda" in message and not at.dataframe
    upload_model(at, "keras_file", "mine.keras", keras_bytes(tiny_keras()))
    assert not errors(at) and table_rows(at) == 3
    only_methods(at, ["gradcam", "guided_backprop"])
    explain(at)
    (_, cam), (_, guided) = results(at)
    assert isinstance(cam, seethrough.Explanation) and cam.layer == "conv2"
    assert isinstance(guided, str) and guided in errors(at)
    title = seethrough.get_method("guided_backprop").title
    assert guided.startswith(f"{title}: guided backpropagation needs nn.ReLU")

    choose_framework(at, "ONNX")
    note = at.file_uploader(key="onnx_file").help
    assert "external data cannot be uploaded" in note and "onnxruntime" in note
    upload_model(at, "onnx_file", "tiny.onnx", onnx_bytes(tiny_module()))
    assert not sidebar_errors(at) and table_rows(at) == 3
    assert at.text_input(key="layer").help.startswith("An ONNX tensor name")
    only_methods(at, ["gradcam", "occlusion"])
    at.run()
    at.get_by_key("param.occlusion.window").set_value("8")
    at.get_by_key("param.occlusion.stride").set_value("8")
    explain(at)
    (_, cam), (_, occlusion) = results(at)
    assert isinstance(cam, seethrough.Explanation) and "Relu" in cam.layer
    assert isinstance(occlusion, seethrough.Explanation) and np.abs(occlusion.map).max() > 0

    import importlib.util  # a server without the extras: one line with the pip command

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **kw: None if name in ("keras", "onnx") else real(name, *a, **kw),
    )
    for framework, extra in [("Keras", "keras"), ("ONNX", "onnx")]:
        choose_framework(at, framework)
        (line,) = [w.value for w in at.sidebar.warning]
        assert line.endswith(f"pip install 'seethrough[{extra}]'")
        model_radios = [r for r in at.sidebar.radio if r.key != "view"]  # "view": the page's own
        assert not at.sidebar.file_uploader and not model_radios and not at.dataframe
        assert any(line in i.value for i in at.main.info)


# ---------------------------------------------------------------------------------------------
# compare


def compare(at: AppTest, models: list[str], weights: str) -> list:
    at.multiselect(key="compare_models").set_value(models)
    at.radio(key="compare_weights").set_value(weights)
    at.button(key="compare").click().run()
    no_exception(at)
    return results(at, "compare_results")


def test_compare_models():
    at = new_app()
    assert at.multiselect(key="compare_models").value == ["efficientnet_lite0"]
    assert at.selectbox(key="compare_method").value == "gradcam"
    out = compare(at, ["efficientnet_lite0", "squeezenet1_1"], "none")
    assert [title for title, _ in out] == ["efficientnet_lite0", "squeezenet1_1 (random weights)"]
    assert all(isinstance(e, seethrough.Explanation) and e.method == "gradcam" for _, e in out)
    assert out[0][1].model == "efficientnet_lite0" and out[1][1].model == "squeezenet1_1"
    assert not errors(at)

    if weights_cached("resnet18"):
        pytest.skip("resnet18 weights are in the local torch cache")
    out = compare(at, ["efficientnet_lite0", "resnet18"], "default")
    assert isinstance(out[0][1], seethrough.Explanation)
    title, message = out[1]
    assert title == "resnet18" and isinstance(message, str) and "network" in message
    assert errors(at) == [message]


def test_compare_follows_each_model_and_keeps_results_on_a_rerun(monkeypatch):
    """Compare hands each run a progress callback (a closed page stops it at a report, as in
    Explain), and its results are still shown after the page reruns."""
    reports: list[tuple[str, int, int]] = []
    real = svc.run_method

    def run_method(slot, image, method, **kw):
        progress = kw.pop("progress", None)
        assert progress is not None, "compare ran a method it could not follow or stop"

        def tick(done, total):
            reports.append((slot.model.name, done, total))
            return progress(done, total)

        return real(slot, image, method, progress=tick, **kw)

    monkeypatch.setattr(svc, "run_method", run_method)
    svc.RESULTS.clear()  # a cached result is served at once, without reports
    at = new_app()
    out = compare(at, ["efficientnet_lite0", "squeezenet1_1"], "none")
    assert [e.model for _, e in out] == ["efficientnet_lite0", "squeezenet1_1"]
    for name in ("efficientnet_lite0", "squeezenet1_1"):
        mine = [(d, t) for m, d, t in reports if m == name]
        assert mine and mine[-1][0] == mine[-1][1], reports  # ends at its total
    shown = len(at.download_button)
    at.run()
    no_exception(at)
    assert len(at.download_button) == shown == 6  # 2 results x (PNG, NPZ, manifest)


def test_explain_then_compare():
    at = new_app()
    explain(at)
    out = compare(at, ["efficientnet_lite0"], "none")
    assert isinstance(out[0][1], seethrough.Explanation)
    assert len(at.download_button) == 6


# ---------------------------------------------------------------------------------------------
# what the user sees: errors where the page is, names, concepts, results as they come


def test_a_model_load_error_is_shown_in_the_main_area():
    at = new_app()
    at.text_input(key="mean").input("1,2").run()
    no_exception(at)
    (side,) = sidebar_errors(at)
    (main,) = [e.value for e in at.main.error]
    assert side in main and "sidebar" in main
    assert not at.dataframe

    at.text_input(key="mean").input("").run()
    at.radio(key="model_source").set_value("My own file").run()
    no_exception(at)
    assert any("upload its weights file" in i.value for i in at.main.info)


def test_an_uploaded_model_is_named_by_its_file(monkeypatch, chart_titles):
    monkeypatch.setenv("SEETHROUGH_DASHBOARD_TORCHSCRIPT", "1")  # --allow-torchscript
    titles = chart_titles
    at = new_app()
    own_file(at, "TorchScript", "my model.ts", tiny_torchscript())
    assert not errors(at) and table_rows(at) == 3
    assert titles and titles[-1] == "top-3: my model.ts"  # 3 classes, though k is 5
    notes = [c.value for c in at.sidebar.caption]
    assert any("no default layer" in n and "TorchScript" in n for n in notes), notes
    assert not any("None" in n for n in notes), notes
    assert at.text_input(key="layer").placeholder == "no default layer (see the sidebar)"

    only_methods(at, ["saliency"])
    explain(at)
    title, e = results(at)[0]
    assert title == "my model.ts" and isinstance(e, seethrough.Explanation)
    assert e.model == "my model.ts"  # the manifest's model too
    assert any(c.endswith("· my model.ts") for c in captions(at))


def test_a_registry_model_names_its_default_layer():
    at = new_app()
    assert any(c.value == "1000 classes · default layer bn2" for c in at.sidebar.caption)
    assert at.text_input(key="layer").placeholder == "default: bn2"
    at.selectbox(key="model_name").set_value("squeezenet1_1")
    at.radio(key="weights").set_value("none").run()
    no_exception(at)
    explain(at)  # Grad-CAM, on the layer the sidebar names
    notes = [c.value for c in at.sidebar.caption]
    layer = explanation(at).layer
    assert f"1000 classes · default layer {layer} (the last spatial one)" in notes, notes


def test_dff_concepts_are_a_table_of_text():
    at = new_app()
    only_methods(at, ["dff"])
    at.run()
    at.get_by_key("param.dff.n_iter").set_value(20)
    explain(at)
    e = explanation(at)
    (table,) = at.table
    frame = table.value
    assert list(frame.columns) == ["concept", "top classes"]
    assert list(frame["concept"]) == list(range(1, len(e.extras["concepts"]) + 1))
    labels, scores = e.extras["concept_labels"], e.extras["concept_scores"]
    assert frame["top classes"][0] == ", ".join(
        f"{n} {s:.2f}" for n, s in zip(labels[0], scores[0], strict=True)
    )
    # the photo, what the model sees, the top-k chart, the map, the concepts: no legend picture
    assert [c for c in captions(at) if c.startswith("concepts")] == ["concepts"]
    assert len(at.image) == 5


def test_each_result_is_shown_before_the_next_method_starts(monkeypatch):
    events: list[str] = []
    real_run, real_render = svc.run_method, svc.render

    def run(slot, image, method, **kwargs):
        events.append(f"run {method}")
        return real_run(slot, image, method, **kwargs)

    def render(e, *args, **kwargs):
        events.append(f"show {e.method}")
        return real_render(e, *args, **kwargs)

    monkeypatch.setattr(svc, "run_method", run)
    monkeypatch.setattr(svc, "render", render)
    at = new_app()
    only_methods(at, ["cam", "gradcam", "saliency"])
    at.run()
    events.clear()
    explain(at)
    order = [e.method for _, e in results(at)]
    assert order == ["cam", "gradcam", "saliency"]
    assert events == [f"{step} {m}" for m in order for step in ("run", "show")]
    assert len(at.download_button) == 9 and not at.get("progress")
    assert [h.value for h in at.get("subheader")].count("Results") == 1

    at.run()  # a rerun shows the same results from the session, nothing run again
    no_exception(at)
    assert not [e for e in events[6:] if e.startswith("run")]
    assert sum(c.startswith(("CAM ·", "Grad-CAM ·", "Saliency ·")) for c in captions(at)) == 3
