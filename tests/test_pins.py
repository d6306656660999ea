"""The project's own installs are pinned: every direct dependency has one version in
constraints.txt (the one the suite last passed with), while pyproject.toml keeps open ranges."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINNED_EXTRAS = (
    "dashboard",
    "docs",
    "test",
    "keras",
    "onnx",
    "tensorflow",
    "tabular",
    "parquet",
    "lightning",
    "ray",
    "video",
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _name(requirement: str) -> str:
    """The normalised project name of a requirement (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _direct_dependencies() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in PINNED_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    return {_name(r): r for r in requirements if _name(r) != _name(project["name"])}


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;,]+)", line)
            assert match, f"constraints.txt: not NAME==VERSION: {line!r}"
            name = _name(match.group(1))
            assert name not in pins, f"constraints.txt pins {name} twice"
            pins[name] = match.group(2)
    return pins


def test_every_direct_dependency_is_pinned():
    missing = sorted(set(_direct_dependencies()) - set(_pins()))
    assert not missing, f"pin these in constraints.txt (the version you tested): {missing}"


def test_pyproject_keeps_ranges_for_users():
    exact = [r for r in _direct_dependencies().values() if "==" in r]
    assert not exact, f"pyproject.toml pins versions (pin in constraints.txt instead): {exact}"


def test_the_makefile_installs_with_the_pins():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^PIP_INSTALL := .*pip install .*-c constraints\.txt", makefile, re.M)
    assert "$(PIP_INSTALL) -e" in makefile
