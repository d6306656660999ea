"""The documentation site: it builds with ``mkdocs build --strict`` (no warning, no broken link or
reference), offline, and its method and metric tables are the registry's.

Skipped when the ``docs`` extra is not installed (it is part of the ``test`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import seethrough

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parents[1]


def load_hooks() -> ModuleType:
    """docs/hooks.py, the site's build-time helpers, as a module."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with --strict into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "WARNING" not in log and "ERROR" not in log, log
    return out


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def test_the_methods_page_lists_every_registered_method(site):
    html = page(site, "methods")
    for m in seethrough.list_methods():
        assert f'id="{hooks._anchor(m.name)}"' in html, m.name  # its section
        assert f"<code>{m.name}</code>" in html, m.name  # its row of the table
        for p in m.params:
            assert f"<code>{p.name}</code>" in html, (m.name, p.name)
    # in the registry's order
    positions = [html.index(f'id="{hooks._anchor(m.name)}"') for m in seethrough.list_methods()]
    assert positions == sorted(positions)


def test_the_metrics_page_lists_every_registered_metric(site):
    html = page(site, "metrics")
    for m in seethrough.list_metrics():
        assert f"<code>{m.name}</code>" in html, m.name
        assert m.title.replace("&", "&amp;") in html, m.title


def test_a_quoted_marker_is_left_as_it_is(site):
    html = page(site, "development")
    assert "registry:methods" in html  # the page names the marker in code
    assert 'id="method-gradcam"' not in html


def test_the_build_is_offline(site):
    """No web font, script or stylesheet from elsewhere: every page works without a network."""
    external = re.compile(
        r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I
    )
    for html_file in site.rglob("*.html"):
        html = html_file.read_text()
        assert not external.search(html), html_file
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html, html_file


def test_the_api_reference_is_generated(site):
    index = page(site, "reference")
    for name in ("seethrough.explain", "seethrough.load_model", "seethrough.Explanation"):
        assert f'id="{name}"' in index, name
    extend = page(site, "reference/extend")
    assert 'id="seethrough.extend.register_method"' in extend
    assert ":class:" not in index and ":func:" not in extend  # roles read as code


def test_readme_links_point_to_pages():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert "docs/extending.md" in targets and "docs/methods.md" in targets
    for target in targets:
        assert (ROOT / target).is_file(), target


def test_rst_roles_become_code():
    text = ":func:`~seethrough.api.explain` and :class:`Param` read::\n\n    x = 1\n"
    assert hooks.rst_to_markdown(text) == "`explain` and `Param` read:\n\n    x = 1\n"


def test_markers_are_replaced_on_their_own_line_only():
    text = f"intro\n\n{hooks.METHODS_MARKER}\n\nquoted `{hooks.METHODS_MARKER}`\n"
    out = hooks.on_page_markdown(text)
    assert out.count("| name | method |") == 1
    assert out.endswith(f"quoted `{hooks.METHODS_MARKER}`\n")
