"""What every explanation method shares: parameters, the call protocol, state protection."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..core.batching import ONE_PASS, BatchPolicy, auto_batch_size
from ..core.layers import LayerRef
from ..core.progress import Progress, Ticker
from ..core.runner import ModelRunner, TorchRunner, as_runner
from ..core.targets import (
    ClassIndexer,
    ResolvedTarget,
    TargetLike,
    class_scores,
    resolve_target,
)
from ..errors import InvalidParameterError, InvalidTargetError, MethodNotApplicableError
from ..models.vision_model import ModelInfo
from ..registry import DEFAULT_RANK, Param, validate_params
from .params import RELU

__all__ = [
    "Method",
    "MethodResult",
    "Context",
    "ModelRunner",
    "TorchRunner",
    "Progress",
    "Ticker",
    "RELU",
    "CHUNK_VALUES",
    "chunk_size",
    "merge_results",
]

CHUNK_VALUES = ONE_PASS.cpu_values
"""Input values per pass of the methods that run a batch in chunks of images, on the CPU: 16
images of 224x224 (see :data:`~seethrough.core.batching.ONE_PASS`, where it was measured).
Every one-pass policy off CUDA scales with it (:func:`chunk_size`)."""


@dataclass
class MethodResult:
    """What a method computed for a batch of N samples (all tensors have N first).

    Attributes:
        raw: the signed, un-normalised map at the method's own resolution ``(N, h, w)``.
        map: the map as the paper defines it for display (e.g. after ReLU) ``(N, h, w)``; the
            caller upsamples it to the input size.
        scores: the explained target's score on the clean input ``(N,)``.
        probabilities: softmax probability of the explained class ``(N,)``, or ``None``.
        target: the resolved targets.
        layer: name of the layer used, if any.
        extras: further per-sample arrays a family adds: a tensor with N first, or a list of N
            arrays (when their shapes differ between samples).
        stats: per-sample scalars a method reports (fit quality, completeness gap, ...).
    """

    raw: torch.Tensor
    map: torch.Tensor
    scores: torch.Tensor
    probabilities: torch.Tensor | None
    target: ResolvedTarget
    layer: str | None = None
    extras: dict[str, torch.Tensor | Sequence[np.ndarray]] = field(default_factory=dict)
    stats: Sequence[dict[str, float]] | None = None


@dataclass
class Context:
    """One call's data, already checked: the model's runner, the input on its device and dtype,
    the targets and what the model's description gives (layer, class indexer, labels,
    normalisation).

    The model is run through :attr:`runner` (see :mod:`seethrough.core.runner`); ``forward``,
    ``outputs``, ``many_inputs``, ``model`` and ``named_modules`` here pass to it. A network
    given as ``runner`` is wrapped in a :class:`~seethrough.core.runner.TorchRunner`.
    """

    runner: ModelRunner
    x: torch.Tensor
    target: TargetLike
    class_index: ClassIndexer | None
    layer: str | None = None
    layer_module: nn.Module | None = None
    images: Sequence[np.ndarray | None] | None = None
    progress: Progress | None = None
    normalization: tuple[Sequence[float], Sequence[float]] | None = None
    labels: Sequence[str] | None = None
    shared_rows: Sequence[int] | None = None
    """For a batch that repeats inputs (the k targets of one image, see ``explain``): one
    number per row, rows with the same number holding the same input; ``None``: every row its
    own input. Methods that can (the gradient CAMs) run each distinct input once and take one
    backward per row (:meth:`distinct_rows`); the others run every row, which gives the same
    result."""

    def __post_init__(self) -> None:
        self.runner = as_runner(self.runner)
        if self.shared_rows is not None:
            self.shared_rows = tuple(int(r) for r in self.shared_rows)
            if len(self.shared_rows) != self.x.shape[0]:
                raise InvalidParameterError(
                    f"shared_rows has {len(self.shared_rows)} entries for {self.x.shape[0]} rows"
                )

    def distinct_rows(self) -> tuple[list[int], list[int]] | None:
        """``(first, inverse)`` where rows share inputs (:attr:`shared_rows`): ``first`` the
        first row of each distinct input, ``inverse`` for each row the position of its input in
        ``first`` (so ``x[first][inverse]`` is ``x``); ``None`` where every row has its own."""
        if self.shared_rows is None:
            return None
        position: dict[int, int] = {}
        first: list[int] = []
        inverse: list[int] = []
        for row, key in enumerate(self.shared_rows):
            if key not in position:
                position[key] = len(first)
                first.append(row)
            inverse.append(position[key])
        return None if len(first) == len(inverse) else (first, inverse)

    @property
    def model(self) -> nn.Module:
        """The PyTorch module the runner runs (for methods that hook or swap its modules)."""
        module = getattr(self.runner, "module", None)
        if not isinstance(module, nn.Module):
            raise self.runner.not_applicable("a PyTorch module")
        return module

    @property
    def named_modules(self) -> dict[str, nn.Module]:
        """The model's layers by dotted name."""
        return self.runner.named_modules

    def image(self, i: int) -> np.ndarray:
        """Sample ``i`` as the uint8 (H, W, 3) image the model sees (for segmentation, display).

        The caller's display image when it gave one, else the input min-max scaled per image.
        """
        if self.images is not None and self.images[i] is not None:
            return np.asarray(self.images[i])
        x = self.x[i].detach().float()
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return (x[:3].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x`` as one tensor (the runner's protected forward)."""
        return self.runner.forward(x)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x`` without gradients, :meth:`forward` on chunks of
        :func:`chunk_size` inputs: the clean pass over a whole batch takes the memory of one
        chunk, not of the batch."""
        return self.runner.outputs(x, chunk_size(x, self.forward))

    def many_inputs(self, inputs: int) -> AbstractContextManager[None]:
        """A block that runs ``inputs`` inputs through the model: on the CPU, each convolution
        of a PyTorch model switches to channels-last when that pays for copying its weight (see
        :mod:`seethrough.core.layout`); hooks removed and the model's own weights back on exit."""
        return self.runner.many_inputs(self.x, inputs)

    @contextmanager
    def narrowed(self, start: int, stop: int) -> Iterator[Context]:
        """This context restricted to images ``start:stop`` of the batch (input, per-image
        targets, display images) for the block; the rest (layer, channels-last switch) is shared.
        """
        saved = self.x, self.target, self.images, self.shared_rows
        if isinstance(self.target, (list, tuple)):
            self.target = self.target[start:stop]
        self.x = self.x[start:stop]
        self.images = None if self.images is None else self.images[start:stop]
        self.shared_rows = None if self.shared_rows is None else self.shared_rows[start:stop]
        try:
            yield self
        finally:
            self.x, self.target, self.images, self.shared_rows = saved

    def resolve(self, output: torch.Tensor) -> ResolvedTarget:
        """Fix the targets against the clean output."""
        return resolve_target(
            self.target,
            output,
            self.class_index,
            default=self.runner.default_target,
            by_class=self.runner.class_target,
        )

    def result(
        self,
        raw: torch.Tensor,
        mapped: torch.Tensor,
        output: torch.Tensor,
        target: ResolvedTarget,
        stats: Sequence[dict[str, float]] | None = None,
        **extras: torch.Tensor | Sequence[np.ndarray],
    ) -> MethodResult:
        """Package a method's maps with the scores and probabilities of the clean output."""
        output = output.detach()
        raw, mapped = self.runner.align_map(raw), self.runner.align_map(mapped)
        scores = target(output).detach()
        probs = None
        if output.dim() == 2 and all(c is not None for c in target.classes):
            probs = class_scores(output.float().softmax(1), target.classes)  # type: ignore[arg-type]
        return MethodResult(
            raw.detach(), mapped.detach(), scores, probs, target, self.layer, dict(extras), stats
        )


class Method:
    """Base class of every explanation method.

    Subclasses set the class attributes below, declare their parameters in ``params`` (the
    schema, a tuple of :class:`~seethrough.registry.Param`) and implement :meth:`run`, which
    reads the values of one instance from ``self.config`` (defaults overridden by the caller's). Calling an instance protects the model: eval mode, parameters frozen,
    everything restored afterwards (see :func:`~seethrough.core.state.preserved_state`).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    family: ClassVar[str] = ""
    rank: ClassVar[int] = DEFAULT_RANK  # its place among its family's methods in listings
    paper: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True
    needs_layer: ClassVar[bool] = False
    class_specific: ClassVar[bool] = True
    tasks: ClassVar[tuple[str, ...]] = ()  # the model tasks it explains; () = every task
    swaps_modules: ClassVar[bool] = False  # replaces submodules during a call (guided backprop)
    reports_progress: ClassVar[bool] = False
    """Whether :meth:`run` reports progress itself (a :class:`Ticker` over its batches of model
    evaluations). The other methods run the batch in chunks of images (:meth:`chunk`), with a
    report before the first chunk and after each, in images."""
    layout_switch: ClassVar[bool] = False  # its passes run inside Context.many_inputs
    params: ClassVar[tuple[Param, ...]] = ()
    config: dict[str, Any]
    """The parameter values of this instance, validated against ``type(self).params``."""

    def __init__(self, **params: Any) -> None:
        self.config = validate_params(type(self).params, params, self.name)

    def __call__(
        self,
        model: nn.Module | ModelInfo | ModelRunner,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: LayerRef = None,
        default_layer: str | None = None,
        class_index: ClassIndexer | None = None,
        images: Sequence[np.ndarray | None] | None = None,
        progress: Progress | None = None,
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        labels: Sequence[str] | None = None,
        shared_rows: Sequence[int] | None = None,
    ) -> MethodResult:
        """Explain the batch ``x`` (N, C, H, W), already preprocessed, for ``target``.

        Args:
            model: the network, a runner (:class:`~seethrough.core.runner.ModelRunner`, e.g. a
                forward-only model, for the methods it serves), or the description of a model
                (:class:`~seethrough.models.vision_model.ModelInfo`), which gives the defaults of
                ``default_layer``, ``class_index``, ``normalization`` and ``labels`` (an
                argument given here wins).
            x: model input.
            target: see :func:`~seethrough.core.targets.resolve_target`.
            layer: layer name or module, for methods that need one.
            default_layer: the layer to use when ``layer`` is ``None``.
            class_index: resolves class labels to indices.
            images: the uint8 images the model sees, one per sample (for segmentation).
            progress: ``progress(done, total)`` callback; returning ``False`` cancels the call
                with :class:`~seethrough.errors.CancelledError`.
            normalization: the model's ``(mean, std)``, so methods can build a black image in
                model-input space.
            labels: the model's class labels, for methods that name classes in their extras.
            shared_rows: which rows of ``x`` hold the same input (see
                :attr:`Context.shared_rows`), e.g. one image repeated once per target.
        """
        if isinstance(model, ModelInfo):
            default_layer = default_layer if default_layer is not None else model.default_layer
            class_index = class_index if class_index is not None else model.class_index
            normalization = normalization if normalization is not None else model.normalization
            labels = labels if labels is not None else model.labels
            model = model.runner_for(self.needs_gradients or self.swaps_modules)
        if (self.needs_layer or self.swaps_modules) and isinstance(model, torch.jit.ScriptModule):
            raise MethodNotApplicableError(
                f"{self.name} needs hooks on the model's layers, which a TorchScript model does not "
                "allow: use a gradient or perturbation method, or load the weights as a state dict "
                "with its architecture (--arch)"
            )
        runner = as_runner(model, x.device)
        self.check_runner(runner)
        with runner.protected(
            parameters=self.needs_gradients or self.swaps_modules, modules=self.swaps_modules
        ):
            ctx = Context(
                runner,
                x.detach().to(runner.device, runner.dtype),
                target,
                class_index,
                images=images,
                progress=progress,
                normalization=normalization,
                labels=labels,
                shared_rows=shared_rows,
            )
            if self.needs_layer:
                ctx.layer, ctx.layer_module = runner.resolve_layer(layer, ctx.x, default_layer)
            run = self.run if self.reports_progress else self._run_in_chunks
            if self.needs_gradients:
                return run(ctx)
            with torch.no_grad():  # nothing to restore in the parameters: no backward can run
                return run(ctx)

    def check_runner(self, runner: ModelRunner) -> None:
        """Raise :class:`~seethrough.errors.MethodNotApplicableError` when ``runner`` lacks what
        this method declares it needs: gradients (``needs_gradients``), layers (``needs_layer``,
        ``swaps_modules``)."""
        if self.needs_gradients and not runner.differentiable:
            raise runner.not_applicable("gradients", self.name or type(self).__name__)
        if (self.needs_layer or self.swaps_modules) and not runner.has_layers:
            raise runner.not_applicable("layers", self.name or type(self).__name__)

    def run(self, ctx: Context) -> MethodResult:
        """Compute the explanation of ``ctx.x``; the model is already protected."""
        raise NotImplementedError

    def chunk(self, ctx: Context) -> int:
        """Images per :meth:`run` for a method that does not report progress itself (see
        :func:`chunk_size`); a method whose result for one image depends on the others returns
        the whole batch."""
        return chunk_size(ctx.x, ctx.forward)

    def _run_in_chunks(self, ctx: Context) -> MethodResult:
        """:meth:`run` on chunks of the batch, reporting progress in images: once before the
        first chunk (a cancel before any work) and after each."""
        n = ctx.x.shape[0]
        ticker = Ticker(ctx, n, unit="images")
        ticker.advance(0)
        size = self.chunk(ctx)
        if size >= n:
            result = self.run(ctx)
            ticker.advance(n)
            return result
        if isinstance(ctx.target, (list, tuple)) and len(ctx.target) != n:
            raise InvalidTargetError(f"{len(ctx.target)} targets given for {n} images")
        parts = []
        with ctx.many_inputs(n) if self.layout_switch else nullcontext():
            for start in range(0, n, size):
                stop = min(start + size, n)
                with ctx.narrowed(start, stop):
                    parts.append(self.run(ctx))
                ticker.advance(stop - start)
        return merge_results(parts)

    def describe(self) -> Mapping[str, Any]:
        """The parameters in effect."""
        return dict(self.config)


def chunk_size(
    x: torch.Tensor,
    forward: Callable[[torch.Tensor], object] | None = None,
    policy: BatchPolicy = ONE_PASS,
) -> int:
    """Images of the batch ``x`` per pass for a method run in chunks, by a one-pass policy of
    :mod:`seethrough.core.batching`: off CUDA as many as hold the policy's input values (scaled
    by :data:`CHUNK_VALUES` over :data:`~seethrough.core.batching.ONE_PASS`'s); on CUDA what
    fits in memory, measured by one run of ``forward`` on one image (a batch of one image is
    never measured). At least one."""
    if x.shape[0] <= 1:
        return 1
    values = policy.cpu_values * CHUNK_VALUES // ONE_PASS.cpu_values
    return auto_batch_size(x, replace(policy, cpu_values=values), forward)


def merge_results(parts: Sequence[MethodResult]) -> MethodResult:
    """One result from the results of consecutive chunks of a batch (tensors concatenated
    along the batch, per-sample lists joined; probabilities only where every chunk has them)."""
    if len(parts) == 1:
        return parts[0]

    def join(values: list[Any]) -> Any:
        if all(isinstance(v, torch.Tensor) for v in values):
            return torch.cat(values)
        return [item for v in values for item in v]

    first = parts[0]
    probabilities = [p.probabilities for p in parts]
    stats = None
    if any(p.stats is not None for p in parts):
        stats = [s for p in parts for s in (p.stats or [{} for _ in range(len(p.raw))])]
    return MethodResult(
        raw=torch.cat([p.raw for p in parts]),
        map=torch.cat([p.map for p in parts]),
        scores=torch.cat([p.scores for p in parts]),
        probabilities=None if any(p is None for p in probabilities) else torch.cat(probabilities),
        target=ResolvedTarget(
            tuple(c for p in parts for c in p.target.classes),
            tuple(f for p in parts for f in p.target.fns),
        ),
        layer=first.layer,
        extras={k: join([p.extras[k] for p in parts]) for k in first.extras},
        stats=stats,
    )
