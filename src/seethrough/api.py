"""The public entry point: ``explain(model, image, method)``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .core.inputs import short_repr
from .core.layers import LayerRef
from .core.resize import to_input_size
from .core.targets import TargetLike
from .errors import InvalidImageError, InvalidParameterError, InvalidTargetError
from .explanation import Explanation, Region
from .images import is_raw_image
from .methods.params import BASELINE_KEYWORDS, HIDE_KEYWORDS
from .models import VisionModel
from .models.vision_model import ModelInfo, prepare_inputs
from .registry import get_method
from .targets import BoxScore, MaskScore

__all__ = ["explain", "prepare_inputs"]

ImageLike = Any  # path, PIL image, numpy array, or float tensor (C,H,W) / (N,C,H,W)


def explain(
    model: VisionModel | nn.Module,
    image: ImageLike | Sequence[ImageLike],
    method: str = "gradcam",
    target: TargetLike = None,
    layer: LayerRef = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> Explanation | list[Explanation]:
    """Explain what ``model`` looks at in ``image``.

    Args:
        model: a :class:`~seethrough.models.VisionModel` (preprocessing, labels, default layer)
            or any ``torch.nn.Module`` (its input must then be ready: no preprocessing applied).
        image: one image (path, PIL image, numpy array, or a float tensor ``(C, H, W)`` of model
            input), a list of images, or a float batch ``(N, C, H, W)``.
        method: a registry name (see ``list_methods()``), e.g. ``"gradcam"``.
        target: ``None`` (the top class), a class index, a class label, a callable
            ``f(output) -> (N,)``, a :class:`~seethrough.targets.Box` or
            :class:`~seethrough.targets.Mask`; for a batch a list with one target per image;
            for ONE image a list of k targets, explained each (see Returns).
        layer: dotted layer name or module, for methods that need a layer (default: the model's
            default layer, else the last layer with a spatial output).
        progress: optional callback ``progress(done, total)`` that every method calls before
            its work and after each step (a chunk of images, a batch of masks or of model
            evaluations); returning ``False`` cancels with ``CancelledError`` and leaves the
            model as it was.
        **params: the method's parameters (see ``get_method(method).params``).

    Returns:
        One :class:`Explanation` for one image, a list for a list or a 4-D batch. For one image
        and a list (or tuple) of k targets, a list of k explanations in the targets' order,
        the same as k calls with one target each; the gradient CAMs (gradcam, gradcam++,
        xgradcam, layercam, hirescam) run the model once for them and take one backward per
        target, so k boxes of one detection cost one forward plus k backwards, not k forwards
        (every other method runs the image once per target).

    Example:
        >>> import seethrough
        >>> model = seethrough.load_model()          # the bundled EfficientNet-Lite0
        >>> e = seethrough.explain(model, "sample:chelsea", "gradcam")
        >>> e.label, e.map.shape
        ('Egyptian cat', (224, 224))
    """
    info = get_method(method)
    described = ModelInfo.of(model)
    module = described.module
    for param in info.cls.params:  # image-valued parameters are preprocessed like the input
        key = param.name
        if param.kind == "image" and params.get(key) is not None:
            if _is_image_argument(params[key]):
                params[key] = _image_argument(model, key, params[key])
    runner = info.cls(**params)
    x, shows, single = prepare_inputs(model, image)
    shared_rows = None
    if single and isinstance(target, (list, tuple)):  # k targets of one image: k rows
        if not target:
            raise InvalidTargetError("an empty list of targets: give at least one")
        k = len(target)
        x, shows, single = x.repeat(k, 1, 1, 1), shows * k, False
        shared_rows = [0] * k
    start = time.perf_counter()
    try:
        result = runner(
            described,
            x,
            target,
            layer=layer,
            images=shows,
            progress=progress,
            shared_rows=shared_rows,
        )
    except RuntimeError as exc:
        error = _input_error(module, x, exc)
        if error is None:
            raise
        raise error from exc
    n = x.shape[0]
    seconds = (time.perf_counter() - start) / n
    maps = to_input_size(result.map, tuple(x.shape[-2:]))
    explanations = []
    for i in range(n):
        cls = result.target.classes[i]
        explanations.append(
            Explanation(
                raw=result.raw[i].float().cpu().numpy(),
                map=maps[i],
                method=info.name,
                title=info.title,
                target=cls,
                label=described.label(cls),
                score=float(result.scores[i]),
                probability=None
                if result.probabilities is None
                else float(result.probabilities[i]),
                layer=result.layer,
                params=runner.describe(),
                seconds=seconds,
                model=described.name,
                image=shows[i],
                preprocessing=None
                if described.preprocessing is None
                else described.preprocessing.describe(),
                seed=runner.config.get("seed"),
                extras={k: _numpy(v[i]) for k, v in result.extras.items()},
                stats=dict(result.stats[i]) if result.stats is not None else {},
                region=_region(result.target.fns[i], described),
            )
        )
    return explanations[0] if single else explanations


def _region(fn: object, described: ModelInfo) -> Region | None:
    """The box or class mask a bound target explains (its reference box, its pixels)."""
    if isinstance(fn, BoxScore):
        box = tuple(float(v) for v in fn.box.detach().cpu().tolist())
        return Region("box", fn.label, described.label(fn.label), box=box)  # type: ignore[arg-type]
    if isinstance(fn, MaskScore):
        pixels = fn.pixels.detach().cpu().numpy().astype(bool)
        return Region("mask", fn.label, described.label(fn.label), pixels=pixels)
    return None


def _numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


_KEYWORDS = frozenset(HIDE_KEYWORDS + BASELINE_KEYWORDS)
"""The words image-valued parameters take besides numbers and images."""


def _is_image_argument(value: Any) -> bool:
    """A ``hide=`` value that is an image to preprocess (not a number or a keyword)."""
    if isinstance(value, str):
        try:
            float(value)
            return False
        except ValueError:
            return value not in _KEYWORDS and (value.startswith("sample:") or _file_like(value))
    return is_raw_image(value) and not isinstance(value, (int, float))


def _file_like(text: str) -> bool:
    """Whether ``text`` reads as a path (an existing file, or a folder or suffix in it): another
    bare word is a misspelt keyword, which the parameter's own check names with a suggestion."""
    return "/" in text or "\\" in text or "." in text or os.path.exists(text)


