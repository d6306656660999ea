"""Feature inversion and feature visualisation: optimise an input image by gradient descent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from ...core import perturb
from ...core.progress import Ticker
from ...core.targets import ResolvedTarget
from ...errors import InvalidParameterError
from ...registry import Param, register_method
from ..base import Context, Method, MethodResult
from ..params import SEED

__all__ = ["FeatureInversion", "total_variation", "gaussian_blur", "display_images"]

OBJECTIVES = ("invert", "class", "channel")
INIT_SCALE = 0.1  # standard deviation of the starting noise, in model-input units
BLUR_SIGMA = 0.5  # pixels

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (output, acts) -> (N,)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """``mean_{c,i,j} (x[c,i+1,j] - x[c,i,j])^2 + mean_{c,i,j} (x[c,i,j+1] - x[c,i,j])^2`` ``(N,)``."""
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).flatten(1).mean(1)
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).flatten(1).mean(1)
    return dy + dx


def gaussian_blur(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of each channel of ``x`` ``(N, C, H, W)`` (reflected borders, a
    kernel of radius ``ceil(2 * sigma)``): :func:`seethrough.core.perturb.gaussian_blur`."""
    return perturb.gaussian_blur(x, sigma, truncate=2.0, border="reflect")


def display_images(
    x: torch.Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None
) -> torch.Tensor:
    """Model inputs ``(N, C, H, W)`` as uint8 ``(N, H, W, 3)``: ``x * std + mean`` clipped to
    [0, 1] when the normalisation is known, else min-max scaled per image."""
    x = x.detach().float()
    if normalization is not None:
        mean, std = (
            torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for v in normalization
        )
        x = (x * std + mean).clamp(0, 1)
    else:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


