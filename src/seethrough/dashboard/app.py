"""The seethrough dashboard page (Streamlit). Start it with ``seethrough dashboard``.

Model panel (sidebar) -> image -> predictions -> explain, plus a compare view; and, chosen in
the sidebar, a training run view (the runs an ExplanationRecorder wrote under the folder given
to ``seethrough dashboard --runs DIR``: an epoch slider, each probe's maps at that epoch, the
metrics vs epoch), which loads no model. The page calls
the public library through :mod:`seethrough.dashboard.service`; nothing typed on the page is
evaluated as code. The model panel asks for the framework first (PyTorch, Keras, ONNX), and each
takes only what its safe loader reads: PyTorch weights as safetensors or ``weights_only`` state
dicts; Keras files after a check of their configuration that refuses Lambda layers and any code,
then in Keras' safe mode; one ONNX file, checked before onnxruntime runs it. TorchScript files
are programs: they are refused unless the server was started with ``--allow-torchscript``, and
then run only if their code uses nothing but tensor operators. Keras and ONNX are imported only
once a model of that framework is asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st
import torch
from PIL import Image

from seethrough import __version__
from seethrough import video as vid
from seethrough._io import write_atomically
from seethrough.dashboard import service as svc
from seethrough.describe import describe_agreement
from seethrough.errors import (
    ImageTooLargeError,
    InvalidImageError,
    SeethroughError,
    WeightsUnavailableError,
)
from seethrough.explanation import Explanation
from seethrough.images import list_samples, sample_image
from seethrough.models import VisionModel, list_models
from seethrough.models.preprocessing import parse_triple
from seethrough.registry import get_method, list_methods

BUNDLED = "efficientnet_lite0"
KERAS_DEFAULT = "MobileNetV2"
OWN_FILE = "My own file"
LAYER_HELP = {  # what a layer is called in each framework (VisionModel.framework)
    "pytorch": "A dotted module name",
    "keras": "A Keras layer name (as model.get_layer takes it; a nested model's as outer/inner)",
    "onnx": "An ONNX tensor name (a node's output)",
}
DEFAULT_METHODS = {"cam": ["gradcam"]}
FAMILY_TITLES = {
    "cam": "CAM family",
    "perturbation": "Perturbation",
    "gradient": "Gradient",
    "concepts": "Concepts",
    "attention": "Attention (transformers)",
    "features": "Feature views",
}
OTHER_CLASS = "another class..."
STAT_NOTES = {  # how to read the numbers some methods report about their own result
    "r2": "local R² (how well LIME's linear model fits the model near this image)",
    "completeness_gap": "completeness gap |Σ attributions − (f(x) − f(baseline))|",
    "delta": "f(x) − f(baseline)",
    "base_value": "f(all superpixels hidden)",
    "reconstruction_error": "NMF reconstruction error (relative)",
    "features": "superpixels",
}


def _one_line(exc: BaseException) -> str:
    """The error's message on one line (library messages may wrap)."""
    return " ".join(str(exc).split())


def _message(exc: BaseException) -> str:
    """What the page says of an error: one short line, never a traceback."""
    if isinstance(exc, WeightsUnavailableError):
        return (
            f"{_one_line(exc)} In the dashboard: choose weights 'none' (random) or 'My own file'."
        )
    if isinstance(exc, SeethroughError):
        return _one_line(exc)
    return f"unexpected error: {type(exc).__name__}: {_one_line(exc)}"


def _fail(exc: BaseException) -> None:
    """One short line in the page; never a traceback."""
    st.error(_message(exc))


# ---------------------------------------------------------------------------------------------
# model panel


