"""Many dashboard sessions at once, and sessions that stop mid-run.

- A cancelled run (any method) is never cached and releases the model's lock at once.
- The page's Cancel message says where the run stopped (:class:`RunProgress`).
- A session stopped mid-run (what Streamlit does to a session's script when its page is
  closed, and to the running script when Cancel reruns the page) stops its method at the next
  progress report, frees the model and caches nothing of it.
- Eight sessions at once, each uploading its own image and explaining it with Grad-CAM and
  LIME: each gets its own image's results, and the process's memory stays bounded.

The pages run in this process through Streamlit's AppTest, which swaps two process globals
for each run (the runtime and the config getter) and puts them back at the end: overlapping
runs would undo each other's, so the concurrent test pins one set for all of them.
"""

from __future__ import annotations

import io
import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import seethrough
from seethrough.dashboard import APP_PATH
from seethrough.dashboard import service as svc
from seethrough.errors import CancelledError
from tests.test_common import FAST
from tests.test_dashboard_service import tiny_vm

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = streamlit_testing.AppTest

CNN_METHODS = [
    m.name
    for m in seethrough.list_methods()
    if m.family != "attention" and "classification" in m.tasks
]
SESSIONS = 8
LIME = {"n_samples": 12, "n_segments": 16}  # few samples: the test is about sessions, not LIME
PEAK_GROWTH_LIMIT = 1536 * 2**20  # bytes of resident memory the 8 sessions may add


# ---------------------------------------------------------------------------------------------
# the service: cancelled runs


@pytest.fixture
def slot() -> svc.ModelSlot:
    return svc.ModelSlot(tiny_vm())


