"""The run-time machinery shared by the perturbation methods, the gradient methods and the
metrics (``core.perturb``, ``core.progress``): one blur for every caller, with the numbers each
caller computed before it was shared, and the old import paths still naming the same objects.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seethrough import extend
from seethrough.core import perturb, progress
from seethrough.errors import CancelledError
from seethrough.methods import base as methods_base
from seethrough.methods import params
from seethrough.methods.features import inversion
from seethrough.methods.perturbation import engine


def _blur_hide(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The fill image's blur as it was written before: radius ceil(3 sigma), replicated borders."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _blur_inversion(x: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Feature inversion's blur as it was written before: radius ceil(2 sigma), reflected borders."""
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


SHAPES = [(1, 3, 32, 32), (1, 3, 224, 224), (1, 1, 17, 23), (1, 3, 8, 40)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_hide_blur_is_bit_identical_to_before(shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    sigma = max(shape[-2:]) / 16
    assert torch.equal(perturb.hidden_image(x, "blur"), _blur_hide(x, sigma))
    assert torch.equal(engine.hidden_image(x, "blur"), _blur_hide(x, sigma))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 224, 224), (3, 1, 17, 23)])
def test_inversion_blur_is_bit_identical_to_before(shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    assert torch.equal(inversion.gaussian_blur(x), _blur_inversion(x))


def test_one_blur_two_settings():
    x = torch.randn(1, 2, 9, 11, generator=torch.Generator().manual_seed(3))
    replicate = perturb.gaussian_blur(x, 1.0)
    reflect = perturb.gaussian_blur(x, 1.0, truncate=2.0, border="reflect")
    assert replicate.shape == reflect.shape == x.shape
    assert not torch.equal(replicate, reflect)
    # a constant image stays constant whatever the border: the kernel sums to one
    ones = torch.full((1, 1, 10, 10), 0.25, dtype=torch.float64)
    assert torch.allclose(perturb.gaussian_blur(ones, 1.5, border="reflect"), ones)


def test_old_import_paths_name_the_shared_objects():
    for name in ("MaskSource", "FeatureMasks", "PixelMasks", "evaluate", "hidden_image"):
        assert getattr(engine, name) is getattr(perturb, name)
    assert engine.auto_batch_size is perturb.auto_batch_size
    assert engine.Ticker is methods_base.Ticker is extend.Ticker is progress.Ticker
    assert methods_base.Progress is extend.Progress is progress.Progress
    assert extend.MaskSource is perturb.MaskSource
    assert tuple(params.HIDE_KEYWORDS) == perturb.HIDE_KEYWORDS


def test_ticker_needs_only_a_progress_callback():
    class Holder:
        def __init__(self, cb):
            self.progress = cb

    seen = []
    ticker = progress.Ticker(Holder(lambda done, total: seen.append((done, total))), 5)
    ticker.advance(0)
    ticker.advance(3)
    assert seen == [(0, 5), (3, 5)]
    stop = progress.Ticker(Holder(lambda done, total: False), 2, unit="images")
    with pytest.raises(CancelledError, match="cancelled after 1 of 2 images"):
        stop.advance(1)
