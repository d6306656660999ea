"""Typed errors raised by seethrough.

Every error the library raises on purpose derives from :class:`SeethroughError`, so callers (the
CLI, the dashboard) can catch one type and show its message as a single line. Subclasses also
derive from the matching built-in (``ValueError``, ``LookupError``, ``OSError``) so generic code
keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "SeethroughError",
    "InvalidImageError",
    "ImageTooLargeError",
    "UnknownModelError",
    "UnknownMethodError",
    "UnknownMetricError",
    "UnknownLayerError",
    "UnknownClassError",
    "InvalidParameterError",
    "InvalidTargetError",
    "InvalidInputError",
    "ModelOutputError",
    "WeightsUnavailableError",
    "WeightsMismatchError",
    "UnsafeModelError",
    "MethodNotApplicableError",
    "CancelledError",
    "suggest",
]


class SeethroughError(Exception):
    """Base class of every error seethrough raises on purpose."""


class InvalidImageError(SeethroughError, ValueError):
    """An image could not be read or converted (corrupt, truncated, not an image, bad shape)."""


class ImageTooLargeError(InvalidImageError):
    """An image has more pixels than the configured limit (decompression-bomb guard).

    ``size`` is the image's ``(width, height)`` and ``limit`` the pixel limit it broke, when
    known (so a caller with its own limit can word its own message).
    """

    def __init__(
        self, message: str, *, size: tuple[int, int] | None = None, limit: int | None = None
    ) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class UnknownModelError(SeethroughError, LookupError):
    """A model name is not known to any registered source."""


class UnknownMethodError(SeethroughError, LookupError):
    """An explanation method name is not in the registry."""


class UnknownMetricError(SeethroughError, LookupError):
    """An evaluation metric name is not in the registry."""


class UnknownLayerError(SeethroughError, LookupError):
    """A layer name does not exist in the model, or no suitable layer could be found."""


class UnknownClassError(SeethroughError, LookupError):
    """A class index or label does not exist in the model's labels."""


class InvalidParameterError(SeethroughError, ValueError):
    """A method or preprocessing parameter is unknown or out of range."""


class InvalidInputError(InvalidImageError, InvalidParameterError):
    """An input that is no model input at all (a tensor of another dtype or rank, an empty list).

    Both an :class:`InvalidImageError` and an
    :class:`InvalidParameterError`, so that code catching either keeps
    catching it, whichever entry point (``predict``, ``explain``, a metric) it came through.
    """


class InvalidTargetError(SeethroughError, ValueError):
    """A target cannot be resolved or does not give one scalar per sample."""


class ModelOutputError(SeethroughError, TypeError):
    """A model's output cannot be turned into one tensor of scores."""


class WeightsUnavailableError(SeethroughError, OSError):
    """Pretrained weights could not be obtained (for example: offline)."""


class WeightsMismatchError(SeethroughError, ValueError):
    """A weights file does not fit the architecture (missing, unexpected or mis-shaped tensors)."""


class UnsafeModelError(SeethroughError, ValueError):
    """A model file holds code that is refused (TorchScript using more than tensor operators)."""


class MethodNotApplicableError(SeethroughError, ValueError):
    """A method cannot run on this model or layer (for example CAM without a GAP + linear head)."""


class MissingDependencyError(SeethroughError, ImportError):
    """An optional extra is needed and not installed (the message names the pip command)."""


class CancelledError(SeethroughError):
    """A long computation was cancelled through its progress callback (no state is left behind)."""


def suggest(name: str, candidates: Iterable[str], n: int = 5) -> str:
    """Return a short "did you mean" hint for ``name`` among ``candidates`` (empty if none is close)."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
