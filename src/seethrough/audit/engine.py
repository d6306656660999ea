"""Engines run a :class:`~seethrough.audit.worker.Worker` over items and hand back the rows.

An engine is anything with ``run(spec, items, on_rows)`` (:class:`Engine`): it computes the rows
of every item with workers built from the spec, and calls ``on_rows(rows)`` in the calling
thread once per batch, as batches finish (in any order); the caller writes each batch as one
part of the table. :class:`LocalEngine` runs in this process; the Ray engine (module
``seethrough.audit.ray``, class ``RayEngine(address=...)``, the ``ray`` extra) is looked up
by :func:`get_engine` only when asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import InvalidParameterError
from ..models import VisionModel
from .items import Item
from .worker import AuditSpec, Worker

__all__ = ["Engine", "LocalEngine", "OnRows", "get_engine", "ENGINES", "batches"]

OnRows = Callable[[list[dict[str, Any]]], object]
"""``on_rows(rows)``: called with each finished batch's rows."""

ENGINES = ("local", "ray")
"""The engine names :func:`get_engine` knows."""


class Engine(Protocol):
    """Runs the audit's work (see the module docstring)."""

    def run(self, spec: AuditSpec, items: Sequence[Item], on_rows: OnRows) -> None:
        """Compute the rows of ``items`` and pass each batch's to ``on_rows``."""
        ...


def batches(items: Sequence[Item], size: int) -> list[Sequence[Item]]:
    """``items`` cut into consecutive batches of ``size`` (the last one may be shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class LocalEngine:
    """The in-process engine: one worker, batches one after another.

    Args:
        model: an already loaded model (else the worker loads ``spec.model``).
    """

    def __init__(self, model: VisionModel | None = None) -> None:
        self.model = model

    def run(self, spec: AuditSpec, items: Sequence[Item], on_rows: OnRows) -> None:
        """Compute the rows of ``items`` batch by batch (see :class:`Engine`)."""
        worker = Worker(spec, model=self.model)
        for batch in batches(items, spec.batch_size):
            on_rows(worker(batch))


def get_engine(name: str = "local", address: str | None = None, **options: Any) -> Engine:
    """The engine called ``name``.

    Args:
        name: ``"local"`` (this process) or ``"ray"`` (a local Ray cluster, or the one at
            ``address``).
        address: for Ray: ``"auto"`` (the cluster this machine belongs to) or ``HOST:PORT``;
            ``None`` starts a local cluster.
        **options: the engine's own options.

    Raises:
        InvalidParameterError: an unknown engine, an address for the local engine, or the Ray
            engine where this installation has none.
    """
    if name == "local":
        if address is not None:
            raise InvalidParameterError("--address is for --engine ray; the local engine has none")
        return LocalEngine(**options)
    if name == "ray":
        try:
            module = importlib.import_module(f"{__package__}.ray")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.ray":
                raise
            raise InvalidParameterError(
                "--engine ray is not available in this version of seethrough; use --engine local"
            ) from None
        return module.RayEngine(address=address, **options)  # type: ignore[no-any-return]
    raise InvalidParameterError(f"unknown engine '{name}': use one of {', '.join(ENGINES)}")
