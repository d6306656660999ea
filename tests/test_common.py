"""The common suite: every registered method, on the same checks.

A method added to the registry is tested here automatically: hooks removed and model state
unchanged after a call and after a failing call, batch result equal to per-image results,
no NaN, determinism, and model outputs given as tuples or dicts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.core.hooks import count_hooks
from seethrough.registry import list_methods

from .conftest import make_tiny, make_vit

# Parameters that keep the slow methods quick on the tiny model; everything else uses defaults.
FAST = {
    "scorecam": {"batch_size": 4},
    "lime": {"n_samples": 64, "n_segments": 8},
    "kernelshap": {"n_samples": 64, "n_segments": 8},
    "rise": {"n_samples": 64},
    "occlusion": {"window": 6, "stride": 4},
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 4},
    "gradient_shap": {"n_samples": 8},
    "feature_inversion": {"n_steps": 20},
}
METHODS = [m.name for m in list_methods()]


def model_for(method: str, **kw) -> nn.Module:
    """The tiny CNN, or a tiny ViT for the methods that need a transformer."""
    family = seethrough.get_method(method).family
    return make_vit() if family == "attention" else make_tiny(**kw)


def run(model, x, method, **kw):
    return seethrough.explain(model, x, method, **{**FAST.get(method, {}), **kw})


def snapshot(model: nn.Module):
    return (
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: p.grad for n, p in model.named_parameters()},
        {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: m for n, m in model.named_modules()},
        {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()},
    )


def messy_model(method: str) -> nn.Module:
    """A model in a state no method may change: mixed train flags, frozen params, stale grads."""
    model = model_for(method, inplace=True)
    model.train()
    children = list(model.children())
    children[0].eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 7.0)
    return model


def assert_same_state(before, model):
    after = snapshot(model)
    assert after[0] == before[0], "train/eval flags changed"
    assert after[1] == before[1], "requires_grad changed"
    for name, grad in before[2].items():
        assert after[2][name] is grad, f".grad object of {name} replaced"
        if grad is not None:
            assert torch.equal(after[3][name], before[3][name]), f".grad of {name} changed"
    for name, value in before[4].items():
        assert torch.equal(after[4][name], value), f"parameter {name} changed"
    assert after[5].keys() == before[5].keys() and all(
        after[5][k] is before[5][k] for k in before[5]
    ), "modules replaced"
    assert after[6] == before[6], "parameter storage or memory layout changed"
    assert count_hooks(model) == 0, "hooks left behind"


@pytest.mark.parametrize("method", METHODS)
def test_state_restored_after_call(method, tiny_input):
    model = messy_model(method)
    before = snapshot(model)
    run(model, tiny_input, method)
    assert_same_state(before, model)


@pytest.mark.parametrize("method", METHODS)
def test_state_restored_after_exception(method, tiny_input):
    model = messy_model(method)
    before = snapshot(model)

    def failing_target(output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(model, tiny_input, method, target=failing_target)
    assert_same_state(before, model)


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_per_image(method, tiny_input):
    tiny = model_for(method)
    batch = run(tiny, tiny_input, method)
    assert isinstance(batch, list) and len(batch) == len(tiny_input)
    for i, e in enumerate(batch):
        single = run(tiny, tiny_input[i], method, target=e.target)
        np.testing.assert_allclose(single.raw, e.raw, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(single.map, e.map, rtol=1e-4, atol=1e-6)
        assert single.target == e.target


@pytest.mark.parametrize("method", METHODS)
def test_finite_deterministic_and_described(method, tiny_input):
    tiny = model_for(method)
    first = run(tiny, tiny_input, method)
    second = run(tiny, tiny_input, method)
    for a, b in zip(first, second, strict=True):
        assert np.isfinite(a.raw).all() and np.isfinite(a.map).all()
        assert a.map.shape == tiny_input.shape[-2:]
        assert a.raw.dtype == np.float32 and a.map.dtype == np.float32
        np.testing.assert_array_equal(a.raw, b.raw)
        assert a.method == method and a.seconds > 0
        assert a.params == seethrough.get_method(method).defaults() | FAST.get(method, {})


@pytest.mark.parametrize("method", METHODS)
def test_per_image_targets(method, tiny_input):
    tiny = model_for(method)
    out = run(tiny, tiny_input, method, target=[0, 1, 2])
    assert [e.target for e in out] == [0, 1, 2]
    logits = tiny(tiny_input).detach()
    for i, e in enumerate(out):
        assert e.score == pytest.approx(float(logits[i, i]), rel=1e-5)
        assert e.probability == pytest.approx(float(logits[i].softmax(0)[i]), rel=1e-5)


class TupleOut(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return (self.inner(x), x.mean())


class DictOut(TupleOut):
    def forward(self, x):
        return {"logits": self.inner(x), "aux": x.mean()}


@pytest.mark.parametrize("wrapper", [TupleOut, DictOut])
@pytest.mark.parametrize("method", METHODS)
def test_tuple_and_dict_outputs(method, wrapper, tiny_input):
    tiny = model_for(method)
    plain = run(tiny, tiny_input, method)
    wrapped = run(wrapper(tiny), tiny_input, method)
    assert plain[0].layer is None or wrapped[0].layer == f"inner.{plain[0].layer}"
    for a, b in zip(plain, wrapped, strict=True):
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-7)


def test_torchscript_layer_is_refused_clearly(tiny, tiny_input):
    scripted = torch.jit.script(tiny)
    with pytest.raises(seethrough.errors.MethodNotApplicableError, match="TorchScript"):
        seethrough.explain(scripted, tiny_input, "gradcam", layer="features")
    assert count_hooks(tiny) == 0