def model_panel() -> tuple[svc.ModelSpec, svc.ModelSlot] | None:
    """The sidebar: framework, model, weights, preprocessing; returns the loaded model or None."""
    sb = st.sidebar
    sb.header("Model")
    framework = sb.selectbox(
        "Framework",
        svc.FRAMEWORKS,
        key="framework",
        help="What the model was made with. Each framework takes only files its safe loader "
        "reads: nothing in an uploaded file runs as code.",
    )
    missing = svc.missing_extra(framework)
    if missing is not None:  # one line instead of the form; nothing of the framework imported
        sb.warning(missing)
        st.info(f"{framework} models are not available on this server: {missing}")
        return None
    try:
        spec = _model_choice(sb, framework)
        if spec is None:
            what = "weights file" if framework == "PyTorch" else "model file"
            st.info(f"Your own model: upload its {what} in the sidebar.")
            return None
        sb.subheader("Preprocessing")
        size = sb.number_input(
            "Image size (0 = the model's)",
            min_value=0,
            max_value=4096,
            value=0,
            step=16,
            key="size",
        )
        mean = sb.text_input("Mean", key="mean", placeholder="the model's, e.g. 0.485,0.456,0.406")
        std = sb.text_input("Std", key="std", placeholder="the model's, e.g. 0.229,0.224,0.225")
        resize = sb.selectbox("Resize", ["the model's", "squash", "crop"], key="resize")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        device = sb.selectbox("Device", devices, key="device")
        spec = dataclasses.replace(
            spec,
            size=int(size) or None,
            mean=parse_triple(mean, "mean"),
            std=parse_triple(std, "std"),
            resize=None if resize == "the model's" else resize,  # type: ignore[arg-type]
            device=device,
        )
        with st.spinner(f"Loading {spec.title()}{_first_load_note(spec)}..."):
            slot = svc.MODELS.get(spec)
    except Exception as exc:  # beside the model's widgets, and in the main area, which waits
        with sb:
            _fail(exc)
        st.error(f"The model could not be loaded (change it in the sidebar): {_message(exc)}")
        return None
    sb.caption("Applied preprocessing")
    sb.code(slot.model.preprocessing.describe(), language=None, wrap_lines=True)
    sb.caption(f"{slot.model.num_classes} classes · {svc.layer_default(slot).note}")
    return spec, slot


def _model_choice(sb: Any, framework: str) -> svc.ModelSpec | None:
    """The framework's own part of the panel: where the model comes from (None: no file yet)."""
    if framework == "Keras":
        return _keras_model(sb)
    if framework == "ONNX":
        return _onnx_model(sb)
    source = sb.radio("Model", ["From the registry", OWN_FILE], key="model_source")
    if source == OWN_FILE:
        return _own_model(sb)
    name, weights = _architecture(
        sb,
        list_models(),
        BUNDLED,
        ("model_name", "weights"),
        "efficientnet_lite0 ships real ImageNet weights and works offline. Other pretrained "
        "weights are downloaded on first use.",
        ("default", "default: pretrained; none: random (for mechanics and timing)."),
    )
    threshold = None
    if name in svc.detector_names():  # torchvision's detectors: boxes above a confidence
        threshold = sb.number_input(
            "Score threshold",
            min_value=0.0,
            max_value=1.0,
            value=0.05 if weights == "default" else 0.0,
            step=0.01,
            format="%g",
            key="score_threshold",
            help="Boxes below this confidence are dropped. Random weights score every class "
            "near 1 / classes (about 0.01): keep 0 for them to find boxes.",
        )
    return svc.ModelSpec(name=name, weights=weights, score_threshold=threshold)


def _architecture(
    sb: Any,
    names: list[str],
    default: str,
    keys: tuple[str, str],
    help_name: str,
    pretrained: tuple[str, str],
) -> tuple[str, str]:
    """An architecture of ``names`` and its weights: ``pretrained = (option, help)`` or none."""
    name = sb.selectbox(
        "Architecture", names, index=names.index(default), key=keys[0], help=help_name
    )
    weights = sb.radio(
        "Weights", [pretrained[0], "none"], key=keys[1], horizontal=True, help=pretrained[1]
    )
    return name, weights


def _keras_model(sb: Any) -> svc.ModelSpec | None:
    """A ``keras.applications`` architecture, or the user's ``.keras`` / ``.h5`` file."""
    source = sb.radio("Model", ["From keras.applications", OWN_FILE], key="keras_source")
    if source == OWN_FILE:
        note = (
            "A .keras or .h5 model file. Before Keras reads it, its configuration is checked: "
            "a Lambda layer, a function or any class that is not Keras' own is refused; then "
            "it is loaded in Keras safe mode. Nothing in the file runs as code."
        )
        return _uploaded(sb, "Keras", "keras_file", note)
    name, weights = _architecture(
        sb,
        svc.keras_applications(),
        KERAS_DEFAULT,
        ("keras_name", "keras_weights"),
        "keras.applications architectures, run on Keras' torch backend, each with its own "
        "preprocessing mode (shown under Applied preprocessing).",
        (
            "imagenet",
            "imagenet: pretrained, downloaded by Keras on first use; none: random (for "
            "mechanics and timing).",
        ),
    )
    return svc.ModelSpec(name=f"keras:{name}", weights=weights)


