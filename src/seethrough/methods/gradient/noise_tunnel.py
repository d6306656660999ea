"""Noise tunnel: SmoothGrad, SmoothGrad squared or VarGrad over any gradient method."""

from __future__ import annotations

from dataclasses import replace

import torch

from ...core.targets import ResolvedTarget
from ...errors import InvalidParameterError
from ...registry import Param, get_method, register_method
from ..base import Context
from .base import INTERNAL_BATCH, SEED, Attribution, GradientMethod, reduce_param
from .smoothgrad import N_SAMPLES, noisy_moments

__all__ = ["NoiseTunnel", "BASES", "KINDS", "parse_base_params"]

BASES = (
    "saliency",
    "input_x_gradient",
    "guided_backprop",
    "deconvnet",
    "integrated_gradients",
    "gradient_shap",
    "deeplift",
    "deeplift_shap",
)
"""The gradient methods a noise tunnel can wrap."""

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")
"""How the attributions of the noisy copies are combined."""


def parse_base_params(base: str, text: str) -> GradientMethod:
    """The method ``base`` with the parameters of ``text``, ``"name=value,name=value"``.

    Each value is checked and converted by ``base``'s own parameter schema, as the CLI's
    ``--param name=value`` values are. Raises ``InvalidParameterError`` naming ``base_params``.
    """
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidParameterError(
                f"base_params={text!r}: write name=value pairs separated by commas, e.g. "
                "'n_steps=16,integration=riemann_middle'"
            )
        values[name.strip()] = value.strip()
    try:
        method = get_method(base).cls(**values)
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"base_params: {exc}") from None
    assert isinstance(method, GradientMethod)  # every name of BASES is one
    return method


@register_method
class NoiseTunnel(GradientMethod):
    """A gradient method (``base``) run on noisy copies of the input, combined by ``kind``.

    Smilkov et al., "SmoothGrad: removing noise by adding noise", ICML workshop 2017
    (SmoothGrad and its square); Adebayo et al., "Local Explanation Methods for Deep Neural
    Networks Lack Sensitivity to Parameter Values", ICLR workshop 2018 (VarGrad). With ``A``
    the base method's attribution and ``eps_k ~ N(0, stdev^2)`` (model-input units)::

        smoothgrad:     a = 1/n sum_k A(x + eps_k)
        smoothgrad_sq:  a = 1/n sum_k A(x + eps_k)^2
        vargrad:        a = 1/n sum_k A(x + eps_k)^2 - (1/n sum_k A(x + eps_k))^2

    The base explains the class chosen on the clean input. Its own parameters are given as
    one string, ``base_params="n_steps=16,integration=riemann_middle"`` (from the CLI:
    ``--param base_params=n_steps=16``), checked against the base's parameters; images (a
    baseline image) cannot be given this way. The paper's noise is a fraction of the input's
    value range (10-20%); here ``stdev`` is absolute, as in Captum's ``NoiseTunnel``: the
    default 0.5 is about 10% of the range of an ImageNet-normalised image. The noise is drawn
    as SmoothGrad draws it (:func:`~seethrough.methods.gradient.smoothgrad.noisy_moments`):
    the same seed gives the same result on the same device.

    Sanity: over saliency it passes the cascading randomization check (its maps decorrelate
    as the upper layers are randomised); over guided backprop or the deconvnet, which fail
    it, expect no better.
    """

    name = "noise_tunnel"
    title = "Noise Tunnel"
    rank = 55
    swaps_modules = True  # the base may swap modules
    reports_progress = True  # per batch of noisy copies
    paper = "Smilkov et al., 2017; Adebayo et al., 2018"
    params = (
        Param(
            "base", "saliency", "the gradient method run on the noisy copies", str, choices=BASES
        ),
        Param(
            "kind",
            "smoothgrad",
            "'smoothgrad' (mean), 'smoothgrad_sq' (mean of squares) or 'vargrad' (variance)",
            str,
            choices=KINDS,
        ),
        replace(N_SAMPLES, default=25, help="noisy copies per image"),
        Param("stdev", 0.5, "noise std in model-input units", float, min=0),
        Param(
            "base_params",
            "",
            "the base method's parameters as 'name=value,name=value' (e.g. 'n_steps=16')",
            str,
        ),
        reduce_param("abs_max"),
        INTERNAL_BATCH,
        SEED,
    )

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """The base on noisy copies in batches, combined by ``kind``."""
        p = self.config
        inner = parse_base_params(p["base"], p["base_params"])
        sigma = torch.full((ctx.x.shape[0],), p["stdev"], dtype=ctx.x.dtype, device=ctx.x.device)
        moments = 1 if p["kind"] == "smoothgrad" else 2
        output, target, found = noisy_moments(
            ctx, inner, target, sigma, p["n_samples"], p["batch_size"], p["seed"], moments
        )
        if p["kind"] == "smoothgrad":
            a = found[0]
        elif p["kind"] == "smoothgrad_sq":
            a = found[1]
        else:
            a = found[1] - found[0] ** 2
        return Attribution(a, output, target)
