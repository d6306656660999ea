"""How many inputs go through the model in one pass: one policy for every method and metric.

Four kinds of work ask for a batch size, each with its own :class:`BatchPolicy`:

- :data:`ONE_PASS`: the methods that explain a batch of images in one pass each (the CAMs,
  DFF, feature maps, attention rollout) run it in chunks of this many images, so their memory
  grows with a chunk, not with the list; :data:`ONE_PASS_INPUT_GRADIENTS` for those whose pass
  is a backward to the input (saliency, guided backprop, guided Grad-CAM);
- :data:`PERTURBATION`: perturbed inputs per forward (perturbation methods, deletion and
  insertion curves);
- :data:`GRADIENT`: inputs per forward and backward of the gradient methods that evaluate many
  (integrated gradients, SmoothGrad, Gradient SHAP).

The rule (:func:`auto_batch_size`) is the same for all three:

- on a CUDA device, one forward of a single input (no gradients) measures its peak memory, and
  a pass may use ``gpu_share`` of the free memory, at most ``gpu_max`` inputs, divided by
  ``gpu_divisor`` (a backward keeps the activations of the forward: 2 where one runs);
- elsewhere (the CPU, where large batches are memory bound and slower per image), a fixed
  number of input values per pass, ``cpu_values``: so many images of 224x224, more of smaller
  inputs, at most ``cpu_max`` (at least one input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "BatchPolicy",
    "IMAGE_224",
    "ONE_PASS",
    "ONE_PASS_INPUT_GRADIENTS",
    "PERTURBATION",
    "GRADIENT",
    "auto_batch_size",
    "cpu_batch_size",
    "gpu_batch_size",
    "probe_memory",
]

IMAGE_224 = 3 * 224 * 224
"""Values of one RGB image of 224x224: the unit the CPU sizes are measured in."""


@dataclass(frozen=True)
class BatchPolicy:
    """How a kind of work sizes its passes (see the module docstring for the rule).

    Attributes:
        cpu_values: input values per pass off CUDA (``k * IMAGE_224``: k images of 224x224).
        cpu_max: at most this many inputs per pass off CUDA (``None``: no cap).
        gpu_share: share of the free CUDA memory one pass may take.
        gpu_max: at most this many inputs per pass on CUDA, before ``gpu_divisor``.
        gpu_divisor: memory of one input in a pass relative to a forward without gradients.
    """

    cpu_values: int
    cpu_max: int | None = None
    gpu_share: float = 0.5
    gpu_max: int = 256
    gpu_divisor: int = 1


ONE_PASS = BatchPolicy(cpu_values=16 * IMAGE_224, gpu_divisor=2)
"""Images per chunk of a one-pass method. On the CPU 16 of 224x224: on one thread PyTorch runs
a 1x1 convolution of fewer than 16 inputs through its own kernel instead of oneDNN's, so chunks
of 8 cost ResNet-50's forward about 12% more CPU time, and Grad-CAM and CAM on a batch of 16
13-15% more than one pass (chunks of 8 and 16 cost EfficientNet-Lite0 the same; on 2 cores chunks
of 8 were within a few percent of one pass of 16 on ResNet-18 and EfficientNet-Lite0; chunks of
4 cost ResNet-18 5-10%, one image at a time 40-50% more). A CAM's pass keeps the autograd graph
from its layer only, so a chunk of 16 takes about the memory of a forward of 16 without
gradients. On CUDA at most 128, as for :data:`GRADIENT` (the CAMs and saliency run one
backward)."""

ONE_PASS_INPUT_GRADIENTS = BatchPolicy(cpu_values=4 * IMAGE_224, gpu_divisor=2)
"""Images per chunk of a one-pass method that differentiates the input: its backward keeps every
activation of the network (about 70 MB per 224x224 image on EfficientNet-Lite0), so chunks of 4
images of 224x224 on the CPU, a quarter of :data:`ONE_PASS`'s images. Measured on 2 threads for a
batch of 16: saliency 0.9x the time of chunks of 8 on EfficientNet-Lite0, the same on ResNet-18
and -50; guided backprop 0.8x on EfficientNet-Lite0, 1.07x on ResNet-18. On CUDA as
:data:`ONE_PASS`."""

PERTURBATION = BatchPolicy(cpu_values=4 * IMAGE_224, cpu_max=64)
"""Perturbed inputs per forward. On the CPU 4 of 224x224 (at most 64 smaller ones): measured on
1 and 2 threads, batch 4 is within 1.16x of the fastest batch for EfficientNet-Lite0 and -B0,
MobileNet-V2 and ResNet-18/50, where batch 8 costs depthwise-convolution nets 1.2-1.5x (see
benchmarks/perturbation_speed.py). On CUDA at most 256."""

GRADIENT = BatchPolicy(cpu_values=8 * IMAGE_224, cpu_max=16, gpu_divisor=2)
"""Inputs per forward and backward of the gradient methods that evaluate many. On the CPU 8 of
224x224 (at most 16 smaller ones), measured fastest for integrated gradients on ResNet-18 and
EfficientNet-Lite0. On CUDA half of what a forward alone would take, at most 128."""


def cpu_batch_size(policy: BatchPolicy, values: int) -> int:
    """Inputs of ``values`` values each per pass off CUDA: ``policy.cpu_values // values``,
    capped by ``policy.cpu_max``, at least one."""
    size = policy.cpu_values // max(1, values)
    if policy.cpu_max is not None:
        size = min(policy.cpu_max, size)
    return max(1, size)


def gpu_batch_size(policy: BatchPolicy, per_input: int, free: int) -> int:
    """Inputs per pass on CUDA, where one input's forward peaks at ``per_input`` bytes and
    ``free`` bytes are free: ``min(gpu_max, free * gpu_share // per_input) // gpu_divisor``, at
    least one."""
    fits = int(free * policy.gpu_share) // max(1, per_input)
    return max(1, min(policy.gpu_max, fits) // max(1, policy.gpu_divisor))


def probe_memory(x: torch.Tensor, forward: Callable[[torch.Tensor], object]) -> int:
    """Peak CUDA memory in bytes (at least 1) of ``forward(x)`` without gradients, ``x`` on a
    CUDA device (the device's peak-memory statistics are reset)."""
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    with torch.no_grad():
        forward(x)
    return max(torch.cuda.max_memory_allocated(x.device) - base, 1)


def auto_batch_size(
    x: torch.Tensor,
    policy: BatchPolicy,
    forward: Callable[[torch.Tensor], object] | None = None,
) -> int:
    """Inputs shaped like ``x[0]`` per pass, by ``policy``.

    Args:
        x: a batch of model inputs ``(N, ...)`` (only its first input is used).
        policy: the kind of work (:data:`ONE_PASS`, :data:`ONE_PASS_INPUT_GRADIENTS`,
            :data:`PERTURBATION`, :data:`GRADIENT`).
        forward: the protected model forward; on a CUDA device it is run once on ``x[:1]`` to
            measure the memory of one input. Without it, or off CUDA, the CPU rule applies.

    Returns:
        The batch size, at least one.
    """
    if x.is_cuda and forward is not None:
        free, _ = torch.cuda.mem_get_info(x.device)
        return gpu_batch_size(policy, probe_memory(x[:1], forward), free)
    return cpu_batch_size(policy, x[0].numel())