@register_method
class FeatureInversion(Method):
    """An input image optimised to reproduce a layer's representation, or to excite a unit.

    Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them", CVPR
    2015; Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017. From seeded
    noise ``x`` (in model-input space), Adam minimises ``L(x) = E(x) + tv * TV(x)`` with::

        invert:  E = ||phi(x) - phi(x_0)||^2 / ||phi(x_0)||^2   (phi: the layer, x_0: the image)
        class:   E = -y_target(x)                                (the target's score, a logit)
        channel: E = -mean_ij phi(x)[channel, i, j]
        TV(x) = mean (x[i+1, j] - x[i, j])^2 + mean (x[i, j+1] - x[i, j])^2

    Each step evaluates ``L`` on ``x`` rolled by a random shift of up to ``jitter`` pixels
    (transformation robustness) and, every ``blur_every`` steps, blurs ``x`` (Gaussian,
    sigma 0.5 pixel). ``raw = map`` is where the optimised image departs from its mean colour:
    ``mean_c |x[c, i, j] - mean_ij x[c, i, j]|`` ``(H, W)``.

    Extras: ``inverted`` (C, H, W) float32 (model-input space), ``inverted_image`` (H, W, 3)
    uint8 (denormalised with the model's mean and std when known, else min-max), ``loss``
    (n_steps,) the curve of ``L`` during the optimisation. Stats: ``initial_loss`` (first step),
    ``final_loss`` (``L`` of the returned image, without jitter) and ``loss_ratio`` (initial /
    final). The same seed gives the same image. Only ``objective="class"`` uses the target.
    """

    name = "feature_inversion"
    title = "Feature inversion"
    rank = 20
    family = "features"
    paper = "Mahendran & Vedaldi, CVPR 2015; Olah et al., Distill 2017 (feature visualisation)"
    needs_gradients = True
    needs_layer = True
    class_specific = False
    reports_progress = True  # per optimisation step
    params = (
        Param(
            "objective",
            "invert",
            "'invert' (match the image's representation at the layer), 'class' (maximise the "
            "target score) or 'channel' (maximise a channel's mean at the layer)",
            str,
            OBJECTIVES,
        ),
        Param("n_steps", 200, "optimisation steps (Adam)", int, min=1),
        Param("lr", 0.05, "Adam learning rate (model-input units)", float, min=0.0),
        Param("tv", 1e-2, "weight of the total-variation regulariser", float, min=0.0),
        Param("jitter", 4, "random roll of up to this many pixels at each step", int, min=0),
        Param("blur_every", 0, "blur the image every this many steps (0: never)", int, min=0),
        Param("channel", 0, "channel maximised by objective='channel'", int, min=0),
        replace(SEED, help="seed of the starting noise and the jitter"),
    )

    def run(self, ctx: Context) -> MethodResult:
        """Resolve the targets on the clean output, then optimise one image at a time."""
        output = ctx.outputs(ctx.x)
        target = ctx.resolve(output)
        ticker = Ticker(ctx, self.config["n_steps"] * ctx.x.shape[0])
        with ctx.many_inputs(ticker.total):
            runs = [self._optimise(ctx, i, target.select([i]), ticker) for i in range(len(target))]
        x, curve, final = (torch.cat(parts) for parts in zip(*runs, strict=True))
        return self._result(ctx, x, curve, final, output, target)

    def _optimise(
        self, ctx: Context, i: int, target: ResolvedTarget, ticker: Ticker
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Optimise image ``i`` alone: its result does not depend on the rest of the batch
        (Adam's normalised steps would amplify the rounding differences of batched passes).

        Returns the optimised image ``(1, C, H, W)``, the loss curve ``(1, n_steps)`` and the
        final loss ``(1,)``.
        """
        p = self.config
        layer = str(ctx.layer)
        with ctx.runner.record({layer: ctx.layer_module}) as rec:
            with torch.no_grad():
                ctx.forward(ctx.x[i : i + 1])
            objective = self._objective(target, rec.output(layer).detach())

            def loss_of(x: torch.Tensor, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
                out = ctx.forward(x.roll(shift, dims=(2, 3)))
                return objective(out, rec.output(layer)) + p["tv"] * total_variation(x)

            gen = torch.Generator().manual_seed(p["seed"])
            noise = torch.randn((1, *ctx.x.shape[1:]), generator=gen, dtype=torch.float64)
            x = (INIT_SCALE * noise).to(ctx.x).requires_grad_(True)
            shifts = torch.randint(-p["jitter"], p["jitter"] + 1, (p["n_steps"], 2), generator=gen)
            opt = torch.optim.Adam([x], lr=p["lr"])
            curve = []
            for step, shift in enumerate(shifts.tolist()):
                with torch.enable_grad():
                    loss = loss_of(x, tuple(shift))
                    x.grad = torch.autograd.grad(loss.sum(), x)[0]
                opt.step()
                if p["blur_every"] and (step + 1) % p["blur_every"] == 0:
                    with torch.no_grad():
                        x.copy_(gaussian_blur(x))
                curve.append(loss.detach())
                ticker.advance(1)
            with torch.no_grad():
                final = loss_of(x)
        return x.detach(), torch.stack(curve, dim=1), final

    def _objective(self, target: ResolvedTarget, reference: torch.Tensor) -> Objective:
        """``E(output, acts)`` per image ``(N,)`` for the chosen objective."""
        kind = self.config["objective"]
        if kind == "class":
            return lambda out, acts: -target(out)
        if kind == "channel":
            ch = self.config["channel"]
            if reference.dim() < 2 or ch >= reference.shape[1]:
                raise InvalidParameterError(
                    f"channel={ch}: the layer has {reference.shape[1] if reference.dim() > 1 else 0} channels"
                )
            return lambda out, acts: -acts[:, ch].reshape(acts.shape[0], -1).mean(1)
        norm = reference.pow(2).flatten(1).sum(1).clamp_min(1e-12)
        return lambda out, acts: (acts - reference).pow(2).flatten(1).sum(1) / norm

    def _result(
        self,
        ctx: Context,
        x: torch.Tensor,
        curve: torch.Tensor,
        final: torch.Tensor,
        output: torch.Tensor,
        target: ResolvedTarget,
    ) -> MethodResult:
        raw = (x - x.mean(dim=(2, 3), keepdim=True)).abs().mean(dim=1)
        initial = curve[:, 0]
        stats = [
            {
                "initial_loss": float(a),
                "final_loss": float(b),
                "loss_ratio": float(a / b) if b != 0 else float("inf"),
            }
            for a, b in zip(initial.tolist(), final.tolist(), strict=True)
        ]
        return ctx.result(
            raw,
            raw,
            output,
            target,
            stats=stats,
            inverted=x.float(),
            inverted_image=display_images(x, ctx.normalization),
            loss=curve.float(),
        )
