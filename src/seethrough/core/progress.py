"""Progress reporting shared by the methods and the metrics: a callback type and a counter.

A long computation reports ``progress(done, total)`` before its work and between batches; the
callback answers ``False`` to cancel, and the :class:`Ticker` turns that answer into
:class:`~seethrough.errors.CancelledError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import CancelledError

__all__ = ["Progress", "ReportsProgress", "Ticker"]

Progress = Callable[[int, int], object]
"""``progress(done, total)``, called by every method before its work and between batches;
returning ``False`` cancels."""


class ReportsProgress(Protocol):
    """Anything that carries a progress callback (a method's or a metric's context)."""

    @property
    def progress(self) -> Progress | None: ...


class Ticker:
    """Counts work done for the progress callback; a ``False`` answer cancels.

    Args:
        ctx: the call's context (its ``progress`` callback, if any).
        total: the work of the whole call.
        unit: what is counted, for the cancellation message.
    """

    def __init__(self, ctx: ReportsProgress, total: int, unit: str = "model evaluations") -> None:
        self.callback = ctx.progress
        self.total = total
        self.unit = unit
        self.done = 0

    def advance(self, n: int) -> None:
        """Record ``n`` more units of work (``0``: report before any work) and call back; raise
        ``CancelledError`` if the callback says stop."""
        self.done += n
        if self.callback is not None and self.callback(self.done, self.total) is False:
            raise CancelledError(f"cancelled after {self.done} of {self.total} {self.unit}")