def _image_argument(model: VisionModel | nn.Module, key: str, value: Any) -> torch.Tensor:
    """An image given as ``hide=`` / ``baseline=``, preprocessed like the input; an unreadable
    one is an error about that parameter."""
    try:
        return prepare_inputs(model, value)[0]
    except InvalidImageError as exc:
        raise InvalidParameterError(
            f"{key}={short_repr(value)} is neither a number, a keyword nor a readable image: {exc}"
        ) from None


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _input_error(module: nn.Module, x: torch.Tensor, exc: RuntimeError) -> Exception | None:
    """A one-line typed error for a model that failed on the input, or ``None`` to re-raise.

    Only errors raised while the model ran count (out-of-memory errors excepted): the usual
    cause is an input of a shape the model cannot take. When the model failed on channels and
    its first convolution takes another channel count than the input has, the message names
    both. (The channels are not checked before the forward: the first convolution registered
    need not be the one the input meets first.)
    """
    if isinstance(exc, torch.OutOfMemoryError) or not _raised_in_model(exc):
        return None
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    conv = next(((n, m) for n, m in module.named_modules() if isinstance(m, _CONVS)), None)
    if conv is not None and conv[1].in_channels != x.shape[1] and "channels" in reason:
        return InvalidImageError(
            f"the input has {x.shape[1]} channel{'s' if x.shape[1] != 1 else ''} (shape "
            f"{tuple(x.shape)}); the model's first convolution '{conv[0] or 'model'}' takes "
            f"{conv[1].in_channels}"
        )
    return InvalidImageError(
        f"the model cannot run on the input of shape {tuple(x.shape)}: {reason}"
    )


def _raised_in_model(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside a module's forward (a frame of ``nn.Module.__call__``
    on its traceback), not by the method's own code."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__") == "torch.nn.modules.module" and (
            frame.f_code.co_name in ("_call_impl", "_wrapped_call_impl")
        ):
            return True
        tb = tb.tb_next
    return False
