"""The training demo: Grad-CAM learns to point at the digit, from chance to the benchmark's level.

One short demo run (fewer images and epochs than ``seethrough train-demo``) is shared by the
tests of this module; it is marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest

from seethrough.core.threads import torch_threads
from seethrough.datasets.synthetic import make_digits
from seethrough.errors import InvalidParameterError
from seethrough.metrics import pointing_game
from seethrough.training import read_run
from seethrough.training.demo import DEMO_PROBES, REFERENCE_POINTING_GAME, run_demo
from tests.test_cli import cli, one_error_line

EPOCHS, N_TRAIN, BATCH, LR = 8, 3000, 32, 3e-3  # half the demo's training steps


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A short demo run (one torch thread: steady on a shared machine), with its report."""
    out = tmp_path_factory.mktemp("demo") / "run"
    with torch_threads(1):
        result = run_demo(out, epochs=EPOCHS, n_train=N_TRAIN, batch=BATCH, lr=LR)
    return result


def _chance() -> float:
    """The pointing game of a map that knows nothing: a uniform draw of its peak hits the
    digit with the probability of the digit's share of the image."""
    probes = make_digits(DEMO_PROBES, seed=1, split="test")
    return float(probes.masks.mean())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gradcam_pointing_game_rises_from_chance_to_the_benchmark_level(demo):
    pg = demo.pointing_game
    assert sorted(pg) == list(range(EPOCHS + 1))
    chance = _chance()
    assert 0.05 < chance < 0.2
    # epoch 0, the untrained net: about chance (well below any trained level)
    assert pg[0] <= chance + 0.25, pg
    # the end: near the fully trained benchmark model's level, and far above the start
    assert pg[EPOCHS] >= REFERENCE_POINTING_GAME - 0.15, pg
    assert pg[EPOCHS] - pg[0] >= 0.3, pg
    assert demo.accuracy[EPOCHS] >= 0.5 > demo.accuracy[0] + 0.3, demo.accuracy
    assert demo.loss[EPOCHS] < demo.loss[1] < np.log(10) + 0.1, demo.loss


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_run_on_disk_is_what_the_demo_reports(demo):
    run = read_run(demo.out)
    assert run.epochs == list(range(EPOCHS + 1)) == run.map_epochs
    assert run.methods == ["gradcam"] and run.has_masks
    assert run.probes == [f"digit{i:02d}" for i in range(DEMO_PROBES)]
    assert run.labels == make_digits(DEMO_PROBES, seed=1, split="test").labels.tolist()
    assert run.mean_series("pointing_game", "gradcam") == pytest.approx(demo.pointing_game)
    assert run.series("loss") == pytest.approx(demo.loss)
    assert set(run.series("train_accuracy")) == set(range(1, EPOCHS + 1))
    # the last epoch's pointing game, recomputed from the maps on disk and the probes' masks
    maps, masks = run.maps(EPOCHS)["gradcam"], run.probe_masks()
    again = np.mean([pointing_game(m, k) for m, k in zip(maps, masks, strict=True)])
    assert again == pytest.approx(demo.pointing_game[EPOCHS])
    cost = run.series("recorder_seconds")
    assert sum(cost.values()) == pytest.approx(demo.recorder_seconds, rel=0.01)
    assert demo.report is not None and demo.report.is_file()
    assert demo.settled == run.settled_epoch()


def test_bad_settings_are_refused_before_anything_is_rendered(tmp_path):
    for bad in ({"epochs": 0}, {"n_train": 0}, {"probes": 0}, {"lr": 0.0}):
        with pytest.raises(InvalidParameterError):
            run_demo(tmp_path / "run", **bad)
    assert not (tmp_path / "run").exists()


def test_train_demo_command_refuses_an_unknown_method_in_one_line(capsys, tmp_path):
    code, out, err = cli(capsys, "train-demo", "--out", str(tmp_path / "run"), "--methods", "nope")
    assert code == 2
    assert "nope" in one_error_line(err)
    assert not (tmp_path / "run").exists()
