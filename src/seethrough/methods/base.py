"""What every explanation method shares: parameters, the call protocol, state protection."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..core.batching import ONE_PASS, BatchPolicy, auto_batch_size
from ..core.layers import LayerRef, named_modules, resolve_layer
from ..core.layout import ChannelsLast, channels_last_switch
from ..core.outputs import output_to_tensor
from ..core.progress import Progress, Ticker
from ..core.state import floating_dtype, preserved_state
from ..core.targets import (
    ClassIndexer,
    ResolvedTarget,
    TargetLike,
    class_scores,
    resolve_target,
)
from ..errors import InvalidTargetError, MethodNotApplicableError
from ..models.vision_model import ModelInfo
from ..registry import DEFAULT_RANK, Param, validate_params
from .params import RELU

__all__ = [
    "Method",
    "MethodResult",
    "Context",
    "Progress",
    "Ticker",
    "RELU",
    "CHUNK_VALUES",
    "chunk_size",
    "merge_results",
]

CHUNK_VALUES = ONE_PASS.cpu_values
"""Input values per pass of the methods that run a batch in chunks of images, on the CPU: 8
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
    """One call's inputs, already checked: model in eval mode, input on its device and dtype."""

    model: nn.Module
    x: torch.Tensor
    target: TargetLike
    class_index: ClassIndexer | None
    layer: str | None = None
    layer_module: nn.Module | None = None
    images: Sequence[np.ndarray | None] | None = None
    progress: Progress | None = None
    normalization: tuple[Sequence[float], Sequence[float]] | None = None
    labels: Sequence[str] | None = None
    named_modules: dict[str, nn.Module] = field(default_factory=dict)
    layout: ChannelsLast | None = None
    layout_failed: bool = False

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
        """The model's output on ``x`` as one tensor (tuples, dicts, ``.logits`` unwrapped).

        Inside :meth:`many_inputs` convolutions may run channels-last; should the model fail
        in that layout (e.g. it calls ``.view`` on a convolution weight), its weights are put
        back and the rest of the call runs in the model's own layout.
        """
        if self.layout is not None:
            try:
                return output_to_tensor(self.model(x))
            except RuntimeError:
                self.layout.restore()
                self.layout = None
                self.layout_failed = True
        return output_to_tensor(self.model(x))

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x`` without gradients, :meth:`forward` on chunks of
        :func:`chunk_size` inputs: the clean pass over a whole batch takes the memory of one
        chunk, not of the batch."""
        size = chunk_size(x, self.forward)
        with torch.no_grad():
            if size >= x.shape[0]:
                return self.forward(x)
            return torch.cat([self.forward(x[s : s + size]) for s in range(0, x.shape[0], size)])

    @contextmanager
    def many_inputs(self, inputs: int) -> Iterator[None]:
        """A block that runs ``inputs`` inputs through the model: on the CPU, each convolution
        switches to channels-last when that pays for copying its weight (see
        :mod:`seethrough.core.layout`); hooks removed and the model's own weights back on exit."""
        if self.layout is not None or self.layout_failed:
            yield
            return
        self.layout = channels_last_switch(
            self.model, self.x, inputs, self.named_modules.values() or self.model.modules()
        )
        try:
            yield
        finally:
            if self.layout is not None:
                self.layout.restore()
                self.layout = None

    @contextmanager
    def narrowed(self, start: int, stop: int) -> Iterator[Context]:
        """This context restricted to images ``start:stop`` of the batch (input, per-image
        targets, display images) for the block; the rest (layer, channels-last switch) is shared.
        """
        saved = self.x, self.target, self.images
        if isinstance(self.target, (list, tuple)):
            self.target = self.target[start:stop]
        self.x = self.x[start:stop]
        self.images = None if self.images is None else self.images[start:stop]
        try:
            yield self
        finally:
            self.x, self.target, self.images = saved

    def resolve(self, output: torch.Tensor) -> ResolvedTarget:
        """Fix the targets against the clean output."""
        return resolve_target(self.target, output, self.class_index)

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
        model: nn.Module | ModelInfo,
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
    ) -> MethodResult:
        """Explain the batch ``x`` (N, C, H, W), already preprocessed, for ``target``.

        Args:
            model: the network, or the description of a model
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
        """
        if isinstance(model, ModelInfo):
            default_layer = default_layer if default_layer is not None else model.default_layer
            class_index = class_index if class_index is not None else model.class_index
            normalization = normalization if normalization is not None else model.normalization
            labels = labels if labels is not None else model.labels
            model = model.module
        if (self.needs_layer or self.swaps_modules) and isinstance(model, torch.jit.ScriptModule):
            raise MethodNotApplicableError(
                f"{self.name} needs hooks on the model's layers, which a TorchScript model does not "
                "allow: use a gradient or perturbation method, or load the weights as a state dict "
                "with its architecture (--arch)"
            )
        device = next((t.device for t in model.parameters()), x.device)
        named = named_modules(model)
        with preserved_state(
            model,
            modules=self.swaps_modules,
            parameters=self.needs_gradients or self.swaps_modules,
            walk=named.values(),
        ):
            if self.needs_gradients:
                _freeze(named.values())
            ctx = Context(
                model,
                x.detach().to(device, floating_dtype(model)),
                target,
                class_index,
                images=images,
                progress=progress,
                normalization=normalization,
                labels=labels,
                named_modules=named,
            )
            if self.needs_layer:
                ctx.layer, ctx.layer_module = resolve_layer(
                    model, layer, ctx.x, default_layer, named=named
                )
            run = self.run if self.reports_progress else self._run_in_chunks
            if self.needs_gradients:
                return run(ctx)
            with torch.no_grad():  # nothing to restore in the parameters: no backward can run
                return run(ctx)

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


def _freeze(modules: Iterable[nn.Module]) -> None:
    """Stop every parameter of ``modules`` from requiring gradients (each module's own, for
    modules already listed; :func:`~seethrough.core.state.preserved_state` undoes it)."""
    for module in modules:
        for p in module._parameters.values():
            if p is not None and p.requires_grad:
                p.requires_grad_(False)


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