def _onnx_model(sb: Any) -> svc.ModelSpec | None:
    """The user's ``.onnx`` file."""
    note = (
        "One self-contained .onnx file: a model saved with its weights as external data cannot "
        "be uploaded (only one file is taken). It is checked before it runs (no custom "
        "operators, one image input). The perturbation family, CAM, Score-CAM, Eigen-CAM, "
        "feature maps and DFF run on onnxruntime; the gradient methods (saliency, Grad-CAM, "
        "Integrated Gradients, ...) run on a conversion of the graph to PyTorch, and say so "
        "in their result when an operator cannot be converted."
    )
    return _uploaded(sb, "ONNX", "onnx_file", note)


def _uploaded(sb: Any, framework: str, key: str, note: str) -> svc.ModelSpec | None:
    """The file uploader of a framework's own file and its spec (None: no file yet).
    The file's type is checked by :func:`svc.store_upload`, which says why in one line."""
    upload = sb.file_uploader("Model file", key=key, help=note)
    if upload is None:
        sb.info(f"Upload a {framework} model file to use your own model.")
        return None
    path = _upload_folder().store(upload.getvalue(), upload.name, framework=framework)
    return svc.ModelSpec(name=str(path), label=upload.name)


def _first_load_note(spec: svc.ModelSpec) -> str:
    """What a first load may do besides reading a file, so a long spinner is not a surprise."""
    if (
        spec.label is not None
        or spec.weights not in ("default", "imagenet")
        or spec.name == BUNDLED
    ):
        return ""
    if spec.name == "synthetic_digits":
        return " (the first time, its weights are trained: about a minute)"
    return " (the first time, its pretrained weights are downloaded)"


def _upload_folder() -> svc.UploadFolder:
    """This session's private folder for uploaded weights, removed when the session ends."""
    if "upload_folder" not in st.session_state:
        st.session_state["upload_folder"] = svc.UploadFolder()
    return st.session_state["upload_folder"]


def _own_model(sb: Any) -> svc.ModelSpec | None:
    kind = "State dict"
    if svc.torchscript_allowed():
        kind = sb.radio(
            "File kind", ["State dict", "TorchScript"], key="file_kind", horizontal=True
        )
    else:
        sb.caption(
            "State dicts only: TorchScript files are programs, accepted only by a dashboard "
            "started with `seethrough dashboard --allow-torchscript` (one user, own machine)."
        )
    note = (  # the file's type is checked by svc.store_upload, which says why in one line
        "A .safetensors, .pt, .pth or .bin state dict for the architecture below. Only tensors "
        "are read (weights_only=True): nothing in the file runs as code."
    )
    if kind == "TorchScript":
        note = (
            "A .ts, .pt or .pth TorchScript file. TorchScript is a program: it runs only if every "
            "operator in its code is a pure tensor operator (checked before anything runs)."
        )
    upload = sb.file_uploader("Weights file", key="weights_file", help=note)
    arch = None
    if kind == "State dict":
        arch = sb.selectbox("Architecture of the file", list_models(), key="arch")
    if upload is None:
        sb.info("Upload a weights file to use your own model.")
        return None
    path = _upload_folder().store(upload.getvalue(), upload.name)
    return svc.ModelSpec(name=str(path), arch=arch, label=upload.name)


# ---------------------------------------------------------------------------------------------
# image and predictions


def image_panel() -> Image.Image | None:
    """Upload or bundled sample; a bad file gives one line of error, across the page. An
    uploaded video is stored for :func:`video_panel` (session state ``video_clip``): no image."""
    st.session_state.pop("video_clip", None)
    left, _ = st.columns([1, 2])
    with left:
        source = st.radio("Image", ["Sample photo", "Upload"], key="image_source", horizontal=True)
        if source == "Sample photo":
            samples = list_samples()
            name = st.selectbox("Sample", samples, index=samples.index("chelsea"), key="sample")
            image = sample_image(name)
            image.info["name"] = f"sample:{name}"
            return image
        upload = st.file_uploader(
            f"Upload an image ({', '.join(svc.UPLOAD_TYPES)}) or a video "
            f"({', '.join(vid.VIDEO_EXTENSIONS)}; at most "
            f"{svc.MAX_UPLOAD_BYTES // 2**20} MiB and {svc.MAX_UPLOAD_PIXELS // 10**6} MP)",
            key="upload",
        )
    if upload is None:
        st.info("Choose an image file, or a sample photo.")
        return None
    try:
        if vid.is_video(upload.name):
            st.session_state["video_clip"] = (
                _stored_clip(upload.getvalue(), upload.name),
                upload.name,
            )
            return None
        return svc.decoded_upload(upload.getvalue(), upload.name)
    except SeethroughError as exc:
        _fail(exc)
        return None


