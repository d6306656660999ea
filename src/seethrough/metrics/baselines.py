"""Maps that know nothing about the model: every evaluation table lists them as the floor to beat.

A method whose localisation score is not clearly above :func:`centre_gaussian` has learnt nothing
a photographer's habit of centring the object would not give; one not above :func:`random_map` is
noise.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError

__all__ = ["random_map", "centre_gaussian", "BASELINES"]


def _shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 1:
        raise InvalidParameterError(f"a map shape is (H, W) with H, W >= 1, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def random_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Independent uniform noise in [0, 1) per pixel (same seed, same map)."""
    return np.random.default_rng(seed).random(_shape(shape))


def centre_gaussian(shape: tuple[int, int], sigma: float = 0.25) -> np.ndarray:
    """An isotropic Gaussian bump at the image centre, peak 1.

    ``exp(-((y - cy)^2 + (x - cx)^2) / (2 s^2))`` with ``s = sigma * min(H, W)``: the
    centre-bias prior of saliency research.
    """
    h, w = _shape(shape)
    if not sigma > 0:
        raise InvalidParameterError(f"sigma={sigma}: must be > 0")
    s = sigma * min(h, w)
    y = np.arange(h) - (h - 1) / 2
    x = np.arange(w) - (w - 1) / 2
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * s**2))


BASELINES = {"random": random_map, "centre": centre_gaussian}
"""The baselines by the names the evaluation tables use."""
