"""One batch-size policy for every method, and memory that grows with a chunk, not the list.

The policy's numbers are pinned (each family keeps the sizes it was measured with); the CAM
family must not make the input require gradients nor keep the activations before its layer for
the backward; a batch split into chunks gives the maps of one call per image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.core import batching
from seethrough.core.batching import (
    GRADIENT,
    IMAGE_224,
    ONE_PASS,
    ONE_PASS_INPUT_GRADIENTS,
    PERTURBATION,
    BatchPolicy,
    cpu_batch_size,
    gpu_batch_size,
)
from seethrough.methods.base import CHUNK_VALUES, chunk_size

from .conftest import make_tiny

GRADIENT_CAMS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"]


def _never_called(_x: torch.Tensor) -> None:
    raise AssertionError("the CPU rule runs no forward")


# ----------------------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    ("policy", "size", "expected"),
    [
        (ONE_PASS, 224, 16),
        (ONE_PASS_INPUT_GRADIENTS, 224, 4),
        (PERTURBATION, 224, 4),
        (GRADIENT, 224, 8),
        (ONE_PASS, 112, 64),
        (PERTURBATION, 112, 16),
        (GRADIENT, 112, 16),  # capped
        (ONE_PASS, 16, 3136),  # no cap
        (PERTURBATION, 16, 64),  # capped
        (GRADIENT, 16, 16),  # capped
        (ONE_PASS, 1024, 1),  # at least one
        (PERTURBATION, 1024, 1),
        (GRADIENT, 1024, 1),
    ],
)
def test_cpu_sizes_are_each_familys_measured_ones(policy, size, expected):
    x = torch.zeros(3, 3, size, size)
    assert batching.auto_batch_size(x, policy, _never_called) == expected
    assert cpu_batch_size(policy, 3 * size * size) == expected


@pytest.mark.parametrize("per_input", [1, 7_000_000, 10**9, 10**12])
@pytest.mark.parametrize("free", [0, 3, 10**9 + 1, 80 * 2**30])
def test_gpu_sizes_keep_the_probed_rule(per_input, free):
    perturbation = int(max(1, min(256, free // 2 // per_input)))  # as measured on GPUs
    assert gpu_batch_size(PERTURBATION, per_input, free) == perturbation
    assert gpu_batch_size(GRADIENT, per_input, free) == max(1, perturbation // 2)
    assert gpu_batch_size(ONE_PASS, per_input, free) == max(1, perturbation // 2)
    assert gpu_batch_size(ONE_PASS_INPUT_GRADIENTS, per_input, free) == max(1, perturbation // 2)


def test_a_policy_is_its_fields():
    policy = BatchPolicy(cpu_values=2 * IMAGE_224, cpu_max=3, gpu_max=10, gpu_divisor=5)
    assert cpu_batch_size(policy, IMAGE_224) == 2
    assert cpu_batch_size(policy, 1) == 3
    assert gpu_batch_size(policy, 1, 10**6) == 2


def test_every_family_asks_the_one_policy(tiny_input):
    from seethrough.methods.gradient.base import auto_internal_batch
    from seethrough.methods.perturbation.engine import auto_batch_size

    class Ctx:
        x = torch.zeros(2, 3, 224, 224)
        forward = staticmethod(_never_called)

    assert auto_batch_size(Ctx()) == 4  # type: ignore[arg-type]
    assert auto_internal_batch(Ctx()) == 8  # type: ignore[arg-type]
    assert chunk_size(Ctx.x, _never_called) == 16
    assert chunk_size(Ctx.x, _never_called, ONE_PASS_INPUT_GRADIENTS) == 4
    assert CHUNK_VALUES == ONE_PASS.cpu_values


def test_a_single_image_is_one_chunk_without_measuring():
    assert chunk_size(torch.zeros(1, 3, 4096, 4096), _never_called) == 1


def test_chunk_size_follows_chunk_values(monkeypatch):
    monkeypatch.setattr("seethrough.methods.base.CHUNK_VALUES", 2 * 3 * 16 * 16)
    assert chunk_size(torch.zeros(5, 3, 16, 16)) == 2
    assert chunk_size(torch.zeros(5, 3, 16, 16), policy=ONE_PASS_INPUT_GRADIENTS) == 1


@pytest.mark.parametrize(
    ("method", "reports"),
    [
        ("gradcam", [(0, 17), (17, 17)]),  # 64 images of 112x112 per chunk
        ("eigencam", [(0, 17), (17, 17)]),
        ("saliency", [(0, 17), (16, 17), (17, 17)]),  # 16: the backward reaches the input
        ("guided_backprop", [(0, 17), (16, 17), (17, 17)]),
    ],
)
def test_chunks_follow_what_the_method_differentiates(method, reports):
    x = torch.rand(17, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    calls: list[tuple[int, int]] = []
    seethrough.explain(make_tiny(), x, method, progress=lambda d, t: calls.append((d, t)))
    assert calls == reports


def _batch_sizes(model: nn.Module) -> tuple[list[int], object]:
    sizes: list[int] = []
    return sizes, model.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))


@pytest.mark.parametrize(
    ("method", "params", "clean"),
    [
        ("occlusion", {"window": 8, "stride": 8}, [2, 2, 1]),
        ("smoothgrad", {"n_samples": 2}, [2, 2, 1]),
        ("integrated_gradients", {"n_steps": 2}, [2] * 5),  # the 5 inputs and 5 baselines
    ],
)
def test_the_clean_pass_over_a_batch_runs_in_chunks(method, params, clean, monkeypatch):
    model = make_tiny()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    whole = seethrough.explain(model, x, method, **params)
    monkeypatch.setattr("seethrough.methods.base.CHUNK_VALUES", 2 * x[0].numel())
    sizes, handle = _batch_sizes(model)
    try:
        chunked = seethrough.explain(model, x, method, **params)
    finally:
        handle.remove()
    assert sizes[: len(clean)] == clean  # chunks of 2 images, then the method's own batches
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(b.raw, a.raw, rtol=1e-4, atol=1e-6)
        assert a.target == b.target


# ---------------------------------------------------------------- CAM: graph from the layer


class Probe:
    """Forward hooks on the tiny CNN's first convolution and on its layer's input that record
    whether autograd tracks them, and the bytes autograd saves for the backward."""

    def __init__(self, model: nn.Module) -> None:
        self.first_conv_tracked: list[bool] = []
        self.layer_input_tracked: list[bool] = []
        self.saved: list[tuple[int, ...]] = []
        self.handles = [
            model.features[0].register_forward_hook(
                lambda m, a, out: self.first_conv_tracked.append(out.requires_grad)
            ),
            model.features[2].register_forward_pre_hook(
                lambda m, a: self.layer_input_tracked.append(a[0].requires_grad)
            ),
        ]

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.saved.append(tuple(t.shape))
        return t

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("method", GRADIENT_CAMS)
def test_cam_gradients_start_at_the_layer_not_the_input(method, tiny_input):
    model = make_tiny()
    probe = Probe(model)
    x = tiny_input.clone()
    try:
        with torch.autograd.graph.saved_tensors_hooks(probe.pack, lambda t: t):
            seethrough.explain(model, x, method, layer="features.3")
    finally:
        probe.remove()
    assert probe.first_conv_tracked and not any(probe.first_conv_tracked)
    assert probe.layer_input_tracked and not any(probe.layer_input_tracked)
    assert not x.requires_grad and x.grad is None
    # nothing of the (N, 6, 16, 16) activations before the layer is kept for the backward
    assert probe.saved and all(s[1:] != (6, 16, 16) for s in probe.saved)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_gradient_methods_still_differentiate_the_input(tiny_input):
    model = make_tiny()
    probe = Probe(model)
    try:
        seethrough.explain(model, tiny_input, "saliency")
    finally:
        probe.remove()
    assert probe.first_conv_tracked and all(probe.first_conv_tracked)


def test_graph_from_leaves_outputs_and_hooks_as_they_were(tiny_input):
    from seethrough.core.hooks import count_hooks
    from seethrough.methods.cam.base import graph_from

    model = make_tiny()
    with torch.no_grad():
        expected = model(tiny_input)
    with torch.enable_grad(), graph_from(model.features[2]):
        out = model(tiny_input)
    assert count_hooks(model) == 0
    torch.testing.assert_close(out.detach(), expected)
    with graph_from(None):  # no layer: nothing to do
        pass


def test_a_score_that_does_not_depend_on_the_layer_is_refused(tiny_input):
    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Conv2d(3, 4, 3, padding=1)
            self.unused = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.unused(x)
            return self.fc(self.used(x).mean(dim=(2, 3)))

    with pytest.raises(seethrough.errors.MethodNotApplicableError, match="does not depend"):
        seethrough.explain(Branches().eval(), tiny_input, "gradcam", layer="unused")


# ------------------------------------------------------------ a list equals one call each


@pytest.mark.parametrize("method", ["gradcam", "layercam", "saliency"])
def test_a_list_in_uneven_chunks_equals_one_call_per_image(method, monkeypatch):
    model = make_tiny()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    singles = [seethrough.explain(model, x[i : i + 1], method)[0] for i in range(5)]
    per_chunk = 8 if method == "saliency" else 2  # saliency's chunks hold a quarter of the values
    monkeypatch.setattr("seethrough.methods.base.CHUNK_VALUES", per_chunk * x[0].numel())
    calls: list[tuple[int, int]] = []
    batch = seethrough.explain(model, x, method, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]  # chunks of 2, 2 and 1
    for one, many in zip(singles, batch, strict=True):
        np.testing.assert_allclose(many.raw, one.raw, rtol=1e-5, atol=1e-6)
        assert many.target == one.target
