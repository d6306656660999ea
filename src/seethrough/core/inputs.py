"""Checks of the tensors a user hands in: model inputs and image-valued parameters.

An image-valued parameter (a gradient method's ``baseline``, a perturbation method's ``hide``,
a metric's ``hide``) lives in model-input space, next to a model input ``x`` of shape
``(N, C, H, W)``. It may be:

- a finite number (a Python or numpy number, a 0-d tensor, or a string such as ``"0.5"``):
  every value of the image;
- one of the parameter's keywords (``"mean"``, ``"blur"``, ...);
- a tensor of shape ``(C, H, W)`` or ``(1, C, H, W)`` (one image for every input), or
  ``(N, C, H, W)`` (one image per input), with exactly the input's ``C``, ``H`` and ``W``, and a
  floating or integer dtype, every value finite. Methods that draw from a set of images (Gradient
  SHAP) also take ``(M, C, H, W)`` for any ``M``.

Nothing else is broadcast: a one-channel image for a three-channel input, or a single row, is
refused with :class:`~seethrough.errors.InvalidParameterError` naming the parameter and the
shapes it takes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InvalidImageError, InvalidParameterError

__all__ = ["image_parameter", "check_model_input", "short_repr"]


def image_parameter(
    name: str,
    value: object,
    x: torch.Tensor,
    *,
    keywords: Sequence[str] = (),
    any_count: bool = False,
) -> float | str | torch.Tensor:
    """Check an image-valued parameter against the model input ``x`` ``(N, C, H, W)``.

    Args:
        name: the parameter's name, used in every message (``"baseline"``, ``"hide"``).
        value: what the user gave (see the module docstring).
        x: the model input the parameter goes with.
        keywords: the words the parameter takes besides numbers and images.
        any_count: accept ``(M, C, H, W)`` for any ``M`` (a set of images to draw from).

    Returns:
        A ``float`` for a number, the keyword for a keyword, or the tensor (3-D or 4-D as given)
        on ``x``'s device and dtype.

    Raises:
        InvalidParameterError: anything else, a non-finite value, a tensor of another shape or a
            boolean / complex dtype.
    """
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    if isinstance(value, np.generic) and not isinstance(value, np.bool_):
        value = value.item()
    if isinstance(value, str):
        if value in keywords:
            return value
        try:
            value = float(value)
        except ValueError:
            raise InvalidParameterError(f"{name}={value!r}: {_accepted(keywords)}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidParameterError(f"{name}={value!r}: {_accepted(keywords)}")
        return float(value)
    if isinstance(value, torch.Tensor):
        return _image_tensor(name, value, x, any_count)
    raise InvalidParameterError(f"{name}={short_repr(value)}: {_accepted(keywords)}")


def _image_tensor(name: str, value: torch.Tensor, x: torch.Tensor, any_count: bool) -> torch.Tensor:
    """Shape, dtype and finiteness of a tensor-valued image parameter."""
    shape, image = tuple(value.shape), tuple(x.shape[1:])
    n = x.shape[0]
    fits = shape == image or (
        len(shape) == 4 and shape[1:] == image and (any_count or shape[0] in (1, n))
    )
    if not fits:
        c, h, w = image
        counts = "M" if any_count else ("1" if n == 1 else f"1 or {n}")
        more = " with any M" if any_count else ""
        raise InvalidParameterError(
            f"{name} has shape {shape}; for a model input of shape {tuple(x.shape)} give "
            f"({c}, {h}, {w}) or ({counts}, {c}, {h}, {w}){more} (no other broadcasting)"
        )
    if value.dtype == torch.bool or value.is_complex():
        raise InvalidParameterError(
            f"{name} has dtype {value.dtype}; give real values in model-input space"
        )
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = value.numel() - int(torch.isfinite(value).sum())
        raise InvalidParameterError(f"{name} holds {bad} non-finite values (NaN or inf)")
    return value.to(x.device, x.dtype)


def _accepted(keywords: Sequence[str]) -> str:
    words = "".join(f", {k!r}" for k in keywords)
    return f"use a finite number{words} or an image"


def short_repr(value: object) -> str:
    """``repr(value)`` for a message, or ``<type>`` when that is long (a whole array)."""
    text = repr(value)
    return text if len(text) <= 60 else f"<{type(value).__name__}>"


def check_model_input(x: torch.Tensor, channels: int | None = None) -> None:
    """Refuse a model-input batch ``(N, C, H, W)`` the model cannot take.

    Args:
        x: the batch.
        channels: the channel count the model takes, when known.

    Raises:
        InvalidImageError: ``x`` has another channel count, or NaN / inf values.
    """
    if channels is not None and x.shape[1] != channels:
        raise InvalidImageError(
            f"the input has {x.shape[1]} channel{'s' if x.shape[1] != 1 else ''} "
            f"(shape {tuple(x.shape)}); the model takes {channels}"
        )
    if not bool(torch.isfinite(x).all()):
        bad = x.numel() - int(torch.isfinite(x).sum())
        raise InvalidImageError(f"the input has {bad} non-finite values (NaN or inf)")
