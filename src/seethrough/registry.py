"""The registries of explanation methods and evaluation metrics that drive the API, the CLI,
the dashboard, the documentation and the tests.

A method class declares its metadata as class attributes and registers itself::

    @register_method
    class GradCAM(CAMMethod):
        name = "gradcam"
        title = "Grad-CAM"
        rank = 20  # its place in the CAM family's listings
        ...

``list_methods()`` and ``get_method(name)`` return :class:`MethodInfo` records with everything a
front end needs to build a form: family, whether gradients or a layer are needed, and each
parameter's type, default, range and help text. Metrics register with :func:`register_metric`.

This module is a leaf: it imports none of what it lists. The package ``seethrough`` tells each
:class:`Registry` how to fill itself with the built-in entries (:meth:`Registry.fill_with`), which
happens on the first lookup. Listings are in a declared order, never in import order: by family
(or category) as :data:`METHOD_FAMILIES` (:data:`METRIC_CATEGORIES`) lists them, families not
listed there after them by name, then by each entry's ``rank``, then by name.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

from .errors import (
    InvalidParameterError,
    SeethroughError,
    UnknownMethodError,
    UnknownMetricError,
    suggest,
)

__all__ = [
    "Param",
    "find_param",
    "validate_params",
    "Registry",
    "DEFAULT_RANK",
    "MethodInfo",
    "METHODS",
    "METHOD_FAMILIES",
    "register_method",
    "unregister_method",
    "get_method",
    "list_methods",
    "families",
    "MetricInfo",
    "METRICS",
    "METRIC_CATEGORIES",
    "register_metric",
    "get_metric",
    "list_metrics",
]


@dataclass(frozen=True)
class Param:
    """One parameter of a method: name, default, help text, type and allowed values.

    ``kind`` says what the value is besides its type: ``"value"`` (the default) is taken as
    given; ``"image"`` is an image-valued parameter in model-input space (a number, a keyword
    or an image): :func:`~seethrough.explain` preprocesses a raw image given for it (a path,
    PIL image or numpy array) like the input, before the method sees it.

    ``type`` is ``bool``, ``int``, ``float``, ``str``, ``object`` (taken as given) or a kind of
    :mod:`seethrough.core.kinds`: a class whose ``parse`` classmethod checks and converts a
    value (``Pair``, ``Fill``, ``Segments``). ``aliases`` are former names the parameter still
    answers to, with a ``DeprecationWarning`` naming the current one.
    """

    name: str
    default: Any
    help: str
    type: type = float
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    kind: str = "value"
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The name, then the aliases."""
        return (self.name, *self.aliases)

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ``InvalidParameterError``."""
        if value is None and self.default is None:
            return None
        parse = _parser(self.type)
        if parse is not None:
            try:
                return parse(value)
            except (TypeError, ValueError) as exc:
                raise InvalidParameterError(f"{self.name}={_shown(value)}: {exc}") from None
        try:
            if self.type is bool:
                if isinstance(value, str):
                    if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                        raise ValueError(value)
                    value = value.lower() in {"true", "1", "yes"}
                converted = bool(value)
            elif self.type in (int, float, str):
                if self.type is int and isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                converted = self.type(value)
            else:
                converted = value
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"{self.name}={value!r}: expected {self.type.__name__}"
            ) from None
        if self.choices is not None and converted not in self.choices:
            raise InvalidParameterError(
                f"{self.name}={value!r}: choose one of {', '.join(map(str, self.choices))}"
            )
        if self.min is not None and converted < self.min:
            raise InvalidParameterError(f"{self.name}={value!r}: must be >= {self.min}")
        if self.max is not None and converted > self.max:
            raise InvalidParameterError(f"{self.name}={value!r}: must be <= {self.max}")
        return converted


def _parser(kind: object) -> Callable[[Any], Any] | None:
    """The ``parse`` classmethod of a parameter type that parses its own values, else ``None``."""
    parse = getattr(kind, "parse", None) if isinstance(kind, type) else None
    return parse if callable(parse) else None


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, or ``<type>`` when that is long (a whole array)."""
    text = repr(value)
    return text if len(text) <= 60 and "\n" not in text else f"<{type(value).__name__}>"


