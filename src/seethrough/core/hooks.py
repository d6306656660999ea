"""Hooks that live for exactly one call and are keyed by module, never by registration order."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, TypeVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import MethodNotApplicableError

__all__ = ["Recorder", "RunnerRecorder", "count_hooks"]

R = TypeVar("R", bound="RunnerRecorder")


class Recorder:
    """Record the outputs (and optionally the inputs) of named modules during one forward.

    Use as a context manager; every hook is removed in ``__exit__`` whatever happens inside::

        with Recorder({"layer4": model.layer4}) as rec:
            out = model(x)
        acts = rec.outputs["layer4"]

    Outputs are stored as the module produced them and the module then passes on a *clone*, so
    in-place operations further down the network (``ReLU(inplace=True)``, ``out += identity``)
    cannot change the stored activation, and ``torch.autograd.grad(score, stored)`` is the
    gradient with respect to exactly what the module produced. A module called several times in
    one forward keeps the output of its last call.

    Args:
        modules: name -> module to record.
        inputs: also record the first positional input of each module (``rec.inputs[name]``).
    """

    def __init__(self, modules: Mapping[str, nn.Module], *, inputs: bool = False) -> None:
        self.modules = dict(modules)
        self.record_inputs = inputs
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> Recorder:
        try:
            for name, module in self.modules.items():
                if isinstance(module, torch.jit.ScriptModule):
                    raise MethodNotApplicableError(
                        f"layer '{name}' is TorchScript, which cannot be hooked: layer-based "
                        "methods need the eager model (load its weights with arch= instead)"
                    )
                self._handles.append(module.register_forward_hook(self._output_hook(name)))
                if self.record_inputs:
                    self._handles.append(module.register_forward_pre_hook(self._input_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this recorder registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def _output_hook(self, name: str):  # noqa: ANN202 - hook signature is torch's
        def hook(module: nn.Module, args: tuple, output: object) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise MethodNotApplicableError(
                    f"layer '{name}' returns {type(output).__name__}, not a tensor: pick a layer "
                    "whose output is one (N, C, H, W) tensor"
                )
            self.outputs[name] = output
            return output.clone()

        return hook

    def _input_hook(self, name: str):  # noqa: ANN202 - hook signature is torch's
        def hook(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                self.inputs[name] = args[0]

        return hook

    _missing = "was not called during the forward pass: pick a layer the model uses"

    def output(self, name: str) -> torch.Tensor:
        """The recorded output of ``name``; a clear error if the module never ran."""
        if name not in self.outputs:
            raise MethodNotApplicableError(f"layer '{name}' {self._missing}")
        return self.outputs[name]


class _Recording(Protocol):
    recorders: list[Any]


class RunnerRecorder(Recorder):
    """The :class:`Recorder` of a runner that computes layer values itself instead of through
    torch hooks (a graph run by onnxruntime, a Keras model in TensorFlow).

    Entering the block adds the recorder to ``runner.recorders`` and leaving removes it, whatever
    happens inside; while it is there, the runner's forwards fill ``outputs`` (and, when
    ``inputs`` is set, ``inputs``) by name, the last forward's values winning.

    Args:
        runner: the runner, which keeps its active recorders in a list ``recorders``.
        modules: name -> layer to record.
        inputs: also record each layer's input (``rec.inputs[name]``).
    """

    _missing = "was not computed: no forward ran while it was recorded"

    def __init__(
        self, runner: _Recording, modules: Mapping[str, nn.Module], *, inputs: bool
    ) -> None:
        super().__init__(modules, inputs=inputs)
        self.runner = runner

    def __enter__(self: R) -> R:
        self.runner.recorders.append(self)
        return self

    def remove(self) -> None:
        """Take this recorder off the runner's list (idempotent)."""
        if self in self.runner.recorders:
            self.runner.recorders.remove(self)


def count_hooks(model: nn.Module) -> int:
    """Number of forward/backward hooks registered anywhere in ``model`` (0 after every call)."""
    total = 0
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            total += len(getattr(m, attr, {}) or {})
    return total
