"""Restore a model exactly as it was after an explanation, even when the explanation fails.

:func:`preserved_state` protects any block (a method's forward and backward); :func:`protected`
and :func:`scores_of` are the one gradient-free protected forward that ``predict`` and the
metrics run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .outputs import output_to_tensor

__all__ = ["preserved_state", "protected", "scores_of"]


@contextmanager
def preserved_state(
    module: nn.Module,
    *,
    eval_mode: bool = True,
    modules: bool = False,
    parameters: bool = True,
    walk: Iterable[nn.Module] | None = None,
) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode and restore its state afterwards.

    Saved and restored on exit (also after an exception): every submodule's ``training`` flag,
    every parameter's ``requires_grad`` and ``.grad`` (the very same tensor object) and, with
    ``modules=True``, every submodule registered under a name (methods that swap modules, such
    as guided backprop, are undone even if they forget to).

    Args:
        module: the model to protect.
        eval_mode: put the model in eval mode for the duration of the block.
        modules: also snapshot and restore the module tree (costs a second walk).
        parameters: snapshot ``requires_grad`` and ``.grad``; a block that runs no backward and
            changes no flag (a gradient-free method) can skip it.
        walk: ``module`` and its submodules, when the caller has already listed them (the
            values of ``dict(module.named_modules())``), to spare one walk of the tree.
    """
    mods = list(module.modules() if walk is None else walk)
    training = [m.training for m in mods]
    params = (
        list({id(p): p for m in mods for p in m._parameters.values() if p is not None}.values())
        if parameters
        else []
    )
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    children = [(m, list(m._modules.items())) for m in mods] if modules else []
    try:
        if eval_mode and any(training):
            module.eval()
        yield module
    finally:
        for parent, named in children:
            for name, child in named:
                if getattr(parent, name, None) is not child:
                    setattr(parent, name, child)
        for m, flag in zip(mods, training, strict=True):
            if m.training != flag:
                m.training = flag
        for p, flag, grad in zip(params, requires_grad, grads, strict=True):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
            if p.grad is not grad:
                p.grad = grad


@contextmanager
def protected(module: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode and without autograd, its state restored after.

    The protected forward of everything that only reads the model (``predict``, the metrics):
    :func:`preserved_state` (every ``training`` flag, ``requires_grad`` and ``.grad``) under
    ``torch.no_grad()``.
    """
    with preserved_state(module), torch.no_grad():
        yield module


def scores_of(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``module``'s output on ``batch`` as one detached tensor, run under :func:`protected`.

    A tuple, list or dict output gives its first tensor (see
    :func:`~seethrough.core.outputs.output_to_tensor`); callers check the shape they need.
    """
    with protected(module):
        return output_to_tensor(module(batch)).detach()


def floating_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the module's first floating parameter (float32 when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
