"""The public extension API (``seethrough.extend``) and its guide (docs/extending.md).

The guide's Python blocks are executed here exactly as the page shows them, in order, in one
namespace: the page cannot drift from what works. The methods they register must then behave as
built-in ones: listed by the command line's ``methods`` table and passing the common suite's
checks. Every registration is taken out again afterwards.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import seethrough
from seethrough import extend, registry
from seethrough.cli.main import main

from . import test_common

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "extending.md"

FENCE = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def python_blocks(markdown: str) -> list[str]:
    """The fenced Python blocks of a Markdown text, in order."""
    return FENCE.findall(markdown)


def registered_names(blocks: list[str]) -> list[str]:
    """The ``name = "..."`` of every class the blocks define."""
    return [n for block in blocks for n in re.findall(r'^    name = "([^"]+)"$', block, re.M)]


GUIDE_BLOCKS = python_blocks(GUIDE.read_text())
GUIDE_METHODS = registered_names(GUIDE_BLOCKS)
# parameters that keep the common checks quick on the tiny model (as test_common.FAST does)
FAST = {"sparse_lime": {"n_samples": 64, "n_segments": 8}, "stripes": {"height": 4}}


def forget(names: list[str]) -> None:
    """Take the methods called ``names`` out of the registry, where they are."""
    for name in names:
        if name in registry.METHODS:
            registry.unregister_method(name)


@contextmanager
def registry_kept(names: list[str]) -> Iterator[None]:
    """A block free to register ``names``: what they name now is taken out for the block and
    put back after it, whatever the block registered under them."""
    saved = [registry.METHODS.remove(n) for n in names if n in registry.METHODS]
    try:
        yield
    finally:
        forget(names)
        for info in saved:
            registry.METHODS.add(info)


def run_blocks(blocks: list[str], module: str) -> dict[str, object]:
    """Execute ``blocks`` in order in one fresh module, as a reader would paste them (no
    ``from __future__`` of this file leaks into them)."""
    fresh = types.ModuleType(module)
    sys.modules[module] = fresh  # as for an imported module (dataclasses look it up)
    try:
        for block in blocks:
            exec(compile(block, f"<{module}>", "exec", dont_inherit=True), fresh.__dict__)  # noqa: S102
    finally:
        sys.modules.pop(module, None)
    return fresh.__dict__


@pytest.fixture(scope="module")
def guide() -> Iterator[dict[str, object]]:
    """The guide's examples, run once for the module; their methods unregistered after it."""
    assert GUIDE_METHODS, "the guide registers no method"
    with registry_kept(GUIDE_METHODS):
        namespace = run_blocks(GUIDE_BLOCKS, "extending_guide")
        for value in list(namespace.values()):  # what the page took out again, back in
            if isinstance(value, type) and issubclass(value, extend.Method):
                if value.name in GUIDE_METHODS and value.name not in registry.METHODS:
                    extend.register_method(value)
        yield namespace


def test_the_api_is_the_package_own():
    """One public module re-exports what the built-in methods are made of."""
    for name in extend.__all__:
        assert getattr(extend, name) is not None, name
    assert extend.register_method is registry.register_method
    assert issubclass(seethrough.get_method("gradcam").cls, extend.CAMMethod)
    assert issubclass(seethrough.get_method("saliency").cls, extend.GradientMethod)
    assert issubclass(seethrough.get_method("lime").cls, extend.SurrogateMethod)
    assert issubclass(seethrough.get_method("rise").cls, extend.PerturbationMethod)
    for base in (extend.CAMMethod, extend.GradientMethod, extend.PerturbationMethod):
        assert issubclass(base, extend.Method)


def test_the_cam_variant_takes_under_15_lines():
    block = next(b for b in GUIDE_BLOCKS if "(CAMMethod)" in b)
    assert len(block.strip().splitlines()) < 15, block


def test_the_guide_runs_as_written(guide):
    names = [m.name for m in seethrough.list_methods()]
    for name in GUIDE_METHODS:
        assert name in names
        assert seethrough.get_method(name).cls is guide[seethrough.get_method(name).cls.__name__]
    assert seethrough.get_method("sqgradcam").family == "cam"
    assert seethrough.get_method("input_x_gradient").family == "gradient"
    assert {"p_keep", "alpha", "n_samples", "seed"} <= {
        p.name for p in seethrough.get_method("sparse_lime").params
    }


def test_the_cli_lists_the_guide_methods(guide, capsys):
    try:
        main(["methods"])
    except SystemExit as exc:  # pragma: no cover - a failure would exit non-zero
        assert not exc.code
    out = capsys.readouterr().out
    for name in GUIDE_METHODS:
        assert re.search(rf"(^|\s){re.escape(name)}\s", out, re.M), name


# every check of the common suite, on each method the guide registers
COMMON_CHECKS = [
    test_common.test_state_restored_after_call,
    test_common.test_state_restored_after_exception,
    test_common.test_batch_equals_per_image,
    test_common.test_finite_deterministic_and_described,
    test_common.test_per_image_targets,
    test_common.test_progress_reaches_the_total_and_a_cancel_restores_state,
]


@pytest.mark.parametrize("check", COMMON_CHECKS, ids=lambda f: f.__name__.removeprefix("test_"))
@pytest.mark.parametrize("method", GUIDE_METHODS)
def test_the_guide_methods_pass_the_common_checks(guide, method, check, tiny_input, monkeypatch):
    monkeypatch.setitem(test_common.FAST, method, FAST.get(method, {}))
    check(method, tiny_input)


@pytest.mark.parametrize("wrapper", [test_common.TupleOut, test_common.DictOut])
@pytest.mark.parametrize("method", GUIDE_METHODS)
def test_the_guide_methods_take_tuple_and_dict_outputs(
    guide, method, wrapper, tiny_input, monkeypatch
):
    monkeypatch.setitem(test_common.FAST, method, FAST.get(method, {}))
    test_common.test_tuple_and_dict_outputs(method, wrapper, tiny_input)


def test_a_registration_can_be_taken_back():
    blocks = [
        b.replace('"sqgradcam"', '"sqgradcam_copy"') for b in GUIDE_BLOCKS if "(CAMMethod)" in b
    ]
    with registry_kept(["sqgradcam_copy"]):
        run_blocks(blocks, "once")
        assert "sqgradcam_copy" in registry.METHODS
        with pytest.raises(ValueError, match="registered twice"):
            run_blocks(blocks, "twice")  # another class under a name that is taken
        registry.unregister_method("sqgradcam_copy")
        assert "sqgradcam_copy" not in [m.name for m in seethrough.list_methods()]
        with pytest.raises(seethrough.errors.UnknownMethodError):
            seethrough.get_method("sqgradcam_copy")
        run_blocks(blocks, "again")  # the name is free again


def test_the_readme_extension_example_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Extending", 1)[1].split("\n## ", 1)[0]
    blocks = python_blocks(section)
    assert blocks, "README has no extension example"
    names = registered_names(blocks)
    with registry_kept(names):
        namespace = run_blocks(blocks, "readme_example")
        for name in names:
            assert (
                seethrough.get_method(name).cls
                is namespace[seethrough.get_method(name).cls.__name__]
            )