# video


# (comments, not docstrings: Streamlit's magic would print a bare string on the page)
VIDEO_MAX_FRAMES = 300  # the most frames of an uploaded clip the page explains (after the stride)
VIDEO_MAX_SECONDS = 120.0  # the longest uploaded clip the page reads (seconds)


def _stored_clip(data: bytes, filename: str) -> Path:
    """An uploaded clip, checked and written (mode 0600, atomically) into the session's private
    folder, named by its content's hash. The images' limits: the upload's bytes, then from the
    header the frame size (pixels) and the page's duration. FFmpeg only decodes the file:
    nothing in it runs as code."""
    if not data:
        raise InvalidImageError(f"{filename}: the file is empty")
    if len(data) > svc.MAX_UPLOAD_BYTES:
        raise InvalidImageError(
            f"{filename}: {len(data) / 2**20:.1f} MiB is larger than the "
            f"{svc.MAX_UPLOAD_BYTES // 2**20} MiB limit"
        )
    folder = _upload_folder().path
    path = folder / f"clip-{hashlib.sha256(data).hexdigest()[:16]}{Path(filename).suffix.lower()}"
    if not path.exists():
        for old in folder.glob("clip-*"):  # one clip per session
            old.unlink(missing_ok=True)
        write_atomically(path, lambda p: p.write_bytes(data), mode=0o600)
    try:
        vid.check_video(path, max_pixels=svc.MAX_UPLOAD_PIXELS, max_seconds=VIDEO_MAX_SECONDS)
    except InvalidImageError as exc:  # the user's file name, and the page's limits
        path.unlink(missing_ok=True)
        message = str(exc).replace(str(path), filename).split(" (raise it")[0]
        if isinstance(exc, ImageTooLargeError):
            message += ": resize it first"
        raise InvalidImageError(message) from None
    return path


def video_panel(spec: svc.ModelSpec, slot: svc.ModelSlot, clip: Path, name: str) -> None:
    """An uploaded clip: a method, the frame stride and the temporal smoothing; Explain video
    explains each kept frame for its own top class (the model's lock held) and plays the
    overlay video."""
    st.subheader("Explain a video")
    info = vid.video_info(clip)
    count = f"{info.frames} frames" if info.frames else "frames unknown"
    st.caption(f"{name} · {info.width}x{info.height} · {info.fps:g} fps · {count}")
    names = [m.name for m in list_methods() if slot.model.task in m.tasks]
    left, middle, right = st.columns(3)
    method = left.selectbox(
        "Method",
        names,
        index=names.index("gradcam") if "gradcam" in names else 0,
        key="video_method",
    )
    stride = middle.number_input(
        "Frame stride",
        min_value=1,
        max_value=100,
        value=1,
        key="video_stride",
        help=f"Explain one frame in N (at most {VIDEO_MAX_FRAMES} frames are explained).",
    )
    smooth = right.slider(
        "Temporal smoothing",
        0.0,
        0.95,
        0.0,
        step=0.05,
        key="video_smooth",
        help="The weight w of the past: each map shown is w × the previous one + (1 − w) × its "
        "own. Steadier maps, lagging behind motion.",
    )
    key = (str(clip), slot.token, method, int(stride), float(smooth))
    shown = st.session_state.get("video_result")
    if st.button("Explain video", type="primary", key="explain_video"):
        bar = st.progress(0.0, text=f"{method}: starting")

        def tick(done: int, total: int) -> None:
            of = f"/{total}" if total else ""  # 0: the header has no frame count
            bar.progress(
                min(done / total, 1.0) if total else 0.0, text=f"{method}: frame {done}{of}"
            )

        out = Path(tempfile.mkdtemp(prefix="explained-", dir=_upload_folder().path))
        try:
            with slot.lock:
                v = vid.explain_video(
                    slot.model,
                    clip,
                    method,
                    stride=int(stride),
                    smooth=float(smooth),
                    max_frames=VIDEO_MAX_FRAMES,
                    max_pixels=svc.MAX_UPLOAD_PIXELS,
                    max_seconds=VIDEO_MAX_SECONDS,
                    out=out,
                    progress=tick,
                )
            shown = (key, v.files["video"].read_bytes(), len(v))
            st.session_state["video_result"] = shown
        except SeethroughError as exc:
            _fail(exc)
            return
        finally:
            shutil.rmtree(out, ignore_errors=True)
        bar.empty()
    if shown is not None and shown[0] == key:
        st.video(shown[1], format="video/mp4")
        st.caption(f"{get_method(method).title} · {shown[2]} frames · {spec.title()}")