def find_param(params: Sequence[Param], name: str, owner: str) -> Param:
    """The parameter called ``name`` among ``params``, those of the method called ``owner``;
    ``InvalidParameterError`` with a suggestion (or the list of its parameters) if none.

    A former name (one of a parameter's ``aliases``) finds the parameter too, with a
    ``DeprecationWarning`` that names the current one.
    """
    for p in params:
        if p.name == name:
            return p
    for p in params:
        if name in p.aliases:
            warnings.warn(
                f"parameter '{name}' of method '{owner}' is now called '{p.name}'; "
                f"the name '{name}' will be removed",
                DeprecationWarning,
                stacklevel=_caller_level(),
            )
            return p
    names = [p.name for p in params]
    raise InvalidParameterError(
        f"method '{owner}' has no parameter '{name}'."
        + (suggest(name, names) or f" Its parameters: {', '.join(names) or 'none'}.")
    )


def validate_params(
    params: Sequence[Param], values: Mapping[str, Any], owner: str
) -> dict[str, Any]:
    """Every default of ``params`` overridden by ``values``, each checked and converted (see
    :meth:`Param.validate`); ``owner`` names the method in error messages.

    The defaults of parameters typed with a kind are parsed like given values (an occlusion
    ``window`` of ``"32"`` is ``(32, 32)``); a parameter given under its name and an alias is
    an error.
    """
    checked = {p.name: p.validate(p.default) if _parser(p.type) else p.default for p in params}
    given: dict[str, str] = {}
    for key, value in values.items():
        p = find_param(params, key, owner)
        if p.name in given:
            raise InvalidParameterError(
                f"method '{owner}': '{given[p.name]}' and '{key}' are the same parameter "
                f"'{p.name}'; give it once"
            )
        given[p.name] = key
        checked[p.name] = p.validate(value)
    return checked


