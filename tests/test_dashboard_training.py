"""The dashboard's "Training run" view: runs listed under the folder the server was started
with and picked by name (never a path outside it), an epoch's overlays per probe and method,
the metrics vs epoch and the settled epoch; ``seethrough dashboard --runs DIR``."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from seethrough import dashboard
from seethrough.core.threads import torch_threads
from seethrough.dashboard import APP_PATH
from seethrough.dashboard import service as svc
from seethrough.errors import InvalidParameterError
from seethrough.training.report import picture
from tests.test_cli import cli, one_error_line
from tests.test_dashboard_command import _free_port, fake_server  # noqa: F401  (a fixture)
from tests.training.test_recorder import PROBES, new_recorder, train

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

EPOCHS = 3


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A runs folder: ``tiny`` (epochs 0 to 3, trained between them), ``team/copy`` (the same
    run, nested), a hidden run, a run too deep, and a link to a run outside the folder."""
    base = tmp_path_factory.mktemp("runs")
    with torch_threads(1):
        rec = new_recorder(base / "tiny")
        train(rec, epochs=EPOCHS)
    outside = tmp_path_factory.mktemp("outside")
    for where in (base / "team" / "copy", base / ".hidden" / "run", base / "a" / "b" / "c" / "d"):
        _copy_run(base / "tiny", where)
    _copy_run(base / "tiny", outside / "secret")
    try:
        (base / "link").symlink_to(outside / "secret", target_is_directory=True)
    except OSError:  # no links on this system: the other refusals still hold
        pass
    return base


def _copy_run(src: Path, dst: Path) -> None:
    for f in src.rglob("*"):
        if f.is_file():
            target = dst / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())


# --------------------------------------------------------------------------------- service


def test_list_runs_names_the_run_folders_under_the_root(root):
    assert svc.list_runs(root) == ["team/copy", "tiny"]
    assert svc.list_runs(root / "tiny") == ["."]
    assert svc.list_runs(root / "no-such-folder") == []


@pytest.mark.parametrize(
    "name, why",
    [
        ("..", "'..' leads out"),
        ("../outside/secret", "'..' leads out"),
        ("tiny/../../outside", "'..' leads out"),
        ("team/../tiny", "'..' leads out"),
        ("/etc", "a path, not the name"),
        ("C:/Windows", "a path, not the name"),
        ("tiny\\..\\..", "not a run name"),
        ("", "not a run name"),
        ("link", "outside the runs folder"),
        ("tiny/maps", "no such run"),
        (".hidden/run", "no such run"),
        ("a/b/c/d", "no such run"),
    ],
)
def test_a_name_outside_the_list_is_refused_before_anything_is_read(root, name, why):
    if name == "link" and not (root / "link").is_symlink():
        pytest.skip("no symbolic links here")
    with pytest.raises(InvalidParameterError, match=why):
        svc.open_run(root, name)


def test_an_absolute_path_to_a_real_run_is_refused(root):
    with pytest.raises(InvalidParameterError, match="a path, not the name"):
        svc.open_run(root, str(root / "tiny"))
    with pytest.raises(InvalidParameterError, match="a path, not the name"):
        svc.open_run(root / "team", str(root / "tiny"))  # a run, but outside that root


def test_load_epoch_lays_each_methods_map_over_its_probe(root):
    run = svc.open_run(root, "tiny")
    assert run.map_epochs == list(range(EPOCHS + 1))
    views = {e: svc.load_epoch(run, e) for e in run.map_epochs}
    for epoch, view in views.items():
        with np.load(root / "tiny" / "maps" / f"epoch-{epoch:04d}.npz") as data:
            maps, predicted, confidence = data["gradcam"], data["predicted"], data["confidence"]
        assert [p.name for p in view.probes] == run.probes
        for i, probe in enumerate(view.probes):
            assert [m for m, _ in probe.overlays] == ["gradcam"]
            np.testing.assert_array_equal(probe.overlays[0][1], picture(PROBES[i], maps[i]))
            np.testing.assert_array_equal(probe.image, picture(PROBES[i]))
            assert f"predicted {predicted[i]} ({confidence[i]:.2f})" in probe.caption
            assert f"label {run.labels[i]}" in probe.caption
    first, last = views[0].probes[0].overlays[0][1], views[EPOCHS].probes[0].overlays[0][1]
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 1  # training moved the map
    with pytest.raises(InvalidParameterError, match="epoch 99 has no maps"):
        svc.load_epoch(run, 99)


