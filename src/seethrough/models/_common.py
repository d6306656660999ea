"""What the loaders of every framework share: one wording for their errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import WeightsUnavailableError

__all__ = ["first_line", "download_errors"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def download_errors(arch: str) -> Iterator[None]:
    """Turn any failure while fetching pretrained weights into one-line WeightsUnavailableError,
    worded the same for every framework's models."""
    try:
        yield
    except Exception as exc:
        raise WeightsUnavailableError(
            f"could not download the pretrained weights of '{arch}' (no network?): use "
            "weights='none' (--weights none) for random weights, or pass a local weights file "
            "(--weights PATH)"
        ) from exc
