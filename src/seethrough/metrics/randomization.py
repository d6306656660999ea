"""Randomization sanity check: does the explanation depend on what the model has learned?

Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018: re-initialise the model's
weights layer by layer, from the output to the input, and watch the map. A method that explains
the model should give maps that drift away from the original as more of the model is destroyed;
one whose maps stay the same is explaining the image (edges, contrast), not the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import nn

from ..core.layers import named_modules, resolve_layer
from ..errors import (
    CancelledError,
    InvalidParameterError,
    MethodNotApplicableError,
    UnknownLayerError,
    suggest,
)
from ..models.vision_model import module_of
from ..registry import get_method, register_metric
from .base import ModelProbe, as_map
from .robustness import _correlations

__all__ = ["RandomizationResult", "cascading_randomization", "randomizable_layers"]


def _own_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module._parameters.values() if p is not None]


def randomizable_layers(model: Any) -> list[str]:
    """Names of the modules with parameters of their own, output side first.

    That is the reverse of ``named_modules()`` order, the default cascade of
    :func:`cascading_randomization`.

    Args:
        model: a :class:`~seethrough.VisionModel` or an ``nn.Module``.
    """
    module = module_of(model)
    return [n for n, m in reversed(list(module.named_modules())) if n and _own_parameters(m)]


def _steps(module: nn.Module, layers: int | Sequence[str] | None) -> list[str]:
    """The names randomised at each step, checked against the model."""
    default = randomizable_layers(module)
    if layers is None:
        if not default:
            raise InvalidParameterError("the model has no parameters to randomise")
        return default
    if isinstance(layers, bool):
        raise InvalidParameterError(f"layers={layers!r}: give a number of steps or layer names")
    if isinstance(layers, int):
        if not 1 <= layers <= len(default):
            raise InvalidParameterError(
                f"layers={layers}: the model has {len(default)} layers with parameters, "
                f"give a number from 1 to {len(default)}"
            )
        return default[:layers]
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise InvalidParameterError("layers is empty: give at least one layer name")
    named = named_modules(module)
    for name in names:
        if not isinstance(name, str) or name not in named or name == "":
            hint = suggest(str(name), [n for n in named if n]) or (
                f" Layers with parameters: {', '.join(default[:8])}"
                + (" ..." if len(default) > 8 else "")
                + "."
            )
            raise UnknownLayerError(f"no layer named '{name}' in this model.{hint}")
        if not any(True for _ in named[name].parameters()):
            raise InvalidParameterError(f"layer '{name}' has no parameters to randomise")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidParameterError(f"layer given twice: {', '.join(repeated)}")
    return names


@torch.no_grad()
def _reinitialise(module: nn.Module, seed: int, step: int) -> None:
    """Re-initialise every parametrised module in ``module``'s subtree, seeded by (seed, step).

    ``reset_parameters()`` where a module has one; otherwise each own parameter is replaced by
    normal noise with the tensor's mean and standard deviation (1 when it has none).
    """
    state = int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0])
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    generator = torch.Generator().manual_seed(state)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(state)
        for sub in module.modules():
            own = _own_parameters(sub)
            if not own:
                continue
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for p in own:
                data = p.detach().double()
                mean = float(data.mean()) if p.numel() else 0.0
                std = float(data.std()) if p.numel() > 1 else 0.0
                std = std if std > 0 and np.isfinite(std) else 1.0
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                p.copy_((noise * std + mean).to(p.device, p.dtype))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps, each min-max normalised to [0, 1] (``data_range=1``)."""

    def unit(m: np.ndarray) -> np.ndarray:
        lo, hi = m.min(), m.max()
        return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)

    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise InvalidParameterError(
            f"maps of shape {a.shape} are too small for SSIM (3x3 at least)"
        )
    return float(structural_similarity(unit(a), unit(b), data_range=1.0, win_size=win))


