"""The explanation recorder: it never disturbs training, its table holds what explain and the
metrics give, a run resumes without duplicates, and bad input fails before training starts."""

from __future__ import annotations

import csv
import random
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seethrough
from seethrough import errors, registry
from seethrough.core.threads import torch_threads
from seethrough.datasets import make_digits
from seethrough.extend import CAMMethod, CAMState, register_method
from seethrough.metrics import energy_pointing_game, iou, pointing_game
from seethrough.models import Preprocessing, VisionModel
from seethrough.training import ExplanationRecorder, read_run, recorder, settled_epoch
from seethrough.training import run as run_module

SIZE = 32
PRE = Preprocessing(size=SIZE, resize="squash", mean=(0.5,) * 3, std=(0.25,) * 3)
DATA = make_digits(64 + 6, size=SIZE, seed=5)
PROBES, MASKS, LABELS = DATA.images[64:], DATA.masks[64:], DATA.labels[64:]
TRAIN_X = torch.from_numpy(DATA.images[:64]).permute(0, 3, 1, 2).float().div(255).sub(0.5) / 0.25
TRAIN_Y = torch.from_numpy(DATA.labels[:64])


class Net(nn.Module):
    """conv-BN-ReLU, conv-ReLU, global average pool, dropout, linear: Grad-CAM applies and
    training draws from torch's global generator (dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU()
        )  # fmt: skip
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x).mean(dim=(2, 3))))


def make_model(seed: int = 0) -> VisionModel:
    torch.manual_seed(seed)
    labels = [str(i) for i in range(10)]
    return VisionModel(
        Net(), PRE, labels, name="tiny", source="test", weights="random", default_layer="features.4"
    )


class Boom(Exception):
    """What the broken method raises."""


def _draw_from_every_generator() -> float:
    return float(torch.rand(()).item() + np.random.rand() + random.random())


class DrawCAM(CAMMethod):
    """Grad-CAM that also draws from the global generators (as a careless method might)."""

    name = "test_draw_cam"
    title = "Drawing CAM"

    def weights(self, s: CAMState) -> torch.Tensor:
        _draw_from_every_generator()
        return s.gradients.mean(dim=(2, 3))


class BrokenCAM(CAMMethod):
    """Draws from the generators, then fails."""

    name = "test_broken_cam"
    title = "Broken CAM"

    def weights(self, s: CAMState) -> torch.Tensor:
        _draw_from_every_generator()
        raise Boom("inside the recorder")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small convolutions: one thread is much faster on a shared machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module", autouse=True)
def test_methods() -> Iterator[None]:
    for cls in (DrawCAM, BrokenCAM):
        register_method(cls)
    try:
        yield
    finally:
        for cls in (DrawCAM, BrokenCAM):
            registry.unregister_method(cls.name)


def new_recorder(out, **kw) -> ExplanationRecorder:
    kw = {"methods": ("gradcam",), "masks": list(MASKS), "labels": LABELS, **kw}
    return ExplanationRecorder(list(PROBES), out=out, **kw)


# ----------------------------------------------------------------- training is not disturbed


def train(rec: ExplanationRecorder | None, epochs: int = 3) -> dict[str, torch.Tensor]:
    """A few batches per epoch: shuffled by torch's generator, jittered by numpy's and Python's,
    with dropout; the recorder runs between backward and step (grads present, train mode),
    inside ``torch.no_grad()``. Returns the weights, buffers and optimizer state."""
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    vm = make_model()
    module = vm.module
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    if rec is not None:
        rec.record(vm, 0)
    for epoch in range(1, epochs + 1):
        module.train()
        order = torch.randperm(len(TRAIN_Y))
        for step in range(4):
            idx = order[step * 16 : (step + 1) * 16]
            x = TRAIN_X[idx] * (1 + 0.1 * np.random.rand()) + 0.01 * random.random()
            optimizer.zero_grad()
            loss = F.cross_entropy(module(x), TRAIN_Y[idx])
            loss.backward()
            if rec is not None and step == 3:
                with torch.no_grad():
                    rec.record(vm, epoch, loss=loss.item())
                    assert not torch.is_grad_enabled()
                assert module.training
            optimizer.step()
    state = {f"model.{k}": v.clone() for k, v in module.state_dict().items()}
    for i, s in optimizer.state_dict()["state"].items():
        state[f"optimizer.{i}"] = s["momentum_buffer"].clone()
    return state


@pytest.fixture(scope="module")
def baseline() -> dict[str, torch.Tensor]:
    return train(None)


def differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_weights_are_bit_identical_with_the_recorder(baseline, tmp_path):
    rec = new_recorder(tmp_path / "run", methods=("gradcam", DrawCAM.name))
    assert differences(baseline, train(rec)) == []
    assert read_run(tmp_path / "run").map_epochs == [0, 1, 2, 3]


def test_the_comparison_catches_a_recorder_that_keeps_the_random_states(
    baseline, tmp_path, monkeypatch
):
    """Without restoring the generators, the drawing method changes dropout and the order."""
    monkeypatch.setattr(recorder._RandomStates, "restore", lambda self: None)
    rec = new_recorder(tmp_path / "run", methods=("gradcam", DrawCAM.name))
    assert differences(baseline, train(rec))


def snapshot(module: nn.Module) -> dict[str, object]:
    return {
        "tensors": {k: v.clone() for k, v in module.state_dict().items()},
        "training": [m.training for m in module.modules()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "grads": [p.grad for p in module.parameters()],
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].copy(),
        "python": random.getstate(),
        "grad_mode": torch.is_grad_enabled(),
    }


def test_state_is_identical_after_an_exception_inside_the_recorder(tmp_path):
    vm = make_model()
    module = vm.module
    module.train()
    module.features[0].weight.requires_grad_(False)
    module(TRAIN_X[:4]).sum().backward()
    rec = new_recorder(tmp_path / "run", methods=("gradcam", BrokenCAM.name))
    before = snapshot(module)
    with torch.no_grad(), pytest.raises(Boom):
        rec.record(vm, 0, loss=1.0)
    after = snapshot(module)
    assert differences(before.pop("tensors"), after.pop("tensors")) == []
    assert all(a is b for a, b in zip(before.pop("grads"), after.pop("grads"), strict=True))
    assert np.array_equal(before.pop("numpy"), after.pop("numpy"))
    assert torch.equal(before.pop("torch"), after.pop("torch"))
    assert before == after
    assert not (tmp_path / "run" / "table.csv").exists()  # nothing half written


# ------------------------------------------------------------------------- what it records


def test_the_table_holds_what_explain_and_the_metrics_give(tmp_path):
    vm = make_model(seed=3)
    rec = new_recorder(tmp_path / "run", methods=("gradcam", "saliency"))
    summary = rec.record(vm, 4, loss=0.5, accuracy=0.25)
    run = read_run(tmp_path / "run")
    table = {(r.image, r.method, r.metric): r.value for r in run.rows if r.epoch == 4}
    masks = [PRE.mask(m) for m in MASKS]
    with torch.no_grad():
        probabilities = vm.module.eval()(PRE(list(PROBES))).softmax(dim=1)
    arrays = run.maps(4)
    for method in ("gradcam", "saliency"):
        explanations = seethrough.explain(vm, list(PROBES), method, target=list(LABELS))
        for i, (e, mask) in enumerate(zip(explanations, masks, strict=True)):
            name = run.probes[i]
            assert table[(name, method, "pointing_game")] == pointing_game(e.map, mask)
            assert table[(name, method, "iou")] == iou(e.map, mask)
            assert table[(name, method, "energy")] == energy_pointing_game(e.map, mask)
            np.testing.assert_allclose(arrays[method][i], e.map / e.map.max(), atol=1e-6)
        means = [table[(n, method, "energy")] for n in run.probes]
        assert summary["methods"][method]["energy"] == pytest.approx(np.mean(means))
    for i, name in enumerate(run.probes):
        p = probabilities[i]
        assert table[(name, "", "predicted")] == int(p.argmax())
        assert table[(name, "", "confidence")] == pytest.approx(float(p.max()), abs=1e-6)
        assert table[(name, "", "correct")] == float(int(p.argmax()) == LABELS[i])
    assert table[("", "", "loss")] == 0.5 and table[("", "", "accuracy")] == 0.25
    assert table[("", "", "recorder_seconds")] == summary["recorder_seconds"] > 0
    assert arrays["predicted"].tolist() == probabilities.argmax(1).tolist()
    probes = np.load(tmp_path / "run" / "probes.npz")
    assert np.array_equal(probes["images"], np.stack([PRE.display_image(p) for p in PROBES]))
    assert np.array_equal(probes["masks"], np.stack(masks))
    assert run.info["image_size"] == [SIZE, SIZE] and run.info["model"] == "tiny"


def test_the_parquet_table_equals_the_csv(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    new_recorder(tmp_path / "run").record(make_model(), 0, loss=0.1)
    table = pq.read_table(tmp_path / "run" / "table.parquet").to_pylist()
    with open(tmp_path / "run" / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(table) == len(rows) > 0
    for a, b in zip(table, rows, strict=True):
        assert (a["epoch"], a["image"], a["method"], a["metric"]) == (
            int(b["epoch"]), b["image"], b["method"], b["metric"]
        )  # fmt: skip
        assert a["value"] == float(b["value"])


def test_without_pyarrow_the_csv_is_the_table_and_no_stale_parquet_stays(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "run"
    out.mkdir()
    rows = [run_module.Row(0, "", "", "loss", 2.0)]
    run_module.write_table(out, rows)
    assert (out / "table.parquet").is_file()  # with pyarrow: both
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    rows.append(run_module.Row(1, "", "", "loss", 1.5))
    run_module.write_table(out, rows)
    assert not (out / "table.parquet").exists()  # it would hold epoch 0 only
    assert run_module.read_table(out) == rows
    assert sorted(p.name for p in out.iterdir()) == ["table.csv"]  # no temporary file left


def test_resume_appends_epochs_and_replaces_a_repeated_one(tmp_path):
    out = tmp_path / "run"
    vm = make_model()
    first = new_recorder(out)
    first.record(vm, 0, loss=3.0)
    first.record(vm, 1, loss=2.0)
    per_epoch = len([r for r in read_run(out).rows if r.epoch == 0])
    second = new_recorder(out)
    second.record(vm, 1, loss=1.5)
    summary = second.record(vm, 2, loss=1.0)
    run = read_run(out)
    keys = [(r.epoch, r.image, r.method, r.metric) for r in run.rows]
    assert len(keys) == len(set(keys)) == 3 * per_epoch
    assert run.series("loss") == {0: 3.0, 1: 1.5, 2: 1.0}
    assert run.map_epochs == [0, 1, 2]
    assert summary["correlation"] == pytest.approx(1.0)  # the same weights: the same maps
    assert second.settled_epoch() == 0  # unchanged maps settle at once
    with pytest.raises(errors.InvalidParameterError, match="another run"):
        new_recorder(out, masks=None)
    with pytest.raises(errors.InvalidParameterError, match="another run"):
        new_recorder(out, methods=("saliency",))


def test_every_keeps_the_user_metrics_of_the_epochs_between(tmp_path):
    rec = new_recorder(tmp_path / "run", every=2, masks=None, labels=None)
    summaries = [rec.record(make_model(), e, loss=float(e)) for e in range(3)]
    assert [s["explained"] for s in summaries] == [True, False, True]
    run = read_run(tmp_path / "run")
    assert run.map_epochs == [0, 2] and run.series("loss") == {0: 0.0, 1: 1.0, 2: 2.0}
    assert "pointing_game" not in run.metrics() and "correct" not in run.metrics()


def test_attention_settles_after_the_last_moving_pair():
    assert settled_epoch([0, 1, 2, 3], {1: 0.2, 2: 0.95, 3: 0.97}, 0.9) == 1
    assert settled_epoch([0, 1, 2, 3], {1: 0.95, 2: 0.5, 3: 0.95}, 0.9) == 2
    assert settled_epoch([0, 1, 2, 3], {1: 0.95, 2: 0.95, 3: 0.5}, 0.9) is None
    assert settled_epoch([0], {}, 0.9) is None


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_a_typed_error_at_construction(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(errors.InvalidImageError, match="probe 1"):
        ExplanationRecorder([PROBES[0], bad], out=tmp_path / "r")
    with pytest.raises(errors.InvalidImageError):
        ExplanationRecorder([tmp_path / "missing.png"], out=tmp_path / "r")
    wrong = [np.ones((SIZE, SIZE + 1), bool)] + list(MASKS[1:])
    with pytest.raises(errors.InvalidParameterError, match="mask 0 has shape"):
        new_recorder(tmp_path / "r", masks=wrong)
    with pytest.raises(errors.InvalidParameterError, match="5 masks for 6"):
        new_recorder(tmp_path / "r", masks=list(MASKS[:5]))
    with pytest.raises(errors.UnknownMethodError):
        new_recorder(tmp_path / "r", methods=("gradcamm",))
    with pytest.raises(errors.InvalidParameterError):
        new_recorder(tmp_path / "r", method_params={"gradcam": {"no_such": 1}})
    with pytest.raises(errors.UnknownClassError):
        new_recorder(tmp_path / "r", labels=[-1] * 6)
    with pytest.raises(errors.InvalidParameterError):
        new_recorder(tmp_path / "r", every=0)
    assert not (tmp_path / "r").exists()


def test_a_missing_layer_or_class_fails_at_the_check_and_writes_nothing(tmp_path):
    vm = make_model()
    before = snapshot(vm.module)
    with pytest.raises(errors.UnknownLayerError, match="features.9"):
        new_recorder(tmp_path / "r", layer="features.9").check(vm)
    with pytest.raises(errors.UnknownClassError, match="10 classes"):
        new_recorder(tmp_path / "r", labels=[12] * 6).record(vm, 0)
    assert not (tmp_path / "r").exists()
    after = snapshot(vm.module)
    assert differences(before.pop("tensors"), after.pop("tensors")) == []
    assert np.array_equal(before.pop("numpy"), after.pop("numpy"))
    assert torch.equal(before.pop("torch"), after.pop("torch"))
    assert before == after
    new_recorder(tmp_path / "r", layer="features.4").check(vm)  # a layer it has: fine