def test_metric_panels_and_the_settled_epoch_come_from_the_table(root):
    run = svc.open_run(root, "tiny")
    panels = dict(svc.metric_panels(run))
    with (root / "tiny" / "table.csv").open() as f:
        loss = {
            int(r["epoch"]): float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "loss"
        }
    assert set(loss) == {1, 2, 3} and panels["loss"] == {"loss": loss}
    assert set(panels["pointing game"]["gradcam"]) == set(range(EPOCHS + 1))
    settled = run.settled_epoch()
    text = svc.settled_text(run)
    if settled is None:
        assert text.startswith("Attention has not settled yet")
    else:
        assert text.startswith(f"Attention settled at epoch {settled}:")
    assert "Grad-CAM" in text and "0.9" in text


def test_runs_root_is_the_servers_folder(monkeypatch, root):
    monkeypatch.delenv(svc.RUNS_ENV, raising=False)
    assert svc.runs_root() is None
    monkeypatch.setenv(svc.RUNS_ENV, str(root))
    assert svc.runs_root() == root.resolve()


# --------------------------------------------------------------------------------- the page


def _training_page(monkeypatch, root: Path | None) -> AppTest:
    if root is None:
        monkeypatch.delenv(svc.RUNS_ENV, raising=False)
    else:
        monkeypatch.setenv(svc.RUNS_ENV, str(root))

    def no_model(spec):
        raise AssertionError(f"the training view loaded a model: {spec}")

    monkeypatch.setattr(svc.MODELS, "get", no_model)
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.session_state["view"] = "Training run"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at: AppTest) -> tuple[list[list[str]], list[list[str]]]:
    """Per probe: the image URLs and their captions."""
    return [img.value for img in at.image], [img.captions for img in at.image]


def test_the_epoch_slider_changes_the_maps_shown(monkeypatch, root):
    at = _training_page(monkeypatch, root)
    assert not at.error
    assert at.selectbox(key="run").options == ["team/copy", "tiny"]
    at.selectbox(key="run").set_value("tiny").run()
    slider = at.select_slider(key="epoch.tiny")
    assert slider.options == [str(e) for e in range(EPOCHS + 1)] and slider.value == EPOCHS
    urls_last, captions = _shown(at)
    assert len(urls_last) == len(PROBES)
    assert all(c[1] == f"Grad-CAM · epoch {EPOCHS}" for c in captions)
    run = svc.open_run(root, "tiny")
    assert any(svc.settled_text(run) == c.value for c in at.caption)
    titles = [title for title, _ in svc.metric_panels(run)]
    assert "loss" in titles and len(at.get("vega_lite_chart")) == len(titles)  # one chart each
    assert sorted(m.value for m in at.markdown) == sorted(f"**{t}**" for t in titles)

    slider.set_value(0).run()
    assert not at.exception and not at.error
    urls_first, captions = _shown(at)
    assert all(c[1] == "Grad-CAM · epoch 0" for c in captions)
    assert [u[0] for u in urls_first] == [u[0] for u in urls_last]  # the probes stay
    assert all(a[1] != b[1] for a, b in zip(urls_first, urls_last, strict=True))  # maps change

    at.select_slider(key="epoch.tiny").set_value(EPOCHS).run()
    assert _shown(at)[0] == urls_last


def test_without_a_runs_folder_the_view_says_how_to_enable_it(monkeypatch):
    at = _training_page(monkeypatch, None)
    assert not at.error and not at.image
    assert "seethrough dashboard --runs DIR" in at.info[0].value


# --------------------------------------------------------------------------------- command


def test_the_command_passes_the_runs_folder_to_the_server(capsys, monkeypatch, root, fake_server):  # noqa: F811
    pytest.importorskip("streamlit")
    monkeypatch.setenv(dashboard.RUNS_ENV, "/inherited")  # never from the environment
    code, out, err = cli(capsys, "dashboard", "--port", str(_free_port()))
    assert code == 0, err
    assert dashboard.RUNS_ENV not in fake_server[-1].env

    code, out, err = cli(capsys, "dashboard", "--port", str(_free_port()), "--runs", str(root))
    assert code == 0, err
    assert fake_server[-1].env[dashboard.RUNS_ENV] == str(root.resolve())

    started = len(fake_server)
    missing = root / "missing"
    code, out, err = cli(capsys, "dashboard", "--port", str(_free_port()), "--runs", str(missing))
    assert code == 2 and out == "" and len(fake_server) == started
    assert one_error_line(err) == f"error: --runs {missing}: not a folder"
    assert os.fspath(missing) in err