def predictions_panel(
    slot: svc.ModelSlot, image: Image.Image, name: str | None = None
) -> list[Any] | None:
    """The image, what the model sees, and the top-k table and bar chart (titled with ``name``,
    the model as the sidebar names it: the user's file name for an upload)."""
    vm = slot.model
    what = {"detection": "Boxes shown", "segmentation": "Classes shown"}.get(vm.task, "Top-k")
    k = st.slider(what, 1, 10, 5, key="top_k")
    try:
        with st.spinner("Predicting..."):
            shown = svc.predict(slot, image, k, name=name)
    except Exception as exc:
        _fail(exc)
        return None
    preds = shown.predictions
    if shown.task != "classification":
        _region_predictions(shown, image)
        return preds
    a, b, c = st.columns([1, 1, 2])
    a.image(image, caption=f"{image.info.get('name', 'image')} · {image.width}x{image.height}")
    b.image(
        shown.seen,
        caption=f"what the model sees · {vm.preprocessing.output_size[1]}x"
        f"{vm.preprocessing.output_size[0]}",
    )
    with c:
        st.dataframe(
            [
                {"class": p.label, "index": p.index, "probability": round(p.probability, 4)}
                for p in preds
            ],
            hide_index=True,
        )
        st.image(shown.chart)
    return preds


# ---------------------------------------------------------------------------------------------
# explain


def _param_widgets(method: str) -> dict[str, Any]:
    """The method's parameters, generated from the registry (help text included)."""
    info = get_method(method)
    values: dict[str, Any] = {}
    for f in svc.param_fields(info):
        p, key = f.param, f"param.{method}.{f.name}"
        if f.kind == "checkbox":
            values[f.name] = st.checkbox(f.name, value=bool(p.default), key=key, help=p.help)
        elif f.kind == "select":
            options = list(p.choices or ())
            values[f.name] = st.selectbox(
                f.name, options, index=options.index(p.default), key=key, help=p.help
            )
        elif f.kind in ("int", "float"):
            cast = int if f.kind == "int" else float
            values[f.name] = st.number_input(
                f.name,
                min_value=None if p.min is None else cast(p.min),
                max_value=None if p.max is None else cast(p.max),
                value=cast(p.default),
                step=1 if f.kind == "int" else None,
                format=None if f.kind == "int" else "%g",
                key=key,
                help=p.help,
            )
        else:
            values[f.name] = st.text_input(f.name, value=str(f.default), key=key, help=p.help)
    return values


def _choose_methods(task: str) -> list[str]:
    st.markdown("**Methods** (grouped by family)")
    chosen: list[str] = []
    groups = svc.methods_by_family(task)
    cols = st.columns(min(len(groups), 3))
    for i, (family, infos) in enumerate(groups.items()):
        with cols[i % len(cols)]:
            chosen += st.multiselect(
                FAMILY_TITLES.get(family, family.capitalize()),
                [m.name for m in infos],
                default=DEFAULT_METHODS.get(family, []),
                format_func=lambda n: get_method(n).title,
                key=f"methods.{family}",
                help="; ".join(f"{m.title}: {m.summary}" for m in infos),
            )
    return chosen


def _region_predictions(shown: svc.Predicted, image: Image.Image) -> None:
    """A detector's boxes drawn on the image beside their table, or a segmenter's class mask
    with its legend beside the classes present."""
    a, b = st.columns([3, 2])
    name = image.info.get("name", "image")
    if shown.task == "detection":
        a.image(shown.chart, caption=f"{name} · {len(shown.predictions)} top boxes")
        b.dataframe(svc.box_rows(shown.predictions), hide_index=True)
        return
    a.image(shown.chart, caption=f"{name} · predicted classes")
    b.dataframe(
        [{"class": label, "pixels %": round(100 * f, 1)} for label, f in shown.predictions],
        hide_index=True,
    )


