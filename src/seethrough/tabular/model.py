"""A tabular model as one function from rows to scores: a predict function, a torch module or a
scikit-learn estimator, with which of its outputs is explained said out loud."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..attribution.scores import ScoreFunction
from ..errors import InvalidParameterError, ModelOutputError

__all__ = ["ScoreFunction", "as_score_function", "OUTPUTS"]

OUTPUTS = ("auto", "predict_proba", "decision_function", "predict")
"""What a scikit-learn estimator is asked for; ``"auto"`` takes the first it has of
``predict_proba``, ``decision_function``, ``predict``."""


def _estimator(model: Any, output: str) -> ScoreFunction:
    """A scikit-learn style estimator's chosen method."""
    names = ("predict_proba", "decision_function", "predict") if output == "auto" else (output,)
    for name in names:
        method = getattr(model, name, None)
        if callable(method):  # (an SVC without probability=True has no predict_proba)
            classes = getattr(model, "classes_", None)
            labels = None
            if classes is not None and name != "predict":
                labels = [str(c) for c in classes]
                if name == "decision_function" and len(labels) == 2:
                    labels = [labels[1]]  # one score: the positive class's
            return ScoreFunction(method, name, labels)
    raise InvalidParameterError(
        f"{type(model).__name__} has no {' / '.join(names)} method to explain"
    )


def _torch_module(module: Any) -> ScoreFunction:
    """A torch module on float32 rows, in eval mode without autograd, its state restored."""
    import torch

    from ..core.state import preserved_state

    def fn(rows: Any) -> np.ndarray:
        x = torch.as_tensor(np.asarray(rows, dtype=np.float32))
        param = next(module.parameters(), None)
        if param is not None:
            x = x.to(param.device)
        with preserved_state(module), torch.no_grad():
            module.eval()
            out = module(x)
        if not isinstance(out, torch.Tensor):
            raise ModelOutputError(
                f"the module returned {type(out).__name__}; a tabular module must return a "
                "tensor of scores"
            )
        return out.detach().double().cpu().numpy()

    return ScoreFunction(fn, "module output")


def as_score_function(
    model: Any, *, output: str = "auto", labels: Sequence[str] | None = None
) -> ScoreFunction:
    """Wrap ``model`` as a :class:`ScoreFunction`.

    Args:
        model: a :class:`ScoreFunction`; a scikit-learn estimator (or anything with
            ``predict_proba`` / ``decision_function`` / ``predict``); a ``torch.nn.Module``
            (float32 rows in, scores out); or a function ``f(rows) -> scores``.
        output: for an estimator, which method is explained (see :data:`OUTPUTS`).
        labels: the outputs' names (default: an estimator's ``classes_``).

    Raises:
        InvalidParameterError: an unknown ``output``, or an estimator without that method.
    """
    if output not in OUTPUTS:
        raise InvalidParameterError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if isinstance(model, ScoreFunction):
        score = model
    elif _is_torch_module(model):
        score = _torch_module(model)
    elif any(callable(getattr(model, n, None)) for n in OUTPUTS[1:]):
        score = _estimator(model, output)
    elif callable(model):
        score = ScoreFunction(model, "function")
    else:
        raise InvalidParameterError(
            f"cannot explain a {type(model).__name__}: give a function of rows, a torch module "
            "or an estimator with predict_proba / decision_function / predict"
        )
    if labels is not None:
        score = ScoreFunction(score.fn, score.output, [str(label) for label in labels])
    return score


def _is_torch_module(model: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(model, torch.nn.Module)
