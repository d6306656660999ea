"""A layer's activations read by a plain forward hook, independently of seethrough's Recorder."""

from __future__ import annotations

import torch


def layer_output(model, x, layer):
    """The activations of ``layer`` (a dotted name) during one forward of ``x``."""
    seen = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, a, out: seen.setdefault("a", out.detach().clone())
    )
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen["a"]
