"""The model runner: the one object through which a method runs a model.

A method never calls a network directly. It asks the runner of its call (``ctx.runner``) for
outputs, for a block that runs many inputs, and for the layers it hooks. :class:`TorchRunner`
runs a PyTorch module; a runner for another kind of model (a Keras model, an ONNX session, a
detector, a segmenter) subclasses :class:`ModelRunner` and provides the same contract.

Contract of a runner:

- ``device`` and ``dtype``: where and in which floating type the inputs must be; the method's
  input is moved there before the call.
- ``forward(x)``: the model's output on a batch ``x`` as one tensor with the batch first. A
  model with a structured output (a tuple, a dict, an object with ``.logits``, a detector's boxes
  and scores, a segmenter's masks) adapts it here, with :mod:`seethrough.core.outputs` or its
  own adapter, into the tensor the targets score.
- ``outputs(x, chunk)``: ``forward`` without gradients, on chunks of ``chunk`` inputs (the
  base class provides it from ``forward``).
- ``many_inputs(x, inputs)``: a block that runs ``inputs`` inputs like ``x``; a runner may
  change its layout there for speed (the base class does nothing).
- ``protected(parameters=..., modules=...)``: a block in which the model is in inference mode
  and after which it is as before (the base class does nothing: a runner that keeps no state).
- ``differentiable``: whether gradients of ``forward``'s output reach its input. Gradient
  methods need it.
- ``has_layers``, with ``layer(name)``, ``resolve_layer``, ``named_modules``,
  ``spatial_layers(example)`` and ``record(modules)``: lookup of a layer by the name the model's
  own framework gives it, the layers with a spatial output, and capture of a layer's output
  during a forward, always handed to the method as ``(N, C, H, W)`` whatever layout the model
  computes in; with ``differentiable``, ``graph_from(layer)``: a forward whose graph starts at
  the layer. Layer methods (CAM variants, feature maps, attention) need it.
- ``default_target`` and ``class_target(index)``: what the model explains for ``target=None``
  and for a class, where that is not the output's column (a detector's top box, a segmenter's
  class mask: see :func:`~seethrough.core.targets.resolve_target`); ``None`` by default.
- ``module``: the PyTorch module it runs, where there is one; methods that swap submodules for
  one call (guided backpropagation's ReLUs) need it, and say so when the model has none to swap.

A forward-only runner (``differentiable`` and ``has_layers`` false, e.g. an ONNX session or a
plain function of numpy arrays) serves every perturbation method; a gradient or layer method
called on it raises :class:`~seethrough.errors.MethodNotApplicableError` saying what the
runner lacks, before any work (:meth:`seethrough.methods.base.Method.__call__`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar

import torch
from torch import nn

from ..errors import MethodNotApplicableError
from .hooks import Recorder
from .layers import LayerRef, named_modules, resolve_layer, spatial_layers
from .layout import ChannelsLast, channels_last_switch
from .outputs import output_to_tensor
from .state import floating_dtype, preserved_state

__all__ = ["ModelRunner", "TorchRunner", "as_runner", "graph_from"]


class ModelRunner:
    """A model as the methods run it: a forward-only base, see the module's contract.

    Subclasses implement :meth:`forward` and set what they offer beyond it.
    """

    differentiable: ClassVar[bool] = False
    """Whether gradients flow from ``forward``'s output to its input."""
    has_layers: ClassVar[bool] = False
    """Whether layers can be looked up by name and their outputs captured."""
    kind: ClassVar[str] = "model"
    """What the runner runs, for messages ("a PyTorch module", "an ONNX session")."""
    default_target: object | None = None
    """The target of ``target=None`` where it is not the top class (a detector's top box)."""

    def class_target(self, index: int) -> object | None:
        """The target of a class index where it is not the output's column (a segmenter's
        mask of the class), else ``None``."""
        return None

    def align_map(self, maps: torch.Tensor) -> torch.Tensor:
        """A method's maps ``(N, h, w)`` as maps over the input, where the model's own
        transform resizes or pads inside (a detector's); here: unchanged. The result is
        upsampled to the input's size afterwards wherever it is not already."""
        return maps

    @property
    def device(self) -> torch.device:
        """Where the inputs must be."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating type of the inputs."""
        return torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on the batch ``x`` as one tensor, batch first."""
        raise NotImplementedError

    def outputs(self, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """:meth:`forward` without gradients, on chunks of ``chunk`` inputs (all at once when
        ``None``): a pass over a whole batch takes the memory of one chunk."""
        with torch.no_grad():
            if chunk is None or chunk >= x.shape[0]:
                return self.forward(x)
            return torch.cat([self.forward(x[s : s + chunk]) for s in range(0, x.shape[0], chunk)])

    @contextmanager
    def many_inputs(self, x: torch.Tensor, inputs: int) -> Iterator[None]:
        """A block that runs ``inputs`` inputs like ``x`` (here: nothing changes)."""
        yield

    @contextmanager
    def protected(self, *, parameters: bool = True, modules: bool = False) -> Iterator[None]:
        """A block with the model in inference mode, restored afterwards (here: stateless)."""
        yield

    @property
    def named_modules(self) -> dict[str, nn.Module]:
        """The model's layers by name (none for a runner without layers)."""
        return {}

    def layer(self, name: str) -> nn.Module:
        """The layer called ``name``."""
        raise self.not_applicable("a layer")

    def resolve_layer(
        self, layer: LayerRef, example: torch.Tensor | None = None, default: str | None = None
    ) -> tuple[str, nn.Module]:
        """``(name, layer)`` for a name, a layer, or ``None`` for the default."""
        raise self.not_applicable("a layer")

    def spatial_layers(self, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
        """The layers with a spatial output ``(N, C, H, W)`` and their output shapes, in the
        order they finish during a forward of ``example`` (the last is the default layer)."""
        raise self.not_applicable("a layer")

    def record(self, modules: Mapping[str, nn.Module], *, inputs: bool = False) -> Recorder:
        """A block that captures the outputs (and inputs) of ``modules`` during a forward."""
        raise self.not_applicable("a layer")

    def graph_from(self, layer: nn.Module | None) -> AbstractContextManager[None]:
        """A block in which the autograd graph of a forward starts at ``layer``'s output
        (nothing before it is kept for a backward); ``None``: the graph starts at the input."""
        raise self.not_applicable("gradients")

    def not_applicable(self, what: str, method: str = "this method") -> MethodNotApplicableError:
        """The error for a method that needs ``what`` ("gradients", "a layer") of this runner."""
        return MethodNotApplicableError(
            f"{method} needs {what} of the model, which {self.kind} run forward only does not "
            "offer: use a perturbation method (occlusion, RISE, LIME, ...)"
        )


class TorchRunner(ModelRunner):
    """A PyTorch module: differentiable, with layers, the protected forward and, inside
    :meth:`many_inputs`, the channels-last switch of :mod:`seethrough.core.layout`."""

    differentiable = True
    has_layers = True
    kind = "a PyTorch module"

    def __init__(self, module: nn.Module, fallback_device: torch.device | None = None) -> None:
        """Run ``module``; ``fallback_device`` is where the inputs go when the module has no
        parameter to tell (default: the CPU)."""
        self.module = module
        self._named = named_modules(module)
        self._fallback = fallback_device
        self._device: torch.device | None = None
        self.layout: ChannelsLast | None = None
        self.layout_failed = False

    @property
    def device(self) -> torch.device:
        """The device of the module's first parameter; for a module without any, the fallback
        device given (the CPU when none was)."""
        if self._device is None:
            self._device = next(
                (t.device for t in self.module.parameters()),
                self._fallback if self._fallback is not None else torch.device("cpu"),
            )
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """The module's floating type."""
        return floating_dtype(self.module)

    @property
    def named_modules(self) -> dict[str, nn.Module]:
        """Every submodule by dotted name."""
        return self._named

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's output on ``x`` as one tensor (tuples, dicts, ``.logits`` unwrapped).

        Inside :meth:`many_inputs` convolutions may run channels-last; should the model fail
        in that layout (e.g. it calls ``.view`` on a convolution weight), its weights are put
        back and the rest of the call runs in the model's own layout.
        """
        if self.layout is not None:
            try:
                return output_to_tensor(self.module(x))
            except RuntimeError:
                self.layout.restore()
                self.layout = None
                self.layout_failed = True
        return output_to_tensor(self.module(x))

    @contextmanager
    def many_inputs(self, x: torch.Tensor, inputs: int) -> Iterator[None]:
        """On the CPU, each convolution switches to channels-last when that pays for copying
        its weight; hooks removed and the model's own weights back on exit."""
        if self.layout is not None or self.layout_failed:
            yield
            return
        self.layout = channels_last_switch(
            self.module, x, inputs, self._named.values() or self.module.modules()
        )
        try:
            yield
        finally:
            if self.layout is not None:
                self.layout.restore()
                self.layout = None

    @contextmanager
    def protected(self, *, parameters: bool = True, modules: bool = False) -> Iterator[None]:
        """Eval mode, and with ``parameters`` every parameter frozen; training flags,
        ``requires_grad``, ``.grad`` and (with ``modules``) swapped submodules restored."""
        with preserved_state(
            self.module, modules=modules, parameters=parameters, walk=self._named.values()
        ):
            if parameters:
                _freeze(self._named.values())
            yield

    def layer(self, name: str) -> nn.Module:
        """The submodule called ``name``."""
        return self.resolve_layer(name)[1]

    def resolve_layer(
        self, layer: LayerRef, example: torch.Tensor | None = None, default: str | None = None
    ) -> tuple[str, nn.Module]:
        """See :func:`~seethrough.core.layers.resolve_layer`."""
        return resolve_layer(self.module, layer, example, default, named=self._named)

    def spatial_layers(self, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
        """See :func:`~seethrough.core.layers.spatial_layers`."""
        return spatial_layers(self.module, example)

    def record(self, modules: Mapping[str, nn.Module], *, inputs: bool = False) -> Recorder:
        """A :class:`~seethrough.core.hooks.Recorder` on ``modules``."""
        return Recorder(modules, inputs=inputs)

    def graph_from(self, layer: nn.Module | None) -> AbstractContextManager[None]:
        """See :func:`graph_from`."""
        return graph_from(layer)


@contextmanager
def graph_from(module: nn.Module | None) -> Iterator[None]:
    """A block in which the autograd graph of a forward starts at ``module``'s output.

    A forward hook (run before any other, removed on exit) hands the rest of the network the
    output detached and made to require gradients: nothing before the module joins the graph,
    so its activations are not kept for a backward, and a backward from the output stops at the
    module. A module called several times starts the graph at each call. Outputs that are not
    tensors pass unchanged.
    """
    if module is None:
        yield
        return

    def hook(_module: nn.Module, _args: tuple, output: object) -> torch.Tensor | None:
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.detach().requires_grad_()
        return None

    handle = module.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def _freeze(modules: Iterable[nn.Module]) -> None:
    """Stop every parameter of ``modules`` from requiring gradients (each module's own, for
    modules already listed; :func:`~seethrough.core.state.preserved_state` undoes it)."""
    for module in modules:
        for p in module._parameters.values():
            if p is not None and p.requires_grad:
                p.requires_grad_(False)


def as_runner(
    model: nn.Module | ModelRunner, fallback_device: torch.device | None = None
) -> ModelRunner:
    """``model`` itself when it is a runner, else a :class:`TorchRunner` on it (inputs on
    ``fallback_device`` when the module has no parameters, see :class:`TorchRunner`)."""
    return model if isinstance(model, ModelRunner) else TorchRunner(model, fallback_device)
