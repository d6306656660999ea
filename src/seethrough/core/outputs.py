"""Turn whatever a model returns into one tensor of scores."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import ModelOutputError

__all__ = ["output_to_tensor"]


def output_to_tensor(out: object) -> torch.Tensor:
    """Return the score tensor inside a model output.

    A tensor is returned as is; a tuple or list gives its first tensor element; a mapping its
    ``"logits"`` entry, else its ``"out"`` entry, else its only value; any other object its
    ``.logits`` tensor (as Hugging Face outputs have).

    Raises:
        ModelOutputError: no score tensor can be found in ``out`` (the message names its type).
    """
    if isinstance(out, torch.Tensor):
        return out
    kind = type(out).__name__
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
        raise ModelOutputError(f"the model returned a {kind} that holds no tensor")
    if isinstance(out, Mapping):
        for key in ("logits", "out"):
            if key in out:
                return output_to_tensor(out[key])
        if len(out) == 1:
            return output_to_tensor(next(iter(out.values())))
        keys = ", ".join(map(str, out))
        raise ModelOutputError(
            f"the model returned a {kind} with keys ({keys}): expected 'logits', 'out' or one entry"
        )
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise ModelOutputError(f"cannot read class scores from a model output of type {kind}")