_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_level() -> int:
    """The ``stacklevel`` of a warning that points at the first frame outside this package."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_HERE):
        frame, level = frame.f_back, level + 1
    return level


DEFAULT_RANK = 1000
"""The rank of an entry that declares none: after every built-in entry of its family."""


class _Entry(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def rank(self) -> int: ...


E = TypeVar("E", bound=_Entry)


class Registry(Generic[E]):
    """Named entries of one kind (methods, metrics): lookup with a did-you-mean error, listings
    in a declared order, and filling with the built-in entries on first use.

    Args:
        kind: what an entry is, for messages (``"method"``).
        error: the exception raised for an unknown name.
        group: an entry's group (a method's family, a metric's category).
        groups: the display order of the known groups; other groups follow, by name.
        source: what an entry was made from (a class, a function): registering another source
            under a name already taken is an error, the same one again is not.
    """

    def __init__(
        self,
        kind: str,
        error: type[SeethroughError],
        *,
        group: Callable[[E], str],
        groups: Sequence[str],
        source: Callable[[E], object],
    ) -> None:
        self.kind = kind
        self.groups_order = tuple(groups)
        self._error = error
        self._group = group
        self._source = source
        self._entries: dict[str, E] = {}
        self._fill: Callable[[], object] | None = None
        self._filling = False
        self._lock = threading.RLock()

    def fill_with(self, loader: Callable[[], object]) -> None:
        """Run ``loader`` (which registers the built-in entries, e.g. by importing them) before
        the first lookup or listing."""
        self._fill = loader

    def _filled(self) -> dict[str, E]:
        """The entries, after the loader has run: once, other threads waiting for it (a lookup
        from inside the loader sees the entries registered so far)."""
        if self._fill is not None:
            with self._lock:
                if self._fill is not None and not self._filling:
                    self._filling = True
                    try:
                        self._fill()
                        self._fill = None
                    finally:
                        self._filling = False
        return self._entries

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower()

    def add(self, entry: E) -> E:
        """Register ``entry``; ``ValueError`` if its name is taken by another source."""
        key = self._key(entry.name)
        old = self._entries.get(key)
        if old is not None and self._source(old) is not self._source(entry):
            raise ValueError(f"{self.kind} name '{entry.name}' is registered twice")
        self._entries[key] = entry
        return entry

    def remove(self, name: str) -> E:
        """Take the entry called ``name`` out of the registry and return it."""
        entry = self.get(name)
        del self._entries[self._key(name)]
        return entry

    def get(self, name: str) -> E:
        """The entry called ``name`` (case-insensitive); the registry's error if none."""
        entries = self._filled()
        key = self._key(name)
        if key not in entries:
            raise self._error(
                f"unknown {self.kind} '{name}'."
                + (suggest(key, entries) or f" Available: {', '.join(sorted(entries))}.")
            )
        return entries[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._filled()

    def select(self, group: str | None = None, pattern: str | None = None) -> list[E]:
        """The entries in display order, optionally of one group or matching a name pattern."""
        return sorted(
            (
                e
                for e in self._filled().values()
                if (group is None or self._group(e) == group)
                and (pattern is None or fnmatch.fnmatch(e.name, pattern))
            ),
            key=self._order,
        )

    def groups(self) -> list[str]:
        """The groups that have entries, in display order."""
        return list(dict.fromkeys(self._group(e) for e in self.select()))

    def _order(self, entry: E) -> tuple[int, str, int, str]:
        group = self._group(entry)
        if group in self.groups_order:
            return self.groups_order.index(group), "", entry.rank, entry.name
        return len(self.groups_order), group, entry.rank, entry.name


@dataclass(frozen=True)
class MethodInfo:
    """Registry record of one explanation method."""

    name: str
    title: str
    family: str
    summary: str
    paper: str
    needs_gradients: bool
    needs_layer: bool
    class_specific: bool
    params: tuple[Param, ...]
    cls: type[Any] = field(repr=False)
    rank: int = DEFAULT_RANK
    tasks: tuple[str, ...] = ("classification", "detection", "segmentation")
    """The kinds of model it explains (a model's ``task``): D-RISE explains detectors only."""

    def param(self, name: str) -> Param:
        """The parameter called ``name``."""
        return find_param(self.params, name, self.name)

    def defaults(self) -> dict[str, Any]:
        """Every parameter's default value."""
        return {p.name: p.default for p in self.params}

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``params``, each checked and converted."""
        return validate_params(self.params, params, self.name)


METHOD_FAMILIES = ("cam", "perturbation", "gradient", "concepts", "attention", "features")
"""The display order of the built-in method families; other families follow, by name."""

METHODS: Registry[MethodInfo] = Registry(
    "method",
    UnknownMethodError,
    group=lambda m: m.family,
    groups=METHOD_FAMILIES,
    source=lambda m: m.cls,
)
"""The explanation methods (filled with the built-in ones by the package ``seethrough``)."""

C = TypeVar("C", bound=type[Any])
F = TypeVar("F", bound=Callable[..., Any])


def register_method(cls: C) -> C:
    """Class decorator: add a :class:`~seethrough.methods.base.Method` subclass to the registry.

    Its class attributes say what the registry records: ``name``, ``title``, ``family``,
    ``paper``, ``needs_gradients``, ``needs_layer``, ``class_specific``, ``params``, ``rank``
    (its place among its family's methods in listings; lower first, ties by name) and, when it
    explains only some kinds of model, ``tasks``.
    """
    doc = (cls.__doc__ or "").strip()
    info = MethodInfo(
        name=cls.name,
        title=cls.title,
        family=cls.family,
        summary=doc.splitlines()[0] if doc else cls.title,
        paper=cls.paper,
        needs_gradients=cls.needs_gradients,
        needs_layer=cls.needs_layer,
        class_specific=cls.class_specific,
        params=tuple(cls.params),
        cls=cls,
        rank=getattr(cls, "rank", DEFAULT_RANK),
        **({"tasks": tuple(cls.tasks)} if getattr(cls, "tasks", None) else {}),
    )
    METHODS.add(info)
    return cls


def unregister_method(name: str) -> MethodInfo:
    """Take the method called ``name`` out of the registry (e.g. a test's own method); its
    record, or ``UnknownMethodError``."""
    return METHODS.remove(name)


def get_method(name: str) -> MethodInfo:
    """The registered method called ``name`` (case-insensitive); ``UnknownMethodError`` if none."""
    return METHODS.get(name)


def list_methods(family: str | None = None, pattern: str | None = None) -> list[MethodInfo]:
    """Registered methods in display order (family, then rank, then name), optionally filtered
    by family or name pattern."""
    return METHODS.select(family, pattern)


def families() -> list[str]:
    """Method families present in the registry, in display order."""
    return METHODS.groups()


@dataclass(frozen=True)
class MetricInfo:
    """Registry record of one evaluation metric: how to read its number and what it needs.

    Attributes:
        name: the function's name in :mod:`seethrough.metrics` (``"iou"``, ``"deletion"``, ...).
        title: display name.
        category: ``"localisation"``, ``"faithfulness"``, ``"robustness"`` or ``"randomization"``.
        higher_is_better: whether a larger number means a better explanation.
        needs: what a call needs besides the map: ``"mask"`` (ground truth), ``"model"`` and
            ``"image"`` (to re-evaluate the model), ``"method"`` (to recompute maps).
        summary: first line of the function's docstring.
        range: the bounds of the number, when it has any.
        func: the function itself.
        rank: its place among its category's metrics in listings (lower first, ties by name).
    """

    name: str
    title: str
    category: str
    higher_is_better: bool
    needs: tuple[str, ...]
    summary: str
    range: tuple[float, float] | None
    func: Callable[..., Any] = field(repr=False)
    rank: int = DEFAULT_RANK


METRIC_CATEGORIES = ("localisation", "faithfulness", "robustness", "randomization")
"""The metric categories, in display order."""

METRICS: Registry[MetricInfo] = Registry(
    "metric",
    UnknownMetricError,
    group=lambda m: m.category,
    groups=METRIC_CATEGORIES,
    source=lambda m: m.func,
)
"""The evaluation metrics (filled with the built-in ones by the package ``seethrough``)."""


def register_metric(
    *,
    title: str,
    category: str,
    higher_is_better: bool,
    needs: tuple[str, ...] = (),
    range: tuple[float, float] | None = None,  # noqa: A002
    rank: int = DEFAULT_RANK,
) -> Callable[[F], F]:
    """Function decorator: add a metric with its metadata to the registry (``rank``: its place
    among its category's metrics in listings; lower first, ties by name)."""
    if category not in METRIC_CATEGORIES:
        raise ValueError(f"metric category must be one of {METRIC_CATEGORIES}, not {category!r}")

    def add(func: F) -> F:
        doc = (func.__doc__ or "").strip()
        info = MetricInfo(
            name=func.__name__,
            title=title,
            category=category,
            higher_is_better=higher_is_better,
            needs=tuple(needs),
            summary=doc.splitlines()[0] if doc else title,
            range=range,
            func=func,
            rank=rank,
        )
        METRICS.add(info)
        return func

    return add


def get_metric(name: str) -> MetricInfo:
    """The registered metric called ``name``; ``UnknownMetricError`` if none."""
    return METRICS.get(name)


def list_metrics(category: str | None = None) -> list[MetricInfo]:
    """Registered metrics in display order (category, then rank, then name), optionally of one
    category."""
    return METRICS.select(category)
