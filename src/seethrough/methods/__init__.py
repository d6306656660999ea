"""Explanation methods. Importing this package registers every built-in method."""

from . import cam, gradient, perturbation  # noqa: F401  (importing registers each family)
from .base import Context, Method, MethodResult

__all__ = ["Method", "MethodResult", "Context"]
