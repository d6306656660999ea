"""The dashboard in a real browser: a system Chromium driven by Playwright (no browser download).

The dashboard is served by ``python -m seethrough.cli.main dashboard`` (what ``seethrough
dashboard`` runs) on a free loopback port. One test uploads the cat photo, checks its
predictions, runs Grad-CAM and then Grad-CAM + LIME and checks the results and their downloads;
another uploads a text file and checks for one line of error and no traceback; a third checks
that Grad-CAM's result shows while LIME still runs, cancels that long LIME run from its progress
bar and runs the same model again.

The seconds from the click on **Explain** to a visible Grad-CAM result are printed (run with
``-s``) and written to ``test-artifacts/dashboard/timings.json``; they are reported, not asserted
(beyond generous timeouts). Screenshots and the server's log land in the same folder.

Environment variables:

- ``SEETHROUGH_CHROMIUM``: the Chromium executable (default ``/usr/bin/chromium``, then
  ``chromium`` on the PATH).
- ``SEETHROUGH_BROWSER_TESTS=1``: a missing browser or Playwright fails the tests instead of
  skipping them (CI sets it, so they never silently skip there).
- ``SEETHROUGH_DASHBOARD_PORT``: serve on this port instead of one the system picks.
- ``SEETHROUGH_SCREENSHOT_TO``: also write the README screenshot (the page after Grad-CAM +
  LIME, cropped to its content, 1400 px wide, palette PNG) to this path, relative to the
  repository root unless absolute: ``SEETHROUGH_SCREENSHOT_TO=docs/dashboard.png
  .venv/bin/python -m pytest tests/test_dashboard_browser.py`` regenerates ``docs/dashboard.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
# The main area scrolls inside its own container: a tall viewport keeps the whole page in view.
VIEWPORT = {"width": 1400, "height": 2600}
MS = 1000  # Playwright timeouts are in milliseconds


def _unavailable(reason: str) -> None:
    """Skip, or fail where SEETHROUGH_BROWSER_TESTS=1 (CI) says the browser test must run."""
    if os.environ.get("SEETHROUGH_BROWSER_TESTS") == "1":
        pytest.fail(f"{reason} (SEETHROUGH_BROWSER_TESTS=1: the browser test must run)")
    pytest.skip(reason)


def _find_chromium() -> str:
    """SEETHROUGH_CHROMIUM, /usr/bin/chromium or chromium on the PATH; skips (or fails) if none."""
    configured = os.environ.get("SEETHROUGH_CHROMIUM")
    if configured:
        if not Path(configured).is_file():
            _unavailable(f"SEETHROUGH_CHROMIUM={configured}: no such file")
        return configured
    found = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
    if found is None:
        _unavailable(
            "no Chromium at /usr/bin/chromium or on the PATH: install it (Debian: apt-get "
            "install chromium) or set SEETHROUGH_CHROMIUM"
        )
    return found


def _free_port() -> int:
    if os.environ.get("SEETHROUGH_DASHBOARD_PORT"):
        return int(os.environ["SEETHROUGH_DASHBOARD_PORT"])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """A served dashboard: its URL, its process and its log."""

    def __init__(self, url: str, proc: subprocess.Popen, log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        _unavailable(f"playwright is not importable ({exc}); pip install -e '.[test]'")
    return _find_chromium()


@pytest.fixture(scope="module")
def dashboard(chromium) -> Dashboard:
    """The dashboard served in its own process group, always stopped at the end."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*-failure.png"):
        old.unlink()
    port = _free_port()
    log = ARTIFACTS / "server.log"
    cmd = [sys.executable, "-m", "seethrough.cli.main", "dashboard"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ, STREAMLIT_CLIENT_TOOLBAR_MODE="minimal", PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
    server = Dashboard(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the dashboard exited with {proc.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"no HTTP 200 on /_stcore/health in 60 s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (the CLI and streamlit under it), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, dashboard):
    """A new browser session (a new Streamlit session) on the dashboard."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30 * MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@contextlib.contextmanager
def _diagnosed(page, dashboard: Dashboard, name: str):
    """On a failure: a screenshot of the page and the server's log in the message."""
    try:
        yield
    except Exception as exc:
        shot = ARTIFACTS / f"{name}-failure.png"
        with contextlib.suppress(Exception):
            _screenshot(page, shot)
        raise AssertionError(
            f"{exc}\n\nscreenshot: {shot}\n--- dashboard log (tail) ---\n{dashboard.log_tail()}"
        ) from exc


def _idle(page, timeout_s: float = 120) -> None:
    """Wait until the script is not running (call it after waiting for the run's new content)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        state="attached", timeout=timeout_s * MS
    )


def _run_from(page, button, timeout_s: float = 120) -> None:
    """Click ``button`` and wait for the run it starts to end. Waiting for a result instead
    would be fooled by the previous run's result, which stays on the page until the new run
    replaces it, and the page is still idle the moment after the click."""
    from playwright.sync_api import TimeoutError as Timeout

    button.click()
    busy = page.locator('[data-testid="stApp"]:not([data-test-script-state="notRunning"])')
    with contextlib.suppress(Timeout):  # a run may start and end between two polls
        busy.wait_for(state="attached", timeout=5 * MS)
    _idle(page, timeout_s)


# the main area's height; the bottom of the page's top-level blocks and of the sidebar's content
# (a closed expander's inside keeps its boxes below it, so only top-level blocks count)
MAIN_HEIGHT_JS = """() => document.querySelector('[data-testid="stMain"]').scrollHeight"""
CONTENT_BOTTOM_JS = """() => Math.max(...[...document.querySelectorAll(
    '[data-testid="stMainBlockContainer"] > [data-testid="stVerticalBlock"] > *,'
    + '[data-testid="stSidebarUserContent"]'
)].map(e => e.getBoundingClientRect().bottom))"""


def _screenshot(page, path: Path) -> None:
    """The whole page, cut below its last element: the viewport grows to the main area's height
    (the main area scrolls inside its own container, not in the document)."""
    height = page.evaluate(MAIN_HEIGHT_JS)
    if height > page.viewport_size["height"]:
        page.set_viewport_size({"width": VIEWPORT["width"], "height": int(height) + 40})
        page.wait_for_timeout(500)
    bottom = page.evaluate(CONTENT_BOTTOM_JS)
    size = page.viewport_size
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], bottom + 48)}
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), clip=clip)


def _readme_screenshot(page, path: Path) -> None:
    """The page as a palette PNG, small enough for the README."""
    from PIL import Image

    raw = ARTIFACTS / "readme-raw.png"
    _screenshot(page, raw)
    with Image.open(raw) as im:
        small = im.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, optimize=True)
    raw.unlink()


def _prediction_classes(page) -> list[str]:
    """The class column of the top-k table (a canvas grid; its accessible cells hold the text)."""
    cells = page.get_by_test_id("stDataFrame").locator('[role="gridcell"][aria-colindex="1"]')
    cells.first.wait_for(state="attached")
    return [t.strip() for t in cells.all_text_contents()]


def _choose_upload(page, path: Path) -> None:
    page.get_by_test_id("stRadio").filter(has_text="Sample photo").get_by_text(
        "Upload", exact=True
    ).click()
    uploader = page.get_by_test_id("stMain").get_by_test_id("stFileUploaderDropzoneInput")
    uploader.set_input_files(str(path))


def _result(page, prefix: str):
    """The result image whose caption starts with ``prefix``, and that caption."""
    caption = page.get_by_test_id("stImageCaption").filter(
        has_text=re.compile("^" + re.escape(prefix))
    )
    return page.get_by_test_id("stImage").filter(has=caption), caption


def _caption_seconds(caption, title: str) -> float:
    """The seconds in a result's caption, checked: ``title · <class> <p> · <s> s · <model>``."""
    text = caption.inner_text().strip()
    found = re.fullmatch(
        re.escape(title) + r" · .*cat 0\.\d\d · (\d+\.\d+) s · efficientnet_lite0", text
    )
    assert found, text
    return float(found[1])


def _wait_loaded(page, image, timeout_s: float) -> None:
    img = image.locator("img")
    img.wait_for(state="visible", timeout=timeout_s * MS)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0",
        arg=img.element_handle(),
        timeout=timeout_s * MS,
    )


def _multiselect_add(page, family: str, option: str) -> None:
    combo = page.get_by_role("combobox", name=family, exact=True)
    combo.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_test_id("stMultiSelect").filter(has=combo).get_by_text(
        option, exact=True
    ).wait_for()


@pytest.fixture(scope="module")
def cat_png(tmp_path_factory) -> Path:
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("upload") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def test_explain_grad_cam_then_lime_on_an_uploaded_photo(page, dashboard, cat_png):
    timings: dict[str, float | str] = {}
    with _diagnosed(page, dashboard, "explain"):
        start = time.perf_counter()
        page.goto(dashboard.url)
        # the bundled sample photo first: its predictions are the page's first full render
        page.get_by_test_id("stDataFrame").get_by_text("Egyptian cat").wait_for(
            state="attached", timeout=120 * MS
        )
        timings["page_to_predictions_s"] = round(time.perf_counter() - start, 3)
        _idle(page)

        _choose_upload(page, cat_png)
        page.get_by_test_id("stImageCaption").filter(has_text="chelsea.png · 451x300").wait_for(
            timeout=60 * MS
        )
        _idle(page)
        classes = _prediction_classes(page)
        assert len(classes) == 5, classes
        assert "cat" in classes[0], classes
        assert sum("cat" in c for c in classes) >= 2, classes
        target = page.get_by_role("combobox", name="Target class", exact=True).input_value()
        assert re.fullmatch(r".*cat \(0\.\d\d\)", target), target

        # Grad-CAM is preselected; time the click to a visible, loaded result with its caption
        cam_family = page.get_by_role("combobox", name="CAM family", exact=True)
        page.get_by_test_id("stMultiSelect").filter(has=cam_family).get_by_text(
            "Grad-CAM", exact=True
        ).wait_for()
        gradcam, gradcam_caption = _result(page, "Grad-CAM ·")
        assert gradcam.count() == 0
        explain = page.get_by_role("button", name="Explain", exact=True)
        start = time.perf_counter()
        explain.click()
        gradcam_caption.wait_for(state="visible", timeout=120 * MS)
        _wait_loaded(page, gradcam, 120)
        seconds = time.perf_counter() - start
        timings["explain_to_gradcam_s"] = round(seconds, 3)
        print(f"\ndashboard: Explain -> Grad-CAM result: {seconds:.2f} s")
        _idle(page)
        timings["gradcam_compute_s"] = _caption_seconds(gradcam_caption, "Grad-CAM")

        # add LIME, 100 samples to keep it short
        _multiselect_add(page, "Perturbation", "LIME")
        expander = page.get_by_test_id("stExpander").filter(has_text="LIME parameters")
        expander.locator("summary").click()
        n_samples = expander.get_by_label("n_samples", exact=True)
        n_samples.fill("100")
        n_samples.press("Enter")
        _idle(page)
        lime, lime_caption = _result(page, "LIME ·")
        start = time.perf_counter()
        explain.click()
        lime_caption.wait_for(state="visible", timeout=180 * MS)
        _wait_loaded(page, lime, 60)
        timings["explain_to_gradcam_and_lime_s"] = round(time.perf_counter() - start, 3)
        _idle(page, 180)

        assert n_samples.input_value() == "100"
        expander.locator("summary").click()  # closed again: the screenshots show the results
        n_samples.wait_for(state="hidden")
        assert gradcam.count() == 1 and lime.count() == 1
        _wait_loaded(page, gradcam, 30)
        timings["lime_compute_s"] = _caption_seconds(lime_caption, "LIME")
        page.get_by_role("heading", name="Results").wait_for()
        buttons = page.get_by_test_id("stDownloadButton")
        for label in ("PNG", "NPZ", "manifest"):
            assert buttons.filter(has_text=re.compile(f"^{label}$")).count() == 2, label
        assert page.get_by_test_id("stException").count() == 0
        errors = page.get_by_test_id("stAlertContentError")
        assert errors.count() == 0, errors.all_inner_texts()

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        timings["chromium"] = page.context.browser.version
        (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
        print(f"dashboard timings: {json.dumps(timings)}")
        _screenshot(page, ARTIFACTS / "dashboard.png")
        readme = os.environ.get("SEETHROUGH_SCREENSHOT_TO")
        if readme:
            _readme_screenshot(page, ROOT / readme)

        # LIME's manifest says the run used the 100 samples typed in its form (checked after the
        # screenshots: a clicked button stays highlighted)
        lime_column = page.get_by_test_id("stColumn").filter(has=lime_caption)
        with page.expect_download() as download:
            lime_column.get_by_role("button", name="manifest", exact=True).click()
        manifest = json.loads(Path(download.value.path()).read_text())
        assert manifest["method"] == "lime", manifest
        assert manifest["params"]["n_samples"] == 100, manifest["params"]


def test_a_text_file_upload_gives_one_line_of_error(page, dashboard, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    with _diagnosed(page, dashboard, "bad-upload"):
        page.goto(dashboard.url)
        page.get_by_test_id("stRadio").filter(has_text="Sample photo").wait_for(timeout=120 * MS)
        _idle(page)
        _choose_upload(page, notes)
        alert = page.get_by_test_id("stAlertContentError").filter(has_text="notes.txt")
        alert.wait_for(timeout=60 * MS)
        _idle(page)
        message = alert.inner_text().strip()
        assert "not an image file type" in message, message
        assert len(message.splitlines()) == 1, message
        body = page.locator("body").inner_text()
        assert "Traceback" not in body and 'File "' not in body, body
        assert page.get_by_test_id("stException").count() == 0
        _screenshot(page, ARTIFACTS / "bad_upload.png")


def test_cancel_stops_a_long_run_and_the_model_stays_usable(page, dashboard):
    from playwright.sync_api import expect

    with _diagnosed(page, dashboard, "cancel"):
        page.goto(dashboard.url)
        page.get_by_test_id("stDataFrame").get_by_text("Egyptian cat").wait_for(
            state="attached", timeout=120 * MS
        )
        _idle(page)
        _multiselect_add(page, "Perturbation", "LIME")  # 1000 samples: seconds of work
        _idle(page)
        page.get_by_role("button", name="Explain", exact=True).click()
        # the progress bar is fed by the library's callback; Cancel sits above it
        page.get_by_text(re.compile(r"^LIME: \d+/1000$")).wait_for(timeout=120 * MS)
        # Grad-CAM ran first: its result is on the page while LIME still runs
        running = page.get_by_test_id("stImageCaption").filter(has_text="Grad-CAM ·")
        assert running.count() == 1
        _wait_loaded(page, page.get_by_test_id("stImage").filter(has=running), 30)
        _screenshot(page, ARTIFACTS / "running.png")
        page.get_by_role("button", name="Cancel", exact=True).click()
        page.get_by_text("Cancelled", exact=False).wait_for(timeout=60 * MS)
        _idle(page)
        captions = page.get_by_test_id("stImageCaption")
        assert captions.filter(has_text="LIME ·").count() == 0
        # Grad-CAM ran before LIME: its finished result is kept
        assert captions.filter(has_text="Grad-CAM ·").count() >= 1
        _screenshot(page, ARTIFACTS / "cancelled.png")

        # the same model runs again at once: no hooks or lock left behind by the stopped run
        _run_from(
            page,
            page.get_by_test_id("stMultiSelect")
            .filter(has_text="LIME")
            .get_by_role("button", name=re.compile("Clear all|Remove"))
            .first,
        )
        _run_from(page, page.get_by_role("button", name="Explain", exact=True))
        # the page drops the previous run's elements in a state update of its own after the
        # run's end; CI twice counted two results the moment the page said it was idle
        captions = page.get_by_test_id("stImageCaption")
        expect(captions.filter(has_text="Grad-CAM ·")).to_have_count(1, timeout=30 * MS)
        assert page.get_by_test_id("stImageCaption").filter(has_text="LIME ·").count() == 0
        assert page.get_by_test_id("stException").count() == 0