def _choose_region(vm: VisionModel, preds: list[Any]) -> Any:
    """The box (a detector) or the class mask (a segmenter) to explain; default the top box,
    or the most frequent class other than the background."""
    if vm.task == "detection":
        choices = svc.box_choices(preds)
        what, help_text = "Box to explain", "One of the boxes in the table (0 = the top box)."
    else:
        choices = svc.mask_choices(vm, preds)
        what, help_text = "Class mask to explain", "A class the model predicts in this image."
    if not choices:
        st.info("The model found nothing in this image to explain (lower the score threshold).")
        return None
    texts = [t for t, _ in choices]
    choice = st.selectbox(what, texts, key=f"target.{vm.task}", help=help_text)
    return choices[texts.index(choice)][1]


def _choose_target(vm: VisionModel, preds: list[Any]) -> Any:
    if vm.task in ("detection", "segmentation"):
        return _choose_region(vm, preds)
    options = [f"{p.label} ({p.probability:.2f})" for p in preds] + [OTHER_CLASS]
    choice = st.selectbox(
        "Target class",
        options,
        key="target",
        help="The class to explain: the top-1 by default, any of the top-k, or any other class.",
    )
    if choice != OTHER_CLASS:
        return int(preds[options.index(choice)].index)
    text = st.text_input("Class name or index", key="target_text", placeholder="e.g. tabby")
    if not text.strip():
        st.info("Type a class name (or part of one) or an index.")
        return None
    index = vm.class_index(int(text) if text.strip().isdigit() else text.strip())
    st.caption(f"explaining class {index}: {vm.label(index)}")
    return index


def _layer_placeholder(slot: svc.ModelSlot) -> str:
    name = svc.layer_default(slot).name
    return f"default: {name}" if name else "no default layer (see the sidebar)"


def _cancel() -> None:
    st.session_state["cancelled"] = True


def explain_panel(
    spec: svc.ModelSpec, slot: svc.ModelSlot, image: Image.Image, preds: list[Any]
) -> None:
    """Methods, target, parameters, the Explain button, and the results side by side."""
    st.subheader("Explain")
    methods = _choose_methods(slot.model.task)
    try:
        target = _choose_target(slot.model, preds)
    except SeethroughError as exc:
        _fail(exc)
        return
    layer = st.text_input(
        "Layer (for CAM-family methods)",
        key="layer",
        placeholder=_layer_placeholder(slot),
        help=f"{LAYER_HELP.get(slot.model.framework, LAYER_HELP['pytorch'])}, see "
        "`seethrough layers`. Empty: the model's default layer.",
    ).strip()
    params: dict[str, dict[str, Any]] = {}
    for m in methods:
        with st.expander(f"{get_method(m).title} parameters"):
            params[m] = _param_widgets(m)
    if st.session_state.pop("cancelled", False):  # says where the stopped run ended
        record = st.session_state.get("explain_run")
        st.warning(record.cancelled() if record is not None else "Cancelled.")
    if st.button("Explain", type="primary", key="explain", disabled=not methods):
        if target is None and preds and slot.model.task == "classification":
            target = int(preds[0].index)
        cancel = st.empty()
        cancel.button("Cancel", key="cancel", on_click=_cancel)
        st.session_state["results"] = results = []  # filled as each method finishes
        st.session_state["explain_run"] = record = svc.RunProgress(len(methods))
        cells = _result_cells(len(methods))
        try:
            _run(spec, slot, image, methods, target, layer, params, results, cells, record)
        finally:  # also when a Cancel or a closed page stops the run at a progress report
            record.end()
        cancel.empty()
        _show_agreement(results)
    else:
        _show_results(st.session_state.get("results", []), "explain")


def _run(
    spec: svc.ModelSpec,
    slot: svc.ModelSlot,
    image: Image.Image,
    methods: list[str],
    target: Any,
    layer: str,
    raw: dict[str, dict[str, Any]],
    results: list[tuple[str, Explanation | str]],
    cells: list[Any],
    record: svc.RunProgress | None = None,
) -> None:
    """Run ``methods`` one after the other, appending each result (or its one-line error) to
    ``results`` and showing it in its cell as soon as it finishes, before the next method
    starts (its progress bar waits in that cell): a cancelled run keeps what finished."""
    record = record or svc.RunProgress(len(methods))
    for i, m in enumerate(methods):
        title = get_method(m).title
        record.start(title)
        tick = _progress_in(cells[i], title, record)
        try:
            params = svc.clean_params(get_method(m), raw[m])
            e = svc.run_method(
                slot,
                image,
                m,
                target=target,
                layer=layer or None,
                params=params,
                progress=tick,
            )
            if spec.label is not None:  # an upload: the user's file name, not the stored file's
                e = dataclasses.replace(e, model=spec.title())  # a copy: e may be cached
            results.append((spec.title(), e))
        except Exception as exc:
            results.append((spec.title(), f"{title}: {_one_line(exc)}"))
        record.finish()
        _show_cell(cells[i], *results[-1], key=f"download.explain.{i}")


