"""Class names: the 1000 ImageNet labels (offline) and generic ``class N`` names."""

from __future__ import annotations

from functools import lru_cache

from ..errors import InvalidParameterError

__all__ = ["imagenet_labels", "generic_labels"]


@lru_cache(maxsize=1)
def _imagenet() -> tuple[str, ...]:
    """The ImageNet-1k class names shipped in torchvision's weight metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (a fresh list each call)."""
    return list(_imagenet())


def generic_labels(n: int) -> list[str]:
    """``["class 0", "class 1", ..., f"class {n - 1}"]``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidParameterError(f"the number of classes must be an integer >= 0, got {n!r}")
    return [f"class {i}" for i in range(n)]


def labels_for(n: int) -> list[str]:
    """ImageNet labels when ``n`` is 1000, else generic ones."""
    return imagenet_labels() if n == 1000 else generic_labels(n)
