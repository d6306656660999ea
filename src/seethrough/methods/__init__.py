"""Explanation methods. Importing this package registers every built-in method (listed in
the order their classes declare: family, then rank; see :mod:`seethrough.registry`)."""

from . import attention, cam, concepts, features, gradient, perturbation  # noqa: F401
from .base import Context, Method, MethodResult

__all__ = ["Method", "MethodResult", "Context"]
