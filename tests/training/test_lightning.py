"""The Lightning callback of the explanation recorder: inside ``Trainer.fit`` with validation it
records every epoch with the metrics Lightning logged, explains also inside Lightning's
inference mode, skips the sanity check, resumes a run from a checkpoint, and leaves training
exactly as it was (bit-identical weights for the same seed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

if importlib.util.find_spec("lightning") is None:
    pytest.skip("the [lightning] extra is not installed", allow_module_level=True)

import lightning as L  # noqa: E402

import seethrough  # noqa: E402
from seethrough import errors  # noqa: E402
from seethrough.datasets import make_digits  # noqa: E402
from seethrough.training import ExplanationRecorder, lightning_callback, read_run  # noqa: E402

SIZE = 24
DATA = make_digits(64 + 32 + 6, size=SIZE, seed=7)
X = torch.from_numpy(DATA.images).permute(0, 3, 1, 2).float() / 255  # [0, 1]: shown as is
Y = torch.from_numpy(DATA.labels).long()
PROBES, MASKS, LABELS = X[96:], DATA.masks[96:], DATA.labels[96:].tolist()
LOGGED = ("train_loss", "train_acc", "val_loss", "val_acc")


class Net(nn.Module):
    """conv-BN-ReLU, conv-ReLU, GAP, dropout, linear: Grad-CAM applies, training updates BN
    statistics and draws from torch's generator (dropout, shuffling)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 12, 3, 1, 1), nn.ReLU()
        )  # fmt: skip
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x).mean(dim=(2, 3))))


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True)
        self.log(f"{stage}_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


class Spy(L.Callback):
    """Keeps Lightning's metrics at each training epoch's end, and the grad mode in which
    validation ends (so the validation test explains where autograd is off)."""

    def __init__(self) -> None:
        self.metrics: dict[int, dict[str, float]] = {}
        self.grad_enabled: list[bool] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        logged = trainer.callback_metrics
        self.metrics[trainer.current_epoch + 1] = {k: float(logged[k]) for k in LOGGED}

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self.grad_enabled.append(torch.is_grad_enabled())


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():  # Lightning's advice on workers and logging intervals
        warnings.simplefilter("ignore")
        yield


def fit(
    callbacks: list, epochs: int = 2, seed: int = 0, ckpt: Any = None, model: Any = None
) -> tuple[Classifier, L.Trainer]:
    L.seed_everything(seed, verbose=False)
    model = Classifier() if model is None else model
    train = DataLoader(TensorDataset(X[:64], Y[:64]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(X[64:96], Y[64:96]), batch_size=16)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        callbacks=callbacks,
    )
    trainer.fit(model, train, val, ckpt_path=ckpt)
    return model, trainer


def state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def plain() -> tuple[dict[str, np.ndarray], dict[int, dict[str, float]]]:
    """The weights and logged metrics of a fit without the recorder."""
    spy = Spy()
    model, _ = fit([spy])
    return state(model), spy.metrics


def recorder(out: Any, **kw: Any) -> ExplanationRecorder:
    return ExplanationRecorder(
        PROBES, methods=("gradcam",), masks=MASKS, labels=LABELS, out=out, layer="features.3", **kw
    )


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_fit_records_each_epoch_with_the_logged_metrics_and_changes_no_weight(tmp_path, plain):
    weights, metrics = plain
    callback = lightning_callback(recorder(tmp_path / "run"), model="net")
    assert isinstance(callback, L.Callback)
    model, _ = fit([callback])

    # BN statistics included, bit for bit: the recorder disturbed nothing
    assert_same_weights(weights, state(model))
    assert all(p.requires_grad for p in model.parameters())

    run = read_run(tmp_path / "run")
    assert run.epochs == [1, 2] and run.map_epochs == [1, 2]
    assert [s["epoch"] for s in callback.summaries] == [1, 2]
    for epoch in (1, 2):  # the train and validation metrics Lightning aggregated that epoch
        for name in LOGGED:
            assert run.series(name)[epoch] == pytest.approx(metrics[epoch][name], rel=1e-6)

    # epoch 2's maps are Grad-CAM of the trained net for the probes' labels
    explained = seethrough.explain(
        model.net.eval(), PROBES, "gradcam", target=LABELS, layer="features.3"
    )
    last = run.maps(2)
    for got, e in zip(last["gradcam"], explained, strict=True):
        ref = np.asarray(e.map, dtype=np.float32)
        np.testing.assert_allclose(got, ref / ref.max(), atol=1e-5)
    assert last["predicted"].tolist() == model.net(PROBES).argmax(1).tolist()
    assert len(run.series("pointing_game", "gradcam", run.probes[0])) == 2


def test_validation_mode_explains_inside_no_grad_and_skips_the_sanity_check(tmp_path, plain):
    weights, metrics = plain
    spy = Spy()
    # the LightningModule itself, its layer by its full name; spy after the callback
    rec = ExplanationRecorder(
        PROBES, masks=MASKS, labels=LABELS, out=tmp_path / "run", layer="net.features.3"
    )
    callback = lightning_callback(rec, on="validation")
    model, trainer = fit([callback, spy])

    assert spy.grad_enabled == [False, False, False]  # the sanity check, then two validations
    assert trainer.num_sanity_val_steps > 0 and [s["epoch"] for s in callback.summaries] == [1, 2]
    assert_same_weights(weights, state(model))
    run = read_run(tmp_path / "run")
    assert run.map_epochs == [1, 2]
    for epoch in (1, 2):  # this validation's metrics, the same as at the epoch's end
        assert run.series("val_loss")[epoch] == pytest.approx(metrics[epoch]["val_loss"], rel=1e-6)
        maps = run.maps(epoch)["gradcam"]
        assert np.isfinite(maps).all() and (maps.reshape(len(maps), -1).max(1) == 1).all()


def test_a_hook_inside_inference_mode_records_with_gradients(tmp_path):
    """``trainer.validate`` and some strategies run hooks in ``torch.inference_mode()``, where
    no tensor can take part in autograd: the callback explains all the same, the same maps."""
    module = Classifier()
    module.net.eval()
    outside = lightning_callback(recorder(tmp_path / "outside"), model="net")
    inside = lightning_callback(recorder(tmp_path / "inside"), model="net")
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=0, callback_metrics={})
    outside.on_train_epoch_end(trainer, module)
    with torch.inference_mode():
        trainer.callback_metrics = {"val_loss": torch.tensor(0.25)}  # an inference tensor
        inside.on_fit_start(trainer, module)
        inside.on_train_epoch_end(trainer, module)
        assert torch.is_inference_mode_enabled()
    a, b = read_run(tmp_path / "outside").maps(1), read_run(tmp_path / "inside").maps(1)
    assert a["gradcam"].max() == 1 and np.array_equal(a["gradcam"], b["gradcam"])
    assert read_run(tmp_path / "inside").series("val_loss") == {1: 0.25}
    assert not module.net.training and all(p.grad is None for p in module.parameters())