def _progress_in(
    cell: Any, title: str, record: svc.RunProgress | None = None
) -> Callable[[int, int], None]:
    """A progress bar in ``cell`` and the callback that moves it (and ``record``)."""
    bar = cell.progress(0.0, text=f"{title}: starting")

    def tick(done: int, total: int) -> None:
        if record is not None:
            record.report(done, total)
        # a Cancel or a closed page makes this call raise Streamlit's stop: the method stops
        # here, at its progress report, and the model's lock is released
        bar.progress(min(done / max(total, 1), 1.0), text=f"{title}: {done}/{total}")

    return tick


def _caption(e: Explanation, model: str) -> str:
    return " · ".join(e.caption().splitlines() + [model])


def _result_cells(n: int) -> list[Any]:
    """The "Results" heading and one placeholder per result, two side by side in each row."""
    st.subheader("Results")
    cells: list[Any] = []
    for row in range(0, n, 2):
        cells += [col.empty() for col in st.columns(2)[: min(2, n - row)]]
    return cells


def _show_cell(cell: Any, model: str, e: Explanation | str, key: str) -> None:
    """One result (or its one-line error) in its placeholder, replacing what was there."""
    with cell.container():
        if isinstance(e, str):
            st.error(e)
        else:
            _show_result(e, model, key=key)


def _show_results(results: list[tuple[str, Explanation | str]], view: str) -> None:
    if not results:
        return
    cells = _result_cells(len(results))
    for i, ((model, e), cell) in enumerate(zip(results, cells, strict=True)):
        _show_cell(cell, model, e, key=f"download.{view}.{i}")
    if view == "explain":
        _show_agreement(results)


def _show_agreement(results: list[tuple[str, Explanation | str]]) -> None:
    """How far the maps of the methods run on the image agree (rank correlation, top pixels)."""
    done = [e for _, e in results if not isinstance(e, str)]
    if len(done) > 1 and len({e.map.shape for e in done}) == 1:
        st.text(describe_agreement(done).text)


def _show_result(e: Explanation, model: str, key: str) -> None:
    """The map with its legend and caption, the method's other views (DFF's concepts as a
    table of text), its numbers, downloads."""
    shown = svc.render(e)
    (main, _), *others = shown.views
    st.image(main, caption=_caption(e, model), width="stretch")
    st.text(e.describe())
    for row in range(0, len(others), 2):
        for sub, (picture, caption) in zip(st.columns(2), others[row : row + 2], strict=False):
            sub.image(picture, caption=caption, width="stretch")
    concepts = svc.concept_rows(e)
    if concepts:
        st.caption("concepts: each colour's top classes (probability)")
        st.table(_concept_table(concepts))
    for name, value in e.stats.items():
        st.caption(f"{STAT_NOTES.get(name, name.replace('_', ' '))}: {value:.4g}")
    with st.container(horizontal=True):
        for kind, data in shown.files.items():
            st.download_button(
                kind.upper() if kind != "json" else "manifest",
                data,
                file_name=f"{e.method}.{kind}",
                key=f"{key}.{kind}",
                on_click="ignore",
            )


def _concept_table(rows: list[dict[str, Any]]) -> Any:
    """DFF's concepts as a table: each number on its concept's colour, then its classes."""
    import pandas as pd

    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "colour"} for r in rows])

    def paint(column: Any) -> list[str]:
        return [f"background-color: {r['colour']}; color: {svc.ink_on(r['colour'])}" for r in rows]

    return frame.style.apply(paint, subset=["concept"]).hide(axis="index")


# ---------------------------------------------------------------------------------------------
# compare


