"""Parameter kinds: small types that check and convert a parameter's value themselves.

A :class:`~seethrough.registry.Param` whose ``type`` is one of these classes hands each value
to the class's ``parse`` classmethod, which returns the value a method works with or raises
``ValueError`` / ``TypeError`` with a readable reason;
:meth:`~seethrough.registry.Param.validate` turns that into
:class:`~seethrough.errors.InvalidParameterError` ``"name=value: reason"``. Any class with such
a classmethod is a kind; :class:`Kind` is the common base of these. A method then reads its
configuration already converted (``self.config["window"]`` is a ``(height, width)`` tuple)
instead of parsing free-form values itself.

- :class:`Pair`: a size in pixels, ``SIZE`` or ``HEIGHTxWIDTH`` (text, an integer, or a pair),
  as ``(height, width)``.
- :class:`Fill`: an image-valued parameter (``hide``, ``baseline``): a number, one of the
  parameter's keywords, or an image (passed on unchanged, since
  :func:`~seethrough.explain` preprocesses images given for such parameters).
- :class:`Segments`: a segmenter's name or an integer label array.

A kind's ``__name__`` is its type name wherever a parameter's type is shown. Kinds with a list
of words (:class:`Fill`, :class:`Segments`) are specialised per parameter with ``of(words)``.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import suggest

__all__ = ["Kind", "Pair", "Fill", "Segments"]


class Kind:
    """A parameter type that parses its own values (see the module docstring)."""

    @classmethod
    def parse(cls, value: Any) -> Any:
        """``value`` as the method uses it; ``ValueError`` or ``TypeError`` with the reason."""
        raise NotImplementedError


class Pair(Kind):
    """A size in pixels: ``SIZE`` or ``HEIGHTxWIDTH``, as a ``(height, width)`` tuple.

    Takes an integer (``16``: a square), text (``"16"``, ``"8x16"``, ``"8,16"``) or a tuple or
    list of one or two integers; integral floats count as integers. Each size must be positive.
    """

    @classmethod
    def parse(cls, value: Any) -> tuple[int, int]:
        """``(height, width)``, both positive integers."""
        if isinstance(value, str):
            parts: Sequence[Any] = re.split(r"[xX,]", value.strip())
        elif isinstance(value, (tuple, list)):
            parts = value
        else:
            parts = [value]
        if len(parts) not in (1, 2):
            raise ValueError("give SIZE or HEIGHTxWIDTH: one or two integers")
        sizes = tuple(_integer(p) for p in parts)
        if min(sizes) < 1:
            raise ValueError("sizes must be positive integers")
        return (sizes[0], sizes[-1])


def _integer(part: Any) -> int:
    """One size of a :class:`Pair`: an integer, an integral float, or its text."""
    if isinstance(part, bool):
        raise TypeError("give SIZE or HEIGHTxWIDTH in pixels, not a boolean")
    if isinstance(part, numbers.Integral):
        return int(part)
    if isinstance(part, numbers.Real) and float(part).is_integer():
        return int(part)
    if isinstance(part, str):
        try:
            return int(part.strip())
        except ValueError:
            pass
    raise ValueError("give SIZE or HEIGHTxWIDTH in whole pixels (e.g. 16 or 8x16)")


class _Worded(Kind):
    """A kind that also takes one of a parameter's words (``keywords``); ``of`` makes one."""

    keywords: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def of(cls, keywords: Sequence[str]) -> type:
        """This kind taking the words ``keywords`` (its ``__name__`` stays the kind's)."""
        return type(cls.__name__, (cls,), {"keywords": tuple(keywords), "__module__": __name__})

    @classmethod
    def _words(cls) -> str:
        return ", ".join(repr(k) for k in cls.keywords)

    @classmethod
    def _hinted(cls, reason: str, word: str) -> str:
        """``reason``, then the keywords close to ``word`` if any."""
        hint = suggest(word, cls.keywords)
        return f"{reason}.{hint}" if hint else reason


class Fill(_Worded):
    """What fills pixels: a finite number (model-input space), one of the parameter's keywords,
    or an image.

    A number (or its text) becomes a ``float``; a keyword is kept; an image (PIL image, numpy
    array, tensor, path or file) passes through unchanged, to be preprocessed by
    :func:`~seethrough.explain` and checked against the input by
    :func:`~seethrough.core.inputs.image_parameter`. A bare word that is no keyword and names no
    file is refused, with the closest keyword suggested.
    """

    @classmethod
    def parse(cls, value: Any) -> Any:
        """``float``, keyword, or the image as given."""
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(cls._expected())
        if isinstance(value, np.generic) and not isinstance(value, np.bool_):
            value = value.item()
        if isinstance(value, numbers.Real):
            return _finite(float(value), cls._expected())
        if isinstance(value, str):
            return cls._text(value)
        if isinstance(value, (torch.Tensor, np.ndarray, os.PathLike, bytes, bytearray)) or any(
            hasattr(value, a) for a in ("__array__", "__array_interface__", "read")
        ):
            return value
        raise TypeError(cls._expected())

    @classmethod
    def _text(cls, text: str) -> float | str:
        if text in cls.keywords:
            return text
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None:
            return _finite(number, cls._expected())
        if not text.strip() or (re.fullmatch(r"[A-Za-z_\- ]+", text) and not Path(text).exists()):
            raise ValueError(cls._hinted(cls._expected(), text.strip()))
        return text  # a path or a sample name: an image, read by explain

    @classmethod
    def _expected(cls) -> str:
        words = f", one of {cls._words()}" if cls.keywords else ""
        return f"give a finite number{words} or an image"


def _finite(number: float, expected: str) -> float:
    if not math.isfinite(number):
        raise ValueError(expected)
    return number


class Segments(_Worded):
    """The features to perturb: a segmenter's name (one of ``keywords``) or integer labels
    ``(H, W)`` (numpy array, tensor or nested list), returned as a numpy array.

    The labels' size is checked against the model input where the image is known
    (:func:`~seethrough.methods.perturbation.segmentation.segment`).
    """

    @classmethod
    def parse(cls, value: Any) -> str | np.ndarray:
        """The name, or the labels as an integer ``np.ndarray`` ``(H, W)``."""
        if isinstance(value, str):
            if value in cls.keywords:
                return value
            raise ValueError(
                cls._hinted(f"use one of {cls._words()} or an integer label array", value)
            )
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if not isinstance(value, (np.ndarray, list, tuple)) and not hasattr(value, "__array__"):
            raise TypeError(f"use one of {cls._words()} or an integer label array")
        labels = np.asarray(value)
        if (
            labels.ndim != 2
            or labels.dtype == np.bool_
            or not np.issubdtype(labels.dtype, np.integer)
        ):
            raise ValueError(
                f"a label array must hold integers, shape (H, W); got {labels.dtype} {labels.shape}"
            )
        return labels
