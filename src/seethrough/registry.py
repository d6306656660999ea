"""One registry of explanation methods that drives the API, the CLI, the dashboard and the tests.

A method class declares its metadata as class attributes and registers itself::

    @register_method
    class GradCAM(CAMMethod):
        name = "gradcam"
        title = "Grad-CAM"
        ...

``list_methods()`` and ``get_method(name)`` return :class:`MethodInfo` records with everything a
front end needs to build a form: family, whether gradients or a layer are needed, and each
parameter's type, default, range and help text.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import InvalidParameterError, UnknownMethodError, UnknownMetricError, suggest

if TYPE_CHECKING:
    from .methods.base import Method

__all__ = [
    "Param",
    "MethodInfo",
    "register_method",
    "get_method",
    "list_methods",
    "families",
    "MetricInfo",
    "register_metric",
    "get_metric",
    "list_metrics",
]


@dataclass(frozen=True)
class Param:
    """One parameter of a method: name, default, help text, type and allowed values."""

    name: str
    default: Any
    help: str
    type: type = float
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ``InvalidParameterError``."""
        if value is None and self.default is None:
            return None
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
    cls: type[Method] = field(repr=False)

    def param(self, name: str) -> Param:
        """The parameter called ``name``."""
        for p in self.params:
            if p.name == name:
                return p
        raise InvalidParameterError(
            f"method '{self.name}' has no parameter '{name}'."
            + (suggest(name, [p.name for p in self.params]) or self._allowed())
        )

    def _allowed(self) -> str:
        names = ", ".join(p.name for p in self.params) or "none"
        return f" Its parameters: {names}."

    def defaults(self) -> dict[str, Any]:
        """Every parameter's default value."""
        return {p.name: p.default for p in self.params}

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``params``, each checked and converted."""
        values = self.defaults()
        for key, value in params.items():
            values[key] = self.param(key).validate(value)
        return values


_METHODS: dict[str, MethodInfo] = {}
F = TypeVar("F", bound=Callable[..., Any])


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add a :class:`~seethrough.methods.base.Method` subclass to the registry."""
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
    )
    if info.name in _METHODS and _METHODS[info.name].cls is not cls:
        raise ValueError(f"method name '{info.name}' is registered twice")
    _METHODS[info.name] = info
    return cls


def _ensure_loaded() -> None:
    from . import methods  # noqa: F401  (importing registers the built-in methods)


def get_method(name: str) -> MethodInfo:
    """The registered method called ``name`` (case-insensitive); ``UnknownMethodError`` if none."""
    _ensure_loaded()
    key = name.strip().lower()
    if key not in _METHODS:
        raise UnknownMethodError(
            f"unknown method '{name}'."
            + (suggest(key, _METHODS) or f" Available: {', '.join(sorted(_METHODS))}.")
        )
    return _METHODS[key]


def list_methods(family: str | None = None, pattern: str | None = None) -> list[MethodInfo]:
    """Registered methods, in registration order, optionally filtered by family or name pattern."""
    _ensure_loaded()
    return [
        m
        for m in _METHODS.values()
        if (family is None or m.family == family)
        and (pattern is None or fnmatch.fnmatch(m.name, pattern))
    ]


def families() -> list[str]:
    """Method families present in the registry, in registration order."""
    return list(dict.fromkeys(m.family for m in list_methods()))


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
    """

    name: str
    title: str
    category: str
    higher_is_better: bool
    needs: tuple[str, ...]
    summary: str
    range: tuple[float, float] | None
    func: Callable[..., Any] = field(repr=False)


_METRICS: dict[str, MetricInfo] = {}
METRIC_CATEGORIES = ("localisation", "faithfulness", "robustness", "randomization")


def register_metric(
    *,
    title: str,
    category: str,
    higher_is_better: bool,
    needs: tuple[str, ...] = (),
    range: tuple[float, float] | None = None,  # noqa: A002
) -> Callable[[F], F]:
    """Function decorator: add a metric with its metadata to the registry."""
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
        )
        if info.name in _METRICS and _METRICS[info.name].func is not func:
            raise ValueError(f"metric name '{info.name}' is registered twice")
        _METRICS[info.name] = info
        return func

    return add


def _ensure_metrics_loaded() -> None:
    from . import metrics  # noqa: F401  (importing registers the built-in metrics)


def get_metric(name: str) -> MetricInfo:
    """The registered metric called ``name``; ``UnknownMetricError`` if none."""
    _ensure_metrics_loaded()
    key = name.strip().lower()
    if key not in _METRICS:
        raise UnknownMetricError(
            f"unknown metric '{name}'."
            + (suggest(key, _METRICS) or f" Available: {', '.join(sorted(_METRICS))}.")
        )
    return _METRICS[key]


def list_metrics(category: str | None = None) -> list[MetricInfo]:
    """Registered metrics, in registration order, optionally of one category."""
    _ensure_metrics_loaded()
    return [m for m in _METRICS.values() if category is None or m.category == category]
