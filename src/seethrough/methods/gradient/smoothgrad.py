"""SmoothGrad (a wrapper around any gradient method) and Gradient SHAP."""

from __future__ import annotations

import dataclasses

import torch

from ...core.inputs import image_parameter
from ...core.targets import ResolvedTarget
from ...registry import Param, get_method, register_method
from ..base import Context
from ..params import N_SAMPLES as _N_SAMPLES
from .base import (
    BASELINE,
    BASELINE_KEYWORDS,
    INTERNAL_BATCH,
    SEED,
    Attribution,
    GradientMethod,
    accumulate,
    baseline_image,
    clean_output,
    input_gradients,
    normal_noise,
    reduce_param,
    rows,
)

__all__ = ["SmoothGrad", "GradientShap", "noisy_moments", "baseline_set"]

N_SAMPLES = dataclasses.replace(_N_SAMPLES, default=50, help="noisy samples averaged per image")


def _as_target_list(target: ResolvedTarget) -> list:
    """A user-style per-sample target list that resolves to ``target`` again."""
    return [fn if fn is not None else c for c, fn in zip(target.classes, target.fns, strict=True)]


@register_method
class SmoothGrad(GradientMethod):
    """Any gradient method averaged over noisy copies of the input.

    Smilkov et al., "SmoothGrad: removing noise by adding noise", ICML workshop 2017::

        a = 1/n sum_{i=1}^{n} A(x + eps_i),   eps_i ~ N(0, (noise * (max(x) - min(x)))^2)

    where ``A`` is the ``wrapped`` gradient method (with its default parameters) explaining the class
    chosen on the clean input. The noisy copies go through ``A`` ``batch_size`` at a
    time. The noise is drawn where the model runs (see
    :func:`~seethrough.methods.gradient.base.normal_noise`): the same seed gives the same
    result on the same device, and a GPU draws other noise than the CPU.
    """

    name = "smoothgrad"
    title = "SmoothGrad"
    rank = 50
    swaps_modules = True  # the wrapped method may be guided backprop
    reports_progress = True  # per batch of noisy copies
    paper = "Smilkov et al., ICML workshop 2017"
    params = (
        Param(
            "wrapped",
            "saliency",
            "the gradient method to smooth (named 'wrapped', as explain() takes 'method')",
            str,
            choices=("saliency", "guided_backprop", "integrated_gradients", "gradient_shap"),
        ),
        reduce_param("abs_max"),
        Param("noise", 0.15, "noise std as a fraction of each image's value range", float, min=0),
        N_SAMPLES,
        INTERNAL_BATCH,
        SEED,
    )

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """Draw the noisy copies, run the wrapped method on them in batches, average."""
        p = self.config
        inner = get_method(p["wrapped"]).cls()
        x = ctx.x
        sigma = (x.flatten(1).amax(1) - x.flatten(1).amin(1)) * p["noise"]
        output, target, (mean,) = noisy_moments(
            ctx, inner, target, sigma, p["n_samples"], p["batch_size"], p["seed"]
        )
        return Attribution(mean, output, target)