def test_a_resumed_fit_appends_epochs_to_the_run(tmp_path):
    out, ckpt = tmp_path / "run", tmp_path / "last.ckpt"
    first = lightning_callback(recorder(out, every=2), model="net", initial=True)
    model, trainer = fit([first], epochs=1)
    trainer.save_checkpoint(ckpt)
    assert [s["epoch"] for s in first.summaries] == [0, 1]

    second = lightning_callback(recorder(out, every=2), model="net", initial=True)
    fit([second], epochs=3, ckpt=ckpt, model=model)
    assert [s["epoch"] for s in second.summaries] == [2, 3]  # no epoch 0 again

    run = read_run(out)
    assert run.epochs == [0, 1, 2, 3] and run.map_epochs == [0, 2]  # every=2
    keys = [(r.epoch, r.image, r.method, r.metric) for r in run.rows]
    assert len(keys) == len(set(keys))
    assert set(run.series("train_loss")) == {1, 2, 3}  # no loss before training
    assert set(run.series("recorder_seconds")) == {0, 1, 2, 3}


def test_bad_input_fails_before_the_first_epoch(tmp_path):
    rec = ExplanationRecorder(PROBES, labels=[0, 1, 2, 3, 4, 12], out=tmp_path / "run")
    with pytest.raises(errors.UnknownClassError, match="12"):
        fit([lightning_callback(rec, model="net")], epochs=1)
    with pytest.raises(errors.InvalidParameterError, match="no attribute 'backbone'"):
        fit([lightning_callback(recorder(tmp_path / "run"), model="backbone")], epochs=1)
    with pytest.raises(errors.InvalidParameterError, match="not an nn.Module"):
        fit([lightning_callback(recorder(tmp_path / "run"), model=lambda m: m.parameters())])
    assert not (tmp_path / "run").exists()
    with pytest.raises(errors.InvalidParameterError, match="'train' or 'validation'"):
        lightning_callback(rec, on="test")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidParameterError, match="attribute name or a function"):
        lightning_callback(rec, model=3)  # type: ignore[arg-type]


def test_only_global_rank_zero_explains_and_writes(tmp_path):
    callback = lightning_callback(recorder(tmp_path / "run"), model="net", initial=True)
    other = SimpleNamespace(is_global_zero=False, current_epoch=0, callback_metrics={})
    callback.on_fit_start(other, Classifier())
    callback.on_train_start(other, Classifier())
    callback.on_train_epoch_end(other, Classifier())
    assert callback.summaries == [] and not (tmp_path / "run").exists()


@pytest.mark.slow  # a fresh interpreter imports seethrough
def test_seethrough_imports_without_lightning():
    code = (
        "import sys\n"
        "import seethrough, seethrough.training as t\n"
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules\n"
        "sys.modules['lightning'] = None\n"
        "from seethrough.errors import MissingDependencyError\n"
        "try:\n"
        "    t.lightning_callback(None)\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'seethrough[lightning]'" in done.stdout, done.stderr
