"""The pipeline shared by the perturbation family: per image, hide parts, score, summarise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ...core.inputs import image_parameter
from ...core.targets import ResolvedTarget
from ...errors import MethodNotApplicableError
from ..base import Context, Method, MethodResult
from .engine import (
    BATCH_SIZE,
    HIDE,
    HIDE_KEYWORDS,
    SCORE,
    SEED,
    FeatureMasks,
    Ticker,
    auto_batch_size,
    evaluate,
    hidden_image,
)

__all__ = ["PerturbationMethod", "Sample", "Single", "DistinctCoalitions"]


@dataclass
class Sample:
    """One image of the batch, ready to be perturbed.

    Attributes:
        index: position in the batch.
        x: model input ``(1, C, H, W)``.
        hidden: replacement image ``(1, C, H, W)``.
        image: the uint8 image the model sees (for segmentation).
        score: model output to scores ``(B, T)`` of the explained targets (column 0 = the target).
        classes: class index of each column (``None`` for a callable target).
        generator: this image's seeded random generator.
        clean: the model's output on the unperturbed image ``(1, ...)`` (from the clean
            forward every method starts with: no method needs to evaluate it again).
    """

    index: int
    x: torch.Tensor
    hidden: torch.Tensor
    image: np.ndarray
    score: Callable[[torch.Tensor], torch.Tensor]
    classes: list[int | None]
    generator: torch.Generator
    clean: torch.Tensor


@dataclass
class Single:
    """What a method computed for one image: map ``(H, W)``, extra arrays, scalar stats."""

    map: torch.Tensor
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


class PerturbationMethod(Method):
    """Shared pipeline: one clean forward, then per image a seeded run of masked evaluations.

    Every image uses a fresh generator seeded with ``seed``, so an image gets the same
    explanation alone or in a batch, and the same seed gives the same result bit for bit.
    """

    family = "perturbation"
    needs_gradients = False
    reports_progress = True  # per batch of perturbed inputs (the engine's ticker)
    params = (HIDE, SCORE, BATCH_SIZE, SEED)
    extra_targets = 0  # variants that explain several classes at once raise this per call

    def run(self, ctx: Context) -> MethodResult:
        """Clean forward, resolve targets, explain each image, stack the maps."""
        hide = image_parameter("hide", self.config["hide"], ctx.x, keywords=HIDE_KEYWORDS)
        output = ctx.outputs(ctx.x)  # in chunks: memory of a chunk, not of the batch
        target = ctx.resolve(output)
        batch = self.config["batch_size"] or auto_batch_size(ctx)
        ticker = Ticker(ctx, self.evaluations(ctx) * ctx.x.shape[0])
        singles = [
            self.explain_one(ctx, self._sample(ctx, i, output, target, hide), batch, ticker)
            for i in range(ctx.x.shape[0])
        ]
        maps = torch.stack([s.map.float().cpu() for s in singles])
        extras = {k: [s.extras[k] for s in singles] for k in singles[0].extras}
        return ctx.result(maps, maps, output, target, stats=[s.stats for s in singles], **extras)

    def _sample(
        self,
        ctx: Context,
        i: int,
        output: torch.Tensor,
        target: ResolvedTarget,
        hide: float | str | torch.Tensor,
    ) -> Sample:
        generator = torch.Generator().manual_seed(self.config["seed"])
        x = ctx.x[i : i + 1]
        if isinstance(hide, torch.Tensor) and hide.dim() == 4 and hide.shape[0] > 1:
            hide = hide[i]  # one hide image per input image
        hidden = hidden_image(x, hide, generator)
        primary = target.classes[i]
        if target.fns[i] is not None:  # a callable, a box, a mask: its own score function
            row = target.row(i)
            return Sample(
                i,
                x,
                hidden,
                ctx.image(i),
                lambda out: row(out)[:, None],
                [primary],
                generator,
                output[i : i + 1],
            )
        if output.dim() != 2:
            raise MethodNotApplicableError(
                f"{self.name} with a class target needs (N, classes) model outputs; got "
                f"{tuple(output.shape)}: pass a callable target"
            )
        # one transfer of the few top classes (iterating a GPU tensor would sync per element)
        top = output[i].topk(min(self.extra_targets + 1, output.shape[1])).indices.tolist()
        classes = [primary, *[c for c in top if c != primary][: self.extra_targets]]
        idx = torch.tensor(classes, device=output.device)
        if self.config["score"] == "probability":
            score = lambda out: out.softmax(dim=1)[:, idx]  # noqa: E731
        else:
            score = lambda out: out[:, idx]  # noqa: E731
        return Sample(
            i, x, hidden, ctx.image(i), score, list(classes), generator, output[i : i + 1]
        )

    def scores(
        self,
        ctx: Context,
        s: Sample,
        masks: object,
        batch: int,
        ticker: Ticker,
        each: Callable[[torch.Tensor, torch.Tensor], object] | None = None,
    ) -> torch.Tensor:
        """Scores ``(M, T)`` of ``s`` under ``masks`` (see :func:`.engine.evaluate`)."""
        return evaluate(ctx, s.x, s.hidden, masks, s.score, batch, ticker, each)  # type: ignore[arg-type]

    def evaluations(self, ctx: Context) -> int:
        """Model evaluations per image (for the progress total)."""
        raise NotImplementedError

    def explain_one(self, ctx: Context, s: Sample, batch: int, ticker: Ticker) -> Single:
        """Explain one image."""
        raise NotImplementedError


class DistinctCoalitions(PerturbationMethod):
    """A variant whose feature coalitions repeat (Shapley value sampling: the empty and the
    full coalition in every permutation) or include the unperturbed image (feature ablation):
    each distinct coalition is evaluated once, and the full one (every feature kept: the image
    itself) not at all, its score taken from the clean forward. The ticker's total drops by
    the evaluations saved; ``each`` sees the evaluated batches only."""

    def scores(
        self,
        ctx: Context,
        s: Sample,
        masks: object,
        batch: int,
        ticker: Ticker,
        each: Callable[[torch.Tensor, torch.Tensor], object] | None = None,
    ) -> torch.Tensor:
        """Scores ``(M, T)`` of ``s`` under ``masks``, each distinct coalition once."""
        if not isinstance(masks, FeatureMasks):
            return super().scores(ctx, s, masks, batch, ticker, each)
        z = masks.z
        distinct, inverse = torch.unique(z.cpu(), dim=0, return_inverse=True)
        full = distinct.sum(1) == z.shape[1]
        ticker.total -= len(z) - len(distinct) + int(full.any())
        clean = s.score(s.clean).double().cpu()  # (1, T)
        y = clean.expand(len(distinct), -1).clone()
        rest = FeatureMasks(distinct[~full].to(z.device, z.dtype), masks.segments)
        if len(rest):
            y[~full] = evaluate(ctx, s.x, s.hidden, rest, s.score, batch, ticker, each)
        return y[inverse]
