"""The Ray engine: an audit's batches on a Ray cluster, one model per actor (the ``ray`` extra).

:class:`RayEngine` runs the same :class:`~seethrough.audit.worker.Worker` as the in-process
engine, one per actor of a Ray Data actor pool, so the rows are the same; the driver receives
each finished batch as it streams out of the pool and hands it to the audit core, which writes
it as one part of the table (resuming, the table and the progress bar stay the core's).

How the work flows:

- the items travel as JSON text (``ray.data.from_items``, one block per batch so that every
  actor gets work); each actor reads and decodes its items' files itself, so the data must be
  readable at the same path on every node (a shared file system), and so must ``--out`` when
  maps are saved;
- ``map_batches`` with a callable class (``compute=ActorPoolStrategy(size=actors)``): the actor
  builds one ``Worker(spec)`` when it starts (the model loaded once per actor) and turns each
  batch into rows, returned as JSON text (NaN and ``None`` kept exactly as the core writes
  them);
- a spec the actors cannot load (an unknown model, a missing weights file) stops the run with
  the same typed error the in-process engine raises.

A cluster is started on the first :meth:`RayEngine.run` when this process is not connected to
one (``ray.init(num_cpus=..., include_dashboard=False, log_to_driver=False)``), or joined with
``address="auto"`` / ``"HOST:PORT"`` (a cluster started with ``ray start --head``).
:meth:`RayEngine.close` (or leaving a ``with RayEngine() as engine:`` block) shuts down a
cluster the engine started itself and leaves a joined one running.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from types import ModuleType
from typing import Any

import numpy as np

from .. import errors
from ..errors import InvalidParameterError, MissingDependencyError, SeethroughError
from .engine import OnRows
from .items import Item
from .worker import AuditSpec, Worker

__all__ = ["RayEngine", "CPUS_PER_ACTOR"]

CPUS_PER_ACTOR = 0.75
"""CPUs reserved per actor by default: below one, so that on a small machine the tasks that
hand out the items still find a free share of a CPU while every core runs an actor."""

_FAILURE = "__audit_failure__"


def _ray() -> ModuleType:
    """The ``ray`` package, imported on first use.

    Raises:
        MissingDependencyError: Ray (with Ray Data) is not installed.
    """
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError:
        raise MissingDependencyError(
            "--engine ray needs Ray with Ray Data: pip install 'seethrough[ray]'"
        ) from None
    return ray


def _plain(value: Any) -> Any:
    """JSON fallback: numpy scalars as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class AuditActor:
    """One actor of the pool: builds a :class:`Worker` for the class's ``spec`` once, then turns
    each batch of JSON items into JSON rows.

    The engine runs a subclass made per run that carries ``spec`` and ``threads`` as class
    attributes, so that they travel with the class and the actor takes no argument.
    """

    spec: AuditSpec
    threads: int = 1

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        self.failure: str | None = None
        try:
            self.worker: Worker | None = Worker(self.spec)
        except Exception as exc:  # reported to the driver, which raises it there
            self.worker = None
            self.failure = json.dumps(
                {_FAILURE: {"type": type(exc).__name__, "message": " ".join(str(exc).split())}}
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows for a batch (``{"item": JSON items}`` -> ``{"row": JSON rows}``)."""
        if self.worker is None:
            return {"row": np.array([self.failure], dtype=object)}
        items = [Item(**json.loads(text)) for text in batch["item"]]
        rows = [json.dumps(r, default=_plain) for r in self.worker(items)]
        return {"row": np.array(rows, dtype=object)}


def _raise_failure(failure: dict[str, str]) -> None:
    """Raise the actor's error on the driver: its :mod:`seethrough.errors` type where it has
    one, else :class:`~seethrough.errors.SeethroughError`."""
    cls = getattr(errors, failure["type"], None)
    message = f"the audit's actors could not start: {failure['message']}"
    if isinstance(cls, type) and issubclass(cls, SeethroughError):
        try:
            error = cls(failure["message"])
        except TypeError:  # a type built from more than a message
            error = None
        if error is not None:
            raise error
    raise SeethroughError(f"{message} ({failure['type']})")


def _absolute_item(item: Item) -> Item:
    """``item`` with absolute paths: an actor's working folder is not the driver's."""
    mask = None if item.mask_path is None else os.path.abspath(item.mask_path)
    return replace(item, path=os.path.abspath(item.path), mask_path=mask)


def _as_given(row: dict[str, Any], item: Item, shipped: Item) -> dict[str, Any]:
    """``row`` of ``shipped`` (:func:`_absolute_item`) with the paths of ``item`` again."""
    row["path"] = item.path
    if row.get("error"):
        for given, absolute in ((item.path, shipped.path), (item.mask_path, shipped.mask_path)):
            if given is not None and absolute is not None and given != absolute:
                row["error"] = row["error"].replace(absolute, given)
    return row


def _absolute(spec: AuditSpec) -> AuditSpec:
    """``spec`` with its run folder, and a model or weights given as a file here, absolute."""
    changes: dict[str, Any] = {}
    if spec.out is not None:
        changes["out"] = os.path.abspath(spec.out)
    if os.path.exists(spec.model):
        changes["model"] = os.path.abspath(spec.model)
    if spec.weights not in ("default", "none") and os.path.exists(spec.weights):
        changes["weights"] = os.path.abspath(spec.weights)
    return replace(spec, **changes) if changes else spec


@contextmanager
def _quiet_data(ray: ModuleType) -> Iterator[None]:
    """Within: Ray Data draws no progress bar and logs only errors (the audit has its own bar);
    the settings are restored afterwards."""
    ctx = ray.data.DataContext.get_current()
    keep = {
        name: getattr(ctx, name)
        for name in ("enable_progress_bars", "print_on_execution_start", "enable_auto_log_stats")
        if hasattr(ctx, name)
    }
    logger = logging.getLogger("ray.data")
    level = logger.level
    for name in keep:
        setattr(ctx, name, False)
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, value in keep.items():
            setattr(ctx, name, value)
        logger.setLevel(level)


class RayEngine:
    """Runs an audit on a Ray cluster with Ray Data and an actor pool, one model per actor.

    Args:
        address: ``None``: use this process's Ray connection, or start a local cluster;
            ``"auto"``: join the cluster this machine belongs to; ``"HOST:PORT"``: join that
            cluster (``ray start --head`` prints it).
        cpus: CPUs of a cluster the engine starts (default: this machine's).
        actors: size of the actor pool (default: one per GPU when the spec's device is a GPU,
            else one per whole CPU of the cluster).
        cpus_per_actor: CPUs each actor reserves (default :data:`CPUS_PER_ACTOR`); also its
            torch threads (at least one).
        gpus_per_actor: GPUs each actor reserves (default: 1 when the spec's device is ``cuda``
            and the cluster has GPUs, else 0).
        batch_size: items per batch (default: the spec's ``batch_size``, lowered so that every
            actor gets at least two batches).

    Raises:
        MissingDependencyError: Ray is not installed (``pip install 'seethrough[ray]'``).
        InvalidParameterError: a non-positive number of actors, CPUs or batch size.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus: int | None = None,
        actors: int | None = None,
        cpus_per_actor: float = CPUS_PER_ACTOR,
        gpus_per_actor: float | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.ray = _ray()
        checks = {
            "cpus": cpus,
            "actors": actors,
            "cpus_per_actor": cpus_per_actor,
            "batch_size": batch_size,
        }
        for name, value in checks.items():
            if value is not None and value <= 0:
                raise InvalidParameterError(f"{name}={value}: must be > 0")
        if gpus_per_actor is not None and gpus_per_actor < 0:
            raise InvalidParameterError(f"gpus_per_actor={gpus_per_actor}: must be >= 0")
        if cpus is not None and address is not None:
            raise InvalidParameterError("cpus is for a cluster the engine starts, not a joined one")
        self.address = address
        self.cpus = cpus
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.gpus_per_actor = gpus_per_actor
        self.batch_size = batch_size
        self.started = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Join the cluster (or start one, see the class docstring); nothing if connected."""
        ray = self.ray
        if ray.is_initialized():
            return
        common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if main else None
        try:
            if self.address is None:
                ray.init(num_cpus=self.cpus or os.cpu_count() or 1, **common)
                self.started = True
            else:
                ray.init(address=self.address, **common)
        except ConnectionError as exc:
            hint = "start one with `ray start --head`"
            if "RAY_AUTH_MODE" not in os.environ:
                hint += (
                    "; a cluster with token authentication (the default of `ray start` in "
                    "recent Ray) needs RAY_AUTH_MODE=token here, and its token"
                )
            raise InvalidParameterError(
                f"cannot join the Ray cluster at {self.address!r}: {exc} ({hint})"
            ) from None
        finally:
            if main:  # ray.init sets its own; the audit's (a clean stop on SIGTERM) comes back
                signal.signal(signal.SIGTERM, sigterm)

    def close(self) -> None:
        """Shut down the cluster if this engine started it; a joined one keeps running."""
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False

    def _pool(self, spec: AuditSpec) -> tuple[int, float, float]:
        """Actors, CPUs and GPUs per actor for ``spec`` on the connected cluster."""
        resources = self.ray.cluster_resources()
        cluster_cpus = float(resources.get("CPU", 0))
        cluster_gpus = float(resources.get("GPU", 0))
        wants_gpu = spec.device.startswith("cuda")
        gpus = self.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if wants_gpu and cluster_gpus >= 1 else 0.0
        if self.actors is not None:
            actors = self.actors
        elif gpus > 0:
            actors = max(1, int(cluster_gpus / gpus))
        else:
            actors = max(1, int(cluster_cpus))
        if actors * self.cpus_per_actor > cluster_cpus + 1e-9:
            raise InvalidParameterError(
                f"{actors} actors of {self.cpus_per_actor:g} CPU need "
                f"{actors * self.cpus_per_actor:g} CPUs; the cluster has {cluster_cpus:g}"
            )
        if actors * gpus > cluster_gpus + 1e-9:
            raise InvalidParameterError(
                f"{actors} actors of {gpus:g} GPU need {actors * gpus:g} GPUs; "
                f"the cluster has {cluster_gpus:g}"
            )
        return actors, self.cpus_per_actor, gpus

    def run(self, spec: AuditSpec, items: Sequence[Item], on_rows: OnRows) -> None:
        """Compute the rows of ``items`` on the cluster; ``on_rows`` gets each finished batch's
        rows in this thread, in the order the batches finish (see
        :class:`~seethrough.audit.engine.Engine`).

        Raises:
            InvalidParameterError: the pool does not fit the cluster, or the address is wrong.
            SeethroughError: the actors could not build their worker (its typed error).
        """
        if not items:
            return
        self.connect()
        ray = self.ray
        actors, cpus, gpus = self._pool(spec)
        size = self.batch_size or spec.batch_size
        size = max(1, min(size, math.ceil(len(items) / (2 * actors))))
        blocks = math.ceil(len(items) / size)
        shipped = _absolute(spec)
        actor = type("AuditActor", (AuditActor,), {"spec": shipped, "threads": max(1, int(cpus))})
        shipped_items = [_absolute_item(i) for i in items]
        # the rows (and their errors) keep the paths as the source gave them
        given = {i.id: (i, a) for i, a in zip(items, shipped_items, strict=True)}
        with _quiet_data(ray):
            data = ray.data.from_items(
                [{"item": json.dumps(asdict(i))} for i in shipped_items],
                override_num_blocks=blocks,
            )
            rows = data.map_batches(
                actor,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=cpus,
                num_gpus=gpus,
                batch_size=size,
                batch_format="numpy",
            )
            for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
                decoded = [json.loads(text) for text in batch["row"]]
                if decoded and _FAILURE in decoded[0]:
                    _raise_failure(decoded[0][_FAILURE])
                on_rows([_as_given(row, *given[row["id"]]) for row in decoded])