def noisy_moments(
    ctx: Context,
    inner: GradientMethod,
    target: ResolvedTarget | None,
    sigma: torch.Tensor,
    samples: int,
    batch_size: int,
    seed: int,
    moments: int = 1,
) -> tuple[torch.Tensor, ResolvedTarget, list[torch.Tensor]]:
    """The first ``moments`` raw moments of a gradient method over noisy copies of the input.

    With ``eps_k`` standard normal noise of the input's shape (``samples`` draws from ``seed``,
    shared by the images of the batch, see
    :func:`~seethrough.methods.gradient.base.normal_noise`)::

        [1/n sum_k A(x + sigma * eps_k) ** j  for j = 1 .. moments]

    where ``A`` is ``inner``'s attribution (``(N, C, H, W)``) of each image's ``target`` and
    ``sigma`` ``(N,)`` each image's noise std. The noisy copies go through ``inner``
    ``batch_size`` at a time (``0``: chosen to fit memory). ``target`` (``None``: the model's
    default) is resolved on the clean input first
    (:func:`~seethrough.methods.gradient.base.clean_output`), in the same layout block as the
    copies: the weights are switched to channels-last once, and the clean forward runs in that
    layout too.

    Returns:
        The clean output, the resolved target, and one ``(N, C, H, W)`` tensor per moment.
    """
    x = ctx.x
    generator = torch.Generator().manual_seed(seed)
    noise = normal_noise((samples, *x.shape[1:]), generator, x)
    with ctx.many_inputs(x.shape[0] * (samples + 1)):
        output, resolved = clean_output(ctx, target)

        def term(i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            noisy = rows(x, i) + rows(sigma, i).view(-1, 1, 1, 1) * rows(noise, k)
            sub_target = resolved.select(i.tolist())
            sub = dataclasses.replace(
                ctx, x=noisy, target=_as_target_list(sub_target), progress=None
            )
            a = inner.attribute(sub, sub_target).attributions
            return a if moments == 1 else torch.cat([a**j for j in range(1, moments + 1)], dim=1)

        total = accumulate(ctx, samples, batch_size, term, copies=moments) / samples
    return output, resolved, list(total.chunk(moments, dim=1))


@register_method
class GradientShap(GradientMethod):
    """Expected gradients: gradients at random points between baselines and the input.

    Lundberg & Lee, NeurIPS 2017 (GradientExplainer); Erion et al., "Improving performance of
    deep learning models with axiomatic attribution priors and expected gradients", 2021. With
    baselines ``x'`` drawn from the ``baseline`` distribution (one image, or a fresh one per
    sample for ``"noise"``, or a batch of images) and ``t ~ U(0, 1)``::

        a = 1/n sum_i (x - x'_i) * grad y(x'_i + t_i (x + eps_i - x'_i))

    with optional input noise ``eps_i ~ N(0, noise^2)`` (model-input units). Its expectation is
    integrated gradients averaged over the baselines, so ``sum(a)`` approaches
    ``y(x) - E[y(x')]``.
    """

    name = "gradient_shap"
    title = "Gradient SHAP"
    rank = 60
    paper = "Lundberg & Lee, NeurIPS 2017; Erion et al., 2021"
    reports_progress = True  # per batch of path points
    params = (
        reduce_param("sum"),
        BASELINE,
        N_SAMPLES,
        Param(
            "noise",
            0.0,
            "std of Gaussian noise added to the input (model-input units)",
            float,
            min=0,
        ),
        INTERNAL_BATCH,
        SEED,
    )

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """Random baselines and path points, batched gradients, averaged per image."""
        p = self.config
        x, n, m = ctx.x, ctx.x.shape[0], p["n_samples"]
        generator = torch.Generator().manual_seed(p["seed"])
        baselines = self._baselines(ctx, generator)  # (N or M, ...) candidates, checked first
        output, target = clean_output(ctx, target)
        pick = (
            torch.randint(len(baselines), (m,), generator=generator)
            if len(baselines) != n
            else None
        )
        t = torch.rand(m, generator=generator, dtype=torch.float64)
        # the last draw, so skipping it when it is multiplied by 0 changes nothing else
        eps = normal_noise((m, *x.shape[1:]), generator, x, p["noise"]) if p["noise"] else None

        def term(i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            b = baselines[pick[k]] if pick is not None else rows(baselines, i)
            xi = rows(x, i)
            noisy = xi + rows(eps, k) if eps is not None else xi
            tk = t[k].to(x.device, x.dtype).view(-1, 1, 1, 1)
            grads, _, _ = input_gradients(ctx, b + tk * (noisy - b), target.select(i.tolist()))
            return grads * (xi - b)

        return Attribution(accumulate(ctx, m, p["batch_size"], term) / m, output, target)

    def _baselines(self, ctx: Context, generator: torch.Generator) -> torch.Tensor:
        return baseline_set(ctx, self.config["baseline"], self.config["n_samples"], generator)


def baseline_set(
    ctx: Context, baseline: object, samples: int, generator: torch.Generator
) -> torch.Tensor:
    """The baselines an expectation method draws from, for the batch ``ctx.x`` ``(N, ...)``.

    A set of images whose count is not N is returned as it is (a distribution to draw from);
    ``"noise"`` gives ``samples`` standard normal images (model-input units); anything else is
    one baseline per image (:func:`~seethrough.methods.gradient.base.baseline_image`, N rows).
    """
    base = image_parameter("baseline", baseline, ctx.x, keywords=BASELINE_KEYWORDS, any_count=True)
    if isinstance(base, torch.Tensor) and base.dim() == 4 and base.shape[0] != ctx.x.shape[0]:
        return base  # a set of baselines to draw from
    if isinstance(base, str) and base == "noise":
        return normal_noise((samples, *ctx.x.shape[1:]), generator, ctx.x)
    return baseline_image(ctx, ctx.x, base, generator)