def compare_panel(image: Image.Image, device: str) -> None:
    """One method on the same image for several models, side by side."""
    st.subheader("Compare models")
    names = list_models()
    models = st.multiselect(
        "Models", names, default=[BUNDLED], key="compare_models", max_selections=4
    )
    weights = st.radio(
        "Weights of the other models",
        ["default", "none"],
        key="compare_weights",
        horizontal=True,
        help="efficientnet_lite0 always uses its bundled weights. Other pretrained weights are "
        "downloaded on first use; 'none' gives random weights.",
    )
    infos = [m for ms in svc.methods_by_family("classification").values() for m in ms]
    method = st.selectbox(
        "Method",
        [m.name for m in infos],
        index=1,
        key="compare_method",
        format_func=lambda n: get_method(n).title,
    )
    if st.button("Compare", type="primary", key="compare", disabled=not models):
        # each model's result shows as soon as it is done; a closed page stops the running
        # one at its next progress report
        results: list[tuple[str, Explanation | str]] = []
        st.session_state["compare_results"] = results
        cells = _result_cells(len(models))
        title = get_method(method).title
        for i, name in enumerate(models):
            spec = svc.ModelSpec(
                name=name, weights="default" if name == BUNDLED else weights, device=device
            )
            try:
                with cells[i].container(), st.spinner(f"{spec.title()}: loading..."):
                    slot = svc.MODELS.get(spec)
                tick = _progress_in(cells[i], f"{spec.title()}: {title}")
                results.append((spec.title(), svc.run_method(slot, image, method, progress=tick)))
            except Exception as exc:
                results.append((spec.title(), f"{spec.title()}: {_one_line(exc)}"))
            _show_cell(cells[i], *results[-1], key=f"download.compare.{i}")
    else:
        _show_results(st.session_state.get("compare_results", []), "compare")


# ---------------------------------------------------------------------------------------------
# training run

EXPLAIN_VIEW = "Explain an image"
TRAINING_VIEW = "Training run"


def training_panel() -> None:
    """A run under the runs folder, picked by name: an epoch slider, each probe's maps at that
    epoch per method, and the metrics vs epoch with the epoch the maps settled."""
    st.subheader("Training run")
    root = svc.runs_root()
    if root is None:
        st.info(
            "No runs folder on this server. Start the dashboard with `seethrough dashboard "
            "--runs DIR` to look at the runs an ExplanationRecorder wrote under DIR."
        )
        return
    names = svc.list_runs(root)
    if not names:
        st.info(
            "No training run in the runs folder yet: a run is a folder with the run.json "
            "that seethrough.ExplanationRecorder writes."
        )
        return
    name = st.selectbox("Run", names, key="run", help="The run folders in the runs folder.")
    try:
        run = svc.open_run(root, name)
        epochs = run.map_epochs
        if not epochs:
            st.info("This run has no maps yet: its first recorded epoch will show here.")
            return
        epoch = epochs[0]
        if len(epochs) > 1:
            epoch = st.select_slider(
                "Epoch", epochs, value=epochs[-1], key=f"epoch.{name}", help="A recorded epoch."
            )
        shown = svc.load_epoch(run, epoch)
        settled = svc.settled_text(run)
    except Exception as exc:
        _fail(exc)
        return
    for probe in shown.probes:
        st.image(
            [probe.image] + [picture for _, picture in probe.overlays],
            caption=[probe.caption]
            + [f"{svc.method_title(m)} · epoch {shown.epoch}" for m, _ in probe.overlays],
        )
    st.subheader("Metrics vs epoch")
    st.caption(settled)
    panels = svc.metric_panels(run)
    if not panels:
        st.info("No metrics in this run's table yet.")
    cols = st.columns(min(len(panels), 3) or 1)
    for i, (title, lines) in enumerate(panels):
        with cols[i % len(cols)]:
            st.markdown(f"**{title}**")
            st.line_chart(_frame(lines), x_label="epoch")


def _frame(lines: dict[str, dict[int, float]]) -> Any:
    """``{line: {epoch: value}}`` as a table indexed by epoch, one column per line."""
    import pandas as pd

    return pd.DataFrame(lines).sort_index()


# ---------------------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="seethrough", layout="wide")
    st.title("seethrough")
    st.caption(f"what the model looks at, and why · version {__version__}")
    view = st.sidebar.radio(
        "View",
        [EXPLAIN_VIEW, TRAINING_VIEW],
        key="view",
        horizontal=True,
        help="Explain an image with a model, or look at a training run's explanations epoch "
        "by epoch (needs no model).",
    )
    if view == TRAINING_VIEW:
        training_panel()
        return
    loaded = model_panel()
    image = image_panel()
    if loaded is not None and "video_clip" in st.session_state:
        video_panel(*loaded, *st.session_state["video_clip"])
        return
    if loaded is None or image is None:
        return
    spec, slot = loaded
    explain_tab, compare_tab = st.tabs(["Explain", "Compare models"])
    with explain_tab:
        preds = predictions_panel(slot, image, spec.title())
        if preds is not None:
            explain_panel(spec, slot, image, preds)
    with compare_tab:
        compare_panel(image, spec.device)


main()
