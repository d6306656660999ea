"""Explanation methods. Importing this package registers every built-in method."""

# importing registers each family, in this order
from . import cam, perturbation, gradient, concepts, attention, features  # noqa: F401, I001
from .base import Context, Method, MethodResult

__all__ = ["Method", "MethodResult", "Context"]
