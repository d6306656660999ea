"""The model runner: a forward-only runner serves perturbation methods and refuses the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough import extend
from seethrough.core.runner import ModelRunner, TorchRunner, as_runner
from seethrough.errors import MethodNotApplicableError
from seethrough.methods.base import Context


class NumpyRunner(ModelRunner):
    """A model that is a plain numpy function: forward only, no layers."""

    kind = "a numpy function"

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = weight
        self.bias = bias
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        flat = x.detach().cpu().numpy().reshape(x.shape[0], -1)
        return torch.from_numpy(flat @ self.weight.T + self.bias).float()


@pytest.fixture
def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 16, 16)


def numpy_twin(model: nn.Module) -> NumpyRunner:
    layer = model[1]
    return NumpyRunner(layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy())


def method(name: str, **params: object) -> seethrough.registry.Method:  # type: ignore[name-defined]
    return seethrough.get_method(name).cls(**params)


def test_occlusion_runs_on_a_forward_only_runner(linear, x):
    """The same map as on the PyTorch model."""
    runner = numpy_twin(linear)
    on_runner = method("occlusion")(runner, x, target=1)
    on_module = method("occlusion")(linear, x, target=1)
    assert runner.calls > 0
    assert on_runner.map.shape == on_module.map.shape
    torch.testing.assert_close(on_runner.raw, on_module.raw, atol=1e-4, rtol=1e-4)
    assert on_runner.target.classes == (1, 1)


@pytest.mark.parametrize(("name", "what"), [("gradcam", "gradients"), ("saliency", "gradients")])
def test_gradient_and_layer_methods_refuse_it(linear, x, name, what):
    runner = numpy_twin(linear)
    with pytest.raises(MethodNotApplicableError, match=f"{name} needs {what}.*numpy function"):
        method(name)(runner, x, target=0)
    assert runner.calls == 0  # refused before any work


def test_a_differentiable_runner_without_layers_refuses_layer_methods(linear, x):
    class NoLayers(TorchRunner):
        has_layers = False

    with pytest.raises(MethodNotApplicableError, match="gradcam needs layers"):
        method("gradcam")(NoLayers(linear), x, target=0)
    result = method("saliency")(NoLayers(linear), x, target=0)
    assert result.map.shape == (2, 16, 16)


def test_a_torch_runner_gives_what_the_module_gives(linear, x):
    """Passing the runner in place of the network changes nothing."""
    by_module = method("gradcam")(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()).eval(), x)
    assert by_module.layer is not None
    a = method("saliency")(linear, x, target=2)
    b = method("saliency")(TorchRunner(linear), x, target=2)
    torch.testing.assert_close(a.raw, b.raw)


def test_the_context_passes_to_its_runner(linear, x):
    ctx = Context(linear, x, None, None)  # a network is wrapped in a TorchRunner
    assert isinstance(ctx.runner, TorchRunner)
    assert ctx.model is linear
    assert "1" in ctx.named_modules
    torch.testing.assert_close(ctx.outputs(x), linear(x))
    assert as_runner(ctx.runner) is ctx.runner
    forward_only = Context(numpy_twin(linear), x, None, None)
    with pytest.raises(MethodNotApplicableError):
        forward_only.model  # noqa: B018
    assert forward_only.named_modules == {}
    for ask in (
        lambda: forward_only.runner.layer("1"),
        lambda: forward_only.runner.graph_from(None),
        lambda: forward_only.runner.record({}),
    ):
        with pytest.raises(MethodNotApplicableError, match="numpy function"):
            ask()


def test_the_extension_api_exports_the_runner():
    assert extend.ModelRunner is ModelRunner
    assert extend.TorchRunner is TorchRunner
    assert not ModelRunner.differentiable and TorchRunner.differentiable


def _vision_model(module: nn.Module, runner: object = None) -> seethrough.VisionModel:
    from seethrough.models.preprocessing import Preprocessing

    pre = Preprocessing(size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return seethrough.VisionModel(
        module,
        pre,
        [f"c{i}" for i in range(4)],
        name="lin",
        source="file",
        weights="test",
        runner=runner,
    )


def test_explain_runs_a_vision_model_through_its_own_runner(linear, x):
    """A VisionModel that brings its runner (as a Keras or ONNX model does) is run through it
    by explain, and what the runner lacks is refused before any work."""
    twin = numpy_twin(linear)
    own = _vision_model(linear, runner=lambda: twin)
    plain = _vision_model(linear)
    assert isinstance(plain.make_runner(), TorchRunner)
    via_runner = seethrough.explain(own, x, "occlusion", target=1, window=8, stride=8)
    via_module = seethrough.explain(plain, x, "occlusion", target=1, window=8, stride=8)
    assert twin.calls > 0
    for a, b in zip(via_runner, via_module, strict=True):
        np.testing.assert_allclose(a.map, b.map, atol=1e-4)
    with pytest.raises(MethodNotApplicableError, match="gradients"):
        seethrough.explain(own, x, "saliency", target=1)


def test_a_module_without_parameters_runs_where_its_input_is():
    """One fallback for a parameterless module: the input's device (the CPU here), the same
    through Method.__call__ and as_runner."""
    runner = as_runner(nn.Flatten(), torch.device("meta"))
    assert runner.device == torch.device("meta")
    assert as_runner(nn.Flatten()).device == torch.device("cpu")
    assert as_runner(nn.Linear(2, 2), torch.device("meta")).device == torch.device("cpu")