def coloured_image(i: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """Image ``i`` of a set that differ clearly: background colour, shape, its place."""
    rng = np.random.default_rng(i)
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    w, h = size
    x0, y0 = (i % 4) * w // 5, (i // 4) * h // 3
    box = (x0, y0, x0 + w // 3, y0 + h // 2)
    fill = tuple(255 - c for c in background)
    (draw.ellipse if i % 2 else draw.rectangle)(box, fill=fill)
    return image


@pytest.mark.parametrize("method", CNN_METHODS)
def test_a_cancelled_run_is_never_cached_and_frees_the_model(slot, method):
    image = coloured_image(0, (40, 32))
    cache = svc.ResultCache()
    params = FAST.get(method, {})
    reports: list[tuple[int, int]] = []

    def cancel_at_first(done: int, total: int) -> bool:
        reports.append((done, total))
        return False

    with pytest.raises(CancelledError):
        svc.run_method(slot, image, method, params=params, progress=cancel_at_first, cache=cache)
    assert len(reports) == 1 and len(cache) == 0 and cache.hits == 0
    assert slot.lock.acquire(blocking=False), "the model's lock is still held"
    slot.lock.release()

    reports.clear()
    e = svc.run_method(
        slot,
        image,
        method,
        params=params,
        progress=lambda d, t: reports.append((d, t)),
        cache=cache,
    )
    assert reports and reports[-1][0] == reports[-1][1]  # computed again, to the end
    assert e.method == method and len(cache) == 1 and cache.hits == 0
    assert svc.run_method(slot, image, method, params=params, cache=cache) is e
    assert cache.hits == 1


def test_run_progress_says_where_a_cancel_stopped_the_run():
    record = svc.RunProgress(3)
    record.end()
    assert (
        record.cancelled() == "Cancelled before the first method started: no method had finished."
    )

    record = svc.RunProgress(3)
    record.start("Grad-CAM")
    record.report(0, 1)
    record.report(1, 1)
    record.finish()
    record.start("Score-CAM")
    record.report(0, 1152)
    record.report(64, 1152)
    assert record.cancelled(wait=0.01) == (
        "Cancelled: Score-CAM is still running (at 64/1152) and stops at its next progress "
        "report; the 1 method that had finished is shown below."
    )
    record.end()
    assert record.cancelled() == (
        "Cancelled: Score-CAM stopped at 64/1152; the 1 method that had finished is shown below."
    )

    record = svc.RunProgress(2)
    record.start("Grad-CAM")
    record.finish()
    record.start("LIME")
    record.end()
    assert record.cancelled() == (
        "Cancelled: LIME stopped before it started; the 1 method that had finished is shown below."
    )
    record = svc.RunProgress(2)
    for title in ("Grad-CAM", "LIME"):
        record.start(title)
        record.finish()
    record.end()
    assert record.cancelled() == (
        "Cancelled after every method had finished: the 2 methods that had finished are shown "
        "below."
    )


# ---------------------------------------------------------------------------------------------
# pages


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def open_upload(at: AppTest, name: str, data: bytes, methods: list[str]) -> AppTest:
    """A fresh page: upload ``data``, choose ``methods`` (each in its family's list)."""
    at.run()
    no_exception(at)
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="upload").set_value((name, data, "image/png")).run()
    no_exception(at)
    for family in seethrough.registry.families():
        chosen = [m for m in methods if seethrough.get_method(m).family == family]
        at.multiselect(key=f"methods.{family}").set_value(chosen)
    at.run()
    no_exception(at)
    return at


def param_widgets(at: AppTest, method: str, values: dict[str, int]) -> None:
    for name, value in values.items():
        at.get_by_key(f"param.{method}.{name}").set_value(value)


@contextmanager
def counted_forwards(module) -> Iterator[list[int]]:
    calls = [0]

    def count(m, args):
        calls[0] += 1

    handle = module.register_forward_pre_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


@contextmanager
def recorded(monkeypatch) -> Iterator[tuple[list, list]]:
    """The script runners AppTest starts and the run records the page makes, as they come."""
    from streamlit.testing.v1 import app_test

    runners: list = []
    records: list[svc.RunProgress] = []

    class Runner(app_test.LocalScriptRunner):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            runners.append(self)

    class Record(svc.RunProgress):
        def __init__(self, methods: int) -> None:
            super().__init__(methods)
            records.append(self)

    monkeypatch.setattr(app_test, "LocalScriptRunner", Runner)
    monkeypatch.setattr(svc, "RunProgress", Record)
    yield runners, records


def wait_for(condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


@pytest.mark.slow
def test_a_session_stopped_mid_run_frees_the_model_and_caches_nothing(monkeypatch):
    """Streamlit stops a session's script when its page is closed (and the running script when
    Cancel reruns the page): the next Streamlit call in the script raises its stop, here the
    progress bar's update in the method's progress report."""
    slot = svc.MODELS.get(svc.ModelSpec())
    image = coloured_image(1, (160, 120))
    svc.RESULTS.clear()
    at = open_upload(
        AppTest.from_file(str(APP_PATH), default_timeout=300),
        "stop.png",
        png(image),
        ["gradcam", "scorecam"],
    )
    param_widgets(at, "scorecam", {"batch_size": 8})  # 1280 channels: 160 batches to go
    with recorded(monkeypatch) as (runners, records), counted_forwards(slot.model.module) as calls:
        page = threading.Thread(target=lambda: at.button(key="explain").click().run())
        page.start()
        wait_for(lambda: records and records[0].title == "Score-CAM" and records[0].done >= 16)
        runners[-1].request_stop()  # what a closed page (or a Cancel) does to this run
        stopped_at = calls[0]
        page.join(timeout=60)
        assert not page.is_alive(), "the page's run did not stop"
        record = records[0]
        assert record.ended.is_set() and record.title == "Score-CAM"
        assert 0 < record.done < record.total
        assert calls[0] <= stopped_at + 1  # at most the batch in flight
        assert slot.lock.acquire(timeout=1), "the model's lock is still held"
        slot.lock.release()
        time.sleep(0.3)
        assert calls[0] <= stopped_at + 1  # and nothing runs on in the background
    (_, gradcam), *rest = at.session_state["results"]
    assert not rest and gradcam.method == "gradcam"
    assert len(svc.RESULTS) == 1  # Grad-CAM's result; nothing of the stopped Score-CAM

    at.session_state["cancelled"] = True  # the Cancel button's callback, in the page's next run
    at.run()
    no_exception(at)
    assert [w.value for w in at.warning] == [
        f"Cancelled: Score-CAM stopped at {record.done}/{record.total}; the 1 method that had "
        "finished is shown below."
    ]


# ---------------------------------------------------------------------------------------------
# eight sessions at once


@contextmanager
def overlapping_apptests(monkeypatch) -> Iterator[None]:
    """Let AppTest runs overlap in threads, as a server's sessions do: the first run's mock
    runtime stays the process's runtime until the end (AppTest installs one per run and removes
    it when the run ends), one config override (``global.appTest``) holds for every run instead
    of one per run, and the runs share one script cache, as a server's sessions do (each run
    compiling the page for itself trips CPython 3.11's ast module when two compile at once:
    "AST constructor recursion depth mismatch")."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test, local_script_runner
    from streamlit.testing.v1.util import patch_config_options

    class KeepFirst(type(Runtime)):
        def __setattr__(cls, name: str, value: object) -> None:
            if name != "_instance":
                super().__setattr__(name, value)
            elif value is not None and Runtime._instance is None:
                Runtime._instance = value

    monkeypatch.setattr(app_test, "Runtime", KeepFirst("Runtime", (Runtime,), {}))
    monkeypatch.setattr(app_test, "patch_config_options", lambda overrides: nullcontext())
    scripts = ScriptCache()
    monkeypatch.setattr(local_script_runner, "ScriptCache", lambda: scripts)
    try:
        with patch_config_options({"global.appTest": True}):
            yield
    finally:
        Runtime._instance = None


def rss() -> int:
    """This process's resident memory now (bytes; 0 where /proc is missing)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * resource.getpagesize()


def peak_rss() -> int:
    """This process's peak resident memory so far (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@pytest.mark.slow
def test_eight_sessions_at_once_each_get_their_own_image(monkeypatch):
    slot = svc.MODELS.get(svc.ModelSpec())
    vm = slot.model
    images = [coloured_image(i) for i in range(SESSIONS)]
    uploads = [png(im) for im in images]
    svc.RESULTS.clear()
    before, samples, sampling = rss(), [rss()], threading.Event()

    def sample() -> None:
        while not sampling.wait(0.02):
            samples.append(rss())

    pages: list[AppTest | BaseException | None] = [None] * SESSIONS

    def session(i: int) -> None:
        try:
            at = AppTest.from_file(str(APP_PATH), default_timeout=300)
            open_upload(at, f"shape{i}.png", uploads[i], ["gradcam", "lime"])
            param_widgets(at, "lime", LIME)
            at.button(key="explain").click().run()
            pages[i] = at
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            pages[i] = exc

    sampler = threading.Thread(target=sample)
    threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
    start = time.perf_counter()
    with overlapping_apptests(monkeypatch):
        sampler.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        sampling.set()
        sampler.join()
    seconds = time.perf_counter() - start
    assert not any(t.is_alive() for t in threads)
    peak = max(samples)
    print(
        f"\n{SESSIONS} sessions (upload, Grad-CAM, LIME {LIME['n_samples']} samples) at once: "
        f"{seconds:.1f} s; resident memory {before / 2**20:.0f} MiB before, peak "
        f"{peak / 2**20:.0f} MiB (+{(peak - before) / 2**20:.0f} MiB); process peak "
        f"{peak_rss() / 2**20:.0f} MiB"
    )

    maps = []
    for i, at in enumerate(pages):
        assert isinstance(at, AppTest), at
        no_exception(at)
        assert not at.error, [e.value for e in at.error]
        (_, gradcam), (_, lime) = at.session_state["results"]
        assert (gradcam.method, lime.method) == ("gradcam", "lime")
        seen = vm.preprocessing.display_image(images[i])
        for e in (gradcam, lime):  # each session's results are of its own image
            np.testing.assert_array_equal(e.image, seen)
        alone = seethrough.explain(vm, images[i], "gradcam", target=gradcam.target)
        np.testing.assert_allclose(gradcam.map, alone.map, rtol=1e-4, atol=1e-5)
        alone = seethrough.explain(vm, images[i], "lime", target=lime.target, **LIME)
        np.testing.assert_allclose(lime.map, alone.map, rtol=1e-4, atol=1e-6)
        maps.append(gradcam.map)
    for i in range(SESSIONS):
        for j in range(i):
            assert not np.allclose(maps[i], maps[j]), (i, j)  # a mix-up would show
    assert len(svc.RESULTS) == 2 * SESSIONS
    assert slot.lock.acquire(blocking=False)
    slot.lock.release()
    if before:
        assert peak - before < PEAK_GROWTH_LIMIT
