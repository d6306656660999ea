"""Gaussian noise for the stochastic methods: torch's own float64 draw, vectorised.

:func:`standard_normal` gives exactly what ``torch.randn(..., dtype=torch.float64)`` gives for
the same generator (same numbers, same generator state afterwards), several times faster on the
CPU; :func:`normal_noise` draws on the device of the tensor it is for.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["standard_normal", "normal_noise"]


def standard_normal(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)``, faster.

    The float64 draw is the documented recipe (it does not depend on the model's dtype), but
    torch draws it with a scalar Box-Muller loop. Here the same uniforms (``torch.rand``, same
    generator, same count) go through the same Box-Muller transform in vectorised float64
    (``_box_muller``), which matches ``torch.randn`` to the last float64 bit or so and leaves
    the generator in the same state. Falls back to ``torch.randn`` if this torch build draws
    differently (checked once, see :func:`_box_muller_matches_randn`).
    """
    size = math.prod(shape)
    if size < 16 or not _box_muller_matches_randn():
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    return _box_muller(size, generator, dtype).view(shape)


def normal_noise(
    shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """``scale`` times standard normal noise of ``shape``, on ``like``'s device and dtype.

    On the CPU: :func:`standard_normal` (the float64 draw), scaled in float64. On a GPU the
    noise is drawn there, by a device generator seeded from ``generator``: drawing millions of
    numbers on the CPU and copying them over cost SmoothGrad on a GPU about half its time. The
    same seed gives the same noise on the same device; a GPU and the CPU draw different noise.
    """
    if like.device.type == "cpu":
        z = standard_normal(shape, generator)
        return (z if scale == 1.0 else z * scale).to(like.dtype)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    device_generator = torch.Generator(device=like.device).manual_seed(seed)
    z = torch.randn(shape, generator=device_generator, device=like.device, dtype=like.dtype)
    return z if scale == 1.0 else z.mul_(scale)


def _box_muller(size: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``size >= 16`` standard normals as torch's CPU ``normal_`` makes them in float64.

    torch (``normal_fill`` in ``ATen/native/cpu/DistributionTemplates.h``) draws ``size``
    uniforms ``u``, then maps each block of 16 with ``r = sqrt(-2 log(1 - u[j]))``,
    ``theta = 2 pi u[j + 8]`` to ``(r cos theta, r sin theta)`` at ``(j, j + 8)``, ``j < 8``;
    when ``size % 16 != 0`` it draws 16 more uniforms and maps them onto the last 16 values.
    """
    blocks, rest = divmod(size, 16)
    u = torch.rand(size + (16 if rest else 0), generator=generator, dtype=torch.float64)

    def transform(v: torch.Tensor) -> torch.Tensor:  # (B, 16) uniforms -> (B, 16) normals
        v = v.view(-1, 2, 8)  # u[j], u[j + 8]
        radius = torch.rsub(v[:, 0], 1).log_().mul_(-2).sqrt_()
        theta = v[:, 1] * (2.0 * math.pi)
        pairs = torch.stack([radius * theta.cos(), radius.mul_(theta.sin_())], dim=1)
        return pairs.to(dtype).view(-1, 16)

    normals = transform(u[: blocks * 16].view(blocks, 16)).view(-1)
    if rest:
        normals = torch.cat([normals[: size - 16], transform(u[size:].view(1, 16)).view(-1)])
    return normals


@functools.cache
def _box_muller_matches_randn() -> bool:
    """Whether :func:`_box_muller` reproduces ``torch.randn`` (float64) in this torch build."""
    size = 40  # two blocks and a tail
    expected = torch.randn(size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = _box_muller(size, torch.Generator().manual_seed(1), torch.float64)
    return torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
