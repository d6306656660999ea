"""Targets: what scalar per image an explanation explains.

A target is resolved once, against the model's output on the *unperturbed* input, into a
:class:`ResolvedTarget`: a callable from a model output ``(N, ...)`` to one score per sample
``(N,)``, plus the class index each sample explains (``None`` for a custom callable). Methods that
evaluate perturbed inputs keep explaining that same class.

What a user may pass as ``target``:

- ``None``: each image's top class;
- an ``int`` class index, or a ``str`` class label (resolved by the model's labels); a boolean
  is refused (``InvalidParameterError``), not read as class 0 or 1;
- a callable ``f(output) -> Tensor (N,)``;
- a *bindable* target (:class:`~seethrough.targets.Box`, :class:`~seethrough.targets.Mask`,
  or any object with a ``bind`` method, see :class:`Bindable`): fixed once against the clean
  output of its image, it gives the class it explains and the score function of its
  perturbations (boxes and masks plug in here);
- for a batch, a list with one of the above per image.

A model may give its own meaning to ``None`` and to a class (``default`` and ``by_class`` of
:func:`resolve_target`, from the model's runner): a detector explains its top box for ``None``
and the top box of a class for a class, a segmenter the predicted mask of a class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import InvalidParameterError, InvalidTargetError, UnknownClassError

__all__ = [
    "Bindable",
    "ClassIndexer",
    "ResolvedTarget",
    "TargetLike",
    "class_scores",
    "resolve_target",
]

TargetFn = Callable[[torch.Tensor], torch.Tensor]
TargetLike = int | str | TargetFn | None | Sequence[int | str | TargetFn | None]
ClassIndexer = Callable[[int | str], int]


@runtime_checkable
class Bindable(Protocol):
    """A target fixed against the clean output of its image (a box, a class mask).

    ``bind(clean, class_index)`` gets the model's output on the unperturbed image ``(1, ...)``
    and the model's class indexer, and returns ``(class_or_None, fn)``: the class index the
    target explains (shown as the explanation's class) and ``fn(output) -> (B,)``, the score of
    any batch of outputs of that image (its perturbations). Bad targets raise typed errors
    here, once, before any work.
    """

    def bind(
        self, clean: torch.Tensor, class_index: ClassIndexer
    ) -> tuple[int | None, TargetFn]: ...


@dataclass(frozen=True)
class ResolvedTarget:
    """Per-sample targets fixed against the clean output.

    Attributes:
        classes: the class index explained for each sample (``None`` for a callable target).
        fns: per-sample callables, ``None`` where ``classes`` gives the class.
    """

    classes: tuple[int | None, ...]
    fns: tuple[TargetFn | None, ...]

    def __len__(self) -> int:
        return len(self.classes)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` of the N samples of ``output``, sample i scored by target i."""
        if output.shape[0] != len(self):
            raise InvalidTargetError(
                f"{len(self)} targets for a model output of {output.shape[0]} samples"
            )
        if all(fn is None for fn in self.fns):
            return class_scores(output.reshape(len(self), -1), self.classes)  # type: ignore[arg-type]
        return torch.cat([self.row(i)(output[i : i + 1]) for i in range(len(self))])

    def row(self, i: int) -> TargetFn:
        """Score function of sample ``i``'s target, applicable to a batch of its perturbations."""
        fn, cls = self.fns[i], self.classes[i]
        if fn is not None:
            return lambda out: _check_scores(fn(out), out.shape[0])
        return lambda out: out.reshape(out.shape[0], -1)[:, cls]

    def select(self, index: Sequence[int]) -> ResolvedTarget:
        """The targets of the samples at ``index`` (used to split a batch)."""
        return ResolvedTarget(
            tuple(self.classes[i] for i in index), tuple(self.fns[i] for i in index)
        )


def class_scores(scores: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """``scores[i, classes[i]]`` for each row of ``scores`` ``(N, K)``, as ``(N,)``.

    Without an index tensor on the device where that can be avoided: copying one from the host
    makes a GPU finish all its queued work first (a sync in the middle of a forward and
    backward). One class for every row is a column; on a GPU, a few different classes are
    picked row by row.
    """
    first = classes[0]
    if all(c == first for c in classes):
        return scores[:, first]
    if scores.device.type == "cpu" or len(classes) > 64:
        idx = torch.tensor(classes, device=scores.device).view(-1, 1)
        return scores.gather(1, idx).squeeze(1)
    return torch.stack([scores[i, c] for i, c in enumerate(classes)])


def _check_scores(scores: object, n: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise InvalidTargetError(
            f"a target callable returned {type(scores).__name__}, not a tensor"
        )
    if scores.numel() != n:
        raise InvalidTargetError(
            f"a target callable returned shape {tuple(scores.shape)}; expected one score per sample ({n},)"
        )
    return scores.reshape(n)


def default_class_index(num_classes: int) -> ClassIndexer:
    """A class indexer for a model without labels: integers in range only."""

    def index(target: int | str) -> int:
        if isinstance(target, str) or isinstance(target, bool):
            raise UnknownClassError(
                f"class '{target}': this model has no class labels; give a class index "
                f"(0..{num_classes - 1})"
            )
        if not 0 <= int(target) < num_classes:
            raise UnknownClassError(f"class {target} is out of range (0..{num_classes - 1})")
        return int(target)

    return index


def _is_bool(item: object) -> bool:
    """A Python, numpy or 0-d torch boolean (``int(True)`` would silently pick class 1)."""
    if isinstance(item, torch.Tensor):
        return item.dtype == torch.bool
    return isinstance(item, (bool, np.bool_))


def resolve_target(
    target: TargetLike,
    output: torch.Tensor,
    class_index: ClassIndexer | None = None,
    *,
    default: object | None = None,
    by_class: Callable[[int], object | None] | None = None,
) -> ResolvedTarget:
    """Fix ``target`` for each sample of ``output`` (the model's output on the clean input).

    Args:
        target: see the module docstring.
        output: model output ``(N, K)`` (or ``(N, ...)`` for callable and bindable targets).
        class_index: maps an int or a label to a class index, raising ``UnknownClassError``.
        default: the model's target for ``None`` (a bindable target, e.g. a detector's top box);
            ``None``: each sample's top class.
        by_class: the model's target for a class index (e.g. a segmenter's mask of that
            class), or ``None`` where it is the class's column of the output.
    """
    n = output.shape[0]
    flat = output.detach().reshape(n, -1)
    index = class_index or default_class_index(flat.shape[1])
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise InvalidTargetError(f"{len(target)} targets given for {n} images")
        items = list(target)
    else:
        items = [target] * n
    classes: list[int | None] = []
    fns: list[TargetFn | None] = []
    for i, item in enumerate(items):
        if item is None and default is not None:
            item = default
        elif by_class is not None and not _is_bool(item) and isinstance(item, (int, str)):
            item = by_class(index(item)) or item
        if isinstance(item, Bindable) and not isinstance(item, type):
            cls, fn = item.bind(output[i : i + 1].detach(), index)
            classes.append(cls)
            fns.append(fn)
        elif item is None:
            classes.append(int(flat[i].argmax()))
            fns.append(None)
        elif _is_bool(item):
            raise InvalidParameterError(
                f"target={item!r}: a boolean is not a class index; give a class index, a class "
                "label or a callable"
            )
        elif callable(item):
            classes.append(None)
            fns.append(item)
        elif isinstance(item, (int, str)) or hasattr(item, "__index__"):
            classes.append(index(item if isinstance(item, str) else int(item)))
            fns.append(None)
        else:
            raise InvalidTargetError(
                f"target {item!r}: expected None, a class index, a class label or a callable"
            )
    resolved = ResolvedTarget(tuple(classes), tuple(fns))
    if any(fn is not None for fn in fns):
        resolved(output.detach())  # validate the callables' output shapes now, with a clear error
    return resolved
