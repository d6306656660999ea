"""What each method costs on one model and one image: seconds, model evaluations, forward passes.

A forward hook on the model's top module counts every call and every image the method feeds
through it (perturbation methods evaluate thousands of images in batches; gradient methods
one forward and one backward per step), and the time is set against one plain forward pass of
the same image, so the table reads the same on any machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..api import explain, prepare_inputs
from ..core.outputs import output_to_tensor
from ..core.state import preserved_state
from ..errors import SeethroughError
from ..models import VisionModel
from ..registry import get_method, list_methods

__all__ = ["Cost", "cost_table", "forward_seconds"]


@dataclass
class Cost:
    """The cost of one method on one image.

    Attributes:
        method: registry name.
        title: display name.
        family: method family.
        seconds: wall time of the call (the best of ``repeats``).
        calls: forward calls of the model.
        images: images evaluated by those calls (a batch of 8 counts 8).
        ratio: ``seconds`` over the time of one forward pass of the image.
        error: the one-line reason when the method cannot run on this model.
    """

    method: str
    title: str
    family: str
    seconds: float = float("nan")
    calls: int = 0
    images: int = 0
    ratio: float = float("nan")
    error: str | None = None


def forward_seconds(vm: VisionModel, x: torch.Tensor, repeats: int = 5) -> float:
    """Median time of one forward pass of ``x`` without gradients (after one warm-up)."""
    times = []
    runner = vm.make_runner()  # a detector's forward includes reading its boxes
    with preserved_state(vm.module), torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            runner.forward(x)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            if i:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def _warm_up(vm: VisionModel, x: torch.Tensor) -> None:
    """One untimed forward and backward, so the first method timed pays no allocator warm-up."""
    with preserved_state(vm.module), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        out = output_to_tensor(vm.make_runner().forward(xg))
        if out.requires_grad:  # input gradient only: no parameter's .grad is touched
            torch.autograd.grad(out.sum(), xg, allow_unused=True)


class _Counter:
    """Counts forward calls and images of a module while installed (a context manager)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.calls, self.images = module, 0, 0

    def __enter__(self) -> _Counter:
        def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            self.calls += 1
            first = args[0] if args else None
            if isinstance(first, torch.Tensor):
                self.images += int(first.shape[0])
            else:  # a detector's list of images
                self.images += len(first) if isinstance(first, (list, tuple)) else 1

        self.handle = self.module.register_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def cost_table(
    vm: VisionModel,
    image: Any,
    methods: Sequence[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    repeats: int = 1,
    progress: Callable[[str], object] | None = None,
) -> tuple[float, list[Cost]]:
    """Time every method (default: all registered ones) on one image.

    Args:
        vm: the model.
        image: one image (anything :func:`~seethrough.explain` accepts).
        methods: registry names; default every registered method.
        params: per-method parameters, e.g. ``{"lime": {"n_samples": 200}}``.
        repeats: calls per method; the fastest is reported (the counts are of one call).
        progress: called with each method's name before it runs.

    Returns:
        The seconds of one forward pass, and one :class:`Cost` per method.
    """
    names = [get_method(m).name for m in methods] if methods else [m.name for m in list_methods()]
    params = {get_method(k).name: dict(v) for k, v in (params or {}).items()}
    x, _, _ = prepare_inputs(vm, image)
    x = x.to(vm.device)
    _warm_up(vm, x)
    forward = forward_seconds(vm, x)
    rows = []
    for name in names:
        info = get_method(name)
        row = Cost(name, info.title, info.family)
        if progress is not None:
            progress(name)
        try:
            best = float("inf")
            for i in range(max(1, repeats)):
                with _Counter(vm.module) as counter:
                    start = time.perf_counter()
                    explain(vm, x, name, **params.get(name, {}))
                    best = min(best, time.perf_counter() - start)
                if i == 0:
                    row.calls, row.images = counter.calls, counter.images
            row.seconds, row.ratio = best, best / forward
        except SeethroughError as exc:
            row.error = str(exc).splitlines()[0]
        rows.append(row)
    return forward, rows