def _similarities(original: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    """``(spearman, spearman of absolute values, ssim)`` of two maps of the same shape."""
    a, b = as_map(original, "original"), as_map(other, "other")
    if a.shape != b.shape:
        raise InvalidParameterError(f"maps of shapes {a.shape} and {b.shape} cannot be compared")
    spearman = _correlations(a, b)[1]
    spearman_abs = _correlations(np.abs(a), np.abs(b))[1]
    return spearman, spearman_abs, _ssim(a, b)


@dataclass
class RandomizationResult:
    """:func:`cascading_randomization` of one explanation: one entry per step.

    Step ``k`` has the layers ``layers[0..k]`` re-initialised (cumulative, output side first).

    Attributes:
        method: the explanation method.
        target: the class explained at every step (fixed to the original model's).
        layer: the layer the method looked at (the same at every step), if it needs one.
        layers: the layer randomised at each step.
        spearman: Spearman rank correlation of the original map and each step's map.
        spearman_abs: the same on absolute values.
        ssim: structural similarity of the min-max normalised maps.
        original: the map of the intact model.
        maps: each step's map (``None`` unless ``keep_maps=True``).
    """

    method: str
    target: int
    layer: str | None
    layers: list[str]
    spearman: np.ndarray
    spearman_abs: np.ndarray
    ssim: np.ndarray
    original: np.ndarray = field(repr=False)
    maps: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def final_similarity(self) -> float:
        """Spearman correlation after the last step (every listed layer randomised)."""
        return float(self.spearman[-1])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (maps left out)."""
        return {
            "method": self.method,
            "target": self.target,
            "layer": self.layer,
            "layers": list(self.layers),
            "spearman": self.spearman.tolist(),
            "spearman_abs": self.spearman_abs.tolist(),
            "ssim": self.ssim.tolist(),
            "final_similarity": self.final_similarity,
        }


def _copy_model(model: Any) -> Any:
    """A copy of ``model`` whose network is a deep copy (the user's is never touched).

    A detector's or a segmenter's runner holds the network (and its adapter, which hooks into
    it): the network and one runner are copied together, so the copy's runner runs the copy.
    """
    from ..models import VisionModel

    own = getattr(model, "_runner", None) if isinstance(model, VisionModel) else None
    try:
        module, runner = copy.deepcopy((module_of(model), own() if own is not None else None))
    except (RuntimeError, TypeError, copy.Error) as exc:
        raise InvalidParameterError(
            f"the model cannot be copied for randomisation: {exc}"
        ) from None
    if not isinstance(model, VisionModel):
        return module
    clone = copy.copy(model)
    clone.module = module
    if runner is not None:
        clone._runner = lambda: copy.copy(runner)
    return clone


@register_metric(
    title="Cascading randomization",
    category="randomization",
    higher_is_better=False,
    needs=("model", "image", "method"),
    range=(-1, 1),
    rank=10,
)
def cascading_randomization(
    model: Any,
    image: Any,
    method: str = "gradcam",
    *,
    target: Any = None,
    layer: Any = None,
    layers: int | Sequence[str] | None = None,
    seed: int = 0,
    keep_maps: bool = False,
    progress: Callable[[int, int], Any] | None = None,
    **method_params: Any,
) -> RandomizationResult:
    """Similarity of the map to the original as the model's weights are randomised, top down.

    Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018 (cascading randomization):
    on a deep copy of the model, the parametrised layers are re-initialised one step at a time
    from the output to the input, cumulatively. After step ``k`` the map ``S_k`` of the same
    class as the original is compared to the original map ``S_0``:

        rho_k = spearman(S_0, S_k),   rho_k^abs = spearman(|S_0|, |S_k|),
        ssim_k = SSIM(norm(S_0), norm(S_k))   (min-max normalised to [0, 1], data range 1).

    A method that explains the model should see these fall towards 0; one whose maps survive the
    loss of the weights fails the sanity check. The registered number is
    :attr:`RandomizationResult.final_similarity`, ``rho`` after the last step, in [-1, 1]
    (lower is better). A constant map against a varying one counts as Spearman 0.

    Re-initialisation uses each module's ``reset_parameters()`` where it has one (batch norm:
    scale 1, shift 0 and fresh running statistics), otherwise normal noise with the tensor's
    mean and standard deviation, seeded by ``seed`` and the step
    (deterministic, the global random state is left as it was). The user's model is never
    modified. Methods that need a layer use the same layer (by name) at every step.

    Args:
        model: a :class:`~seethrough.VisionModel` or a plain ``nn.Module``.
        image: one image, as :func:`seethrough.explain` accepts it.
        method: the explanation method's registry name.
        target: the class to explain (index or label), or a detector's
            :class:`~seethrough.targets.Box` or a segmenter's :class:`~seethrough.targets.Mask`;
            ``None``: the intact model's default (top class, top box, most frequent class). A
            box or a mask is fixed on the intact model (its corners and label, re-matched by
            IoU in each randomised model's boxes; its pixels) so every step explains the same
            region.
        layer: the layer, for methods that need one (default: the model's default layer).
        layers: what to randomise: ``None`` for every module with parameters of its own, in
            reverse ``named_modules()`` order (see :func:`randomizable_layers`); a number ``n``
            for the first ``n`` of those; or a list of module names, randomised in the order
            given (a module's whole subtree is re-initialised at its step).
        seed: seed of the re-initialisation.
        keep_maps: keep each step's map in :attr:`RandomizationResult.maps`.
        progress: ``progress(done, total)`` called after each map (``total`` is the number of
            steps plus one, for the original); returning ``False`` cancels with
            :class:`~seethrough.errors.CancelledError`.
        **method_params: the method's parameters, passed to :func:`seethrough.explain`.

    Returns:
        A :class:`RandomizationResult`.
    """
    from ..api import explain

    framework = getattr(model, "framework", "pytorch")
    if framework != "pytorch":
        raise MethodNotApplicableError(
            f"cascading_randomization re-initialises a PyTorch model's layers; a {framework} "
            "model's weights live in its own framework and are not randomised yet"
        )
    info = get_method(method)
    user = module_of(model)
    steps = _steps(user, layers)
    if isinstance(layer, nn.Module):
        layer = resolve_layer(user, layer)[0]
    probe = ModelProbe.create(model, image, target)
    x, cls, fixed = probe.x, probe.target, probe.fixed()
    total = len(steps) + 1

    def tick(done: int) -> None:
        if progress is not None and progress(done, total) is False:
            raise CancelledError(f"cancelled after {done} of {total} maps")

    clone = _copy_model(model)
    module = module_of(clone)
    named = named_modules(module)
    first = explain(clone, x, method, [fixed], layer, **method_params)[0]
    used = first.layer if info.needs_layer else None
    if used is not None:
        layer = used  # the default is resolved once, on the intact copy
    original = first.map.astype(np.float64)
    tick(1)
    results: list[tuple[float, float, float]] = []
    maps: list[np.ndarray] = []
    for k, name in enumerate(steps):
        _reinitialise(named[name], seed, k)
        found = explain(clone, x, method, [fixed], layer, **method_params)[0]
        results.append(_similarities(original, found.map))
        if keep_maps:
            maps.append(found.map)
        tick(k + 2)
    values = np.array(results, dtype=np.float64).reshape(-1, 3)
    return RandomizationResult(
        method=first.method,
        target=cls,
        layer=used,
        layers=list(steps),
        spearman=values[:, 0],
        spearman_abs=values[:, 1],
        ssim=values[:, 2],
        original=first.map,
        maps=maps if keep_maps else None,
    )
