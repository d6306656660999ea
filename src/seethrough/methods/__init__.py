"""Explanation methods. Importing this package registers every built-in method."""

from . import cam  # noqa: F401  (registers the CAM family)
from .base import Context, Method, MethodResult

__all__ = ["Method", "MethodResult", "Context"]
