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
    "deeplift_shap": {"n_samples": 4},
    "noise_tunnel": {"n_samples": 4},
    "feature_inversion": {"n_steps": 20},
    "shapley_sampling": {"n_samples": 4, "n_segments": 8},
    "feature_ablation": {"n_segments": 8},
    "dax": {"n_samples": 64, "steps": 20, "n_segments": 8},
    "sscam": {"batch_size": 4, "n_samples": 2},
    "iscam": {"batch_size": 4, "n_samples": 2},
    "ablationcam": {"batch_size": 4},
    "smoothgradcam++": {"n_samples": 2},
}
DETECTION_ONLY = {"drise"}  # checked on detectors in tests/test_detection.py
METHODS = [m.name for m in list_methods() if m.name not in DETECTION_ONLY]


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
        assert a.params == seethrough.get_method(method).validate(FAST.get(method, {}))


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


# ---------------------------------------------------------------------------------------------
# progress and cancellation


@pytest.mark.parametrize("method", METHODS)
def test_progress_reaches_the_total_and_a_cancel_restores_state(method, tiny_input):
    calls: list[tuple[int, int]] = []
    run(model_for(method), tiny_input, method, progress=lambda d, t: calls.append((d, t)))
    assert calls, "progress was never called"
    done = [d for d, _ in calls]
    assert done == sorted(done) and all(0 <= d <= t for d, t in calls)
    assert calls[-1][0] == calls[-1][1]

    for stop_at in sorted({1, len(calls)}):  # the first report, and the last one
        model = messy_model(method)
        before = snapshot(model)
        seen: list[int] = []

        def progress(d: int, t: int, seen: list[int] = seen, stop_at: int = stop_at) -> bool:
            seen.append(d)
            return len(seen) < stop_at

        with pytest.raises(seethrough.errors.CancelledError, match="cancelled after"):
            run(model, tiny_input, method, progress=progress)
        assert len(seen) == stop_at
        assert_same_state(before, model)

    model = messy_model(method)  # a callback may also raise (a web page's stop does)
    before = snapshot(model)

    def interrupt(d: int, t: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        run(model, tiny_input, method, progress=interrupt)
    assert_same_state(before, model)


class Stop(BaseException):
    """Raised by a progress callback, as Streamlit's stop is inside a page's script."""


CHUNKED = [m for m in METHODS if not seethrough.get_method(m).cls.reports_progress]


def count_forwards(model: nn.Module) -> tuple[list[int], object]:
    """A counter of the model's forward calls (and the hook's handle, to remove it)."""
    calls = [0]

    def hook(module, args):
        calls[0] += 1

    return calls, model.register_forward_pre_hook(hook)


@pytest.mark.parametrize("method", CHUNKED)
def test_one_pass_methods_report_each_chunk_and_stop_before_any_work(
    method, tiny_input, monkeypatch
):
    model = model_for(method)
    whole = run(model, tiny_input, method)
    monkeypatch.setattr("seethrough.methods.base.CHUNK_VALUES", tiny_input[0].numel())
    calls: list[tuple[int, int]] = []
    chunked = run(model, tiny_input, method, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]  # one image per chunk here
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-4, atol=1e-6)
        assert a.target == b.target and a.score == pytest.approx(b.score, rel=1e-5)
        assert a.extras.keys() == b.extras.keys() and a.stats.keys() == b.stats.keys()

    forwards, handle = count_forwards(model)
    try:
        with pytest.raises(seethrough.errors.CancelledError, match="after 0 of 3 images"):
            run(model, tiny_input, method, progress=lambda d, t: False)
        assert forwards[0] == 0  # cancelled before the model ran
        with pytest.raises(seethrough.errors.CancelledError, match="after 1 of 3 images"):
            run(model, tiny_input, method, progress=lambda d, t: d == 0)
        assert forwards[0] > 0
    finally:
        handle.remove()
    with pytest.raises(seethrough.errors.InvalidTargetError, match="2 targets given for 3"):
        run(model, tiny_input, method, target=[0, 1])


def test_a_joint_factorization_is_one_chunk(tiny_input, monkeypatch):
    monkeypatch.setattr("seethrough.methods.base.CHUNK_VALUES", tiny_input[0].numel())
    calls: list[tuple[int, int]] = []
    run(make_tiny(), tiny_input, "dff", joint=True, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 3), (3, 3)]


def test_scorecam_reports_each_batch_of_masks_and_stops_at_the_next(tiny_input):
    model = make_tiny()
    run(model, tiny_input, "scorecam")  # the default layer is found once per model
    forwards, handle = count_forwards(model)
    try:
        calls: list[tuple[int, int]] = []
        run(model, tiny_input, "scorecam", batch_size=2, progress=lambda d, t: calls.append((d, t)))
        full = forwards[0]
        total = calls[-1][1]  # N images x C channels
        assert total % 3 == 0 and calls[0] == (0, total)
        assert [d for d, _ in calls] == list(range(0, total + 1, 2))
        before_masks = full - total // 2
        assert before_masks == 1  # the clean pass, then one per batch of 2 masks

        forwards[0] = 0
        with pytest.raises(seethrough.errors.CancelledError):
            run(model, tiny_input, "scorecam", batch_size=2, progress=lambda d, t: False)
        assert forwards[0] == before_masks  # no mask was evaluated

        forwards[0] = 0
        with pytest.raises(seethrough.errors.CancelledError, match=f"after 2 of {total}"):
            run(model, tiny_input, "scorecam", batch_size=2, progress=lambda d, t: d == 0)
        assert forwards[0] == before_masks + 1  # stopped at the next batch, not at the end
    finally:
        handle.remove()
