"""The registry: what it lists, in which order, and that it depends on nothing it lists."""

from __future__ import annotations

import pytest

import seethrough
from seethrough.dashboard import service
from seethrough.registry import families, list_methods, list_metrics
from tests.test_cli import _methods_output, cli

# the order the command line and the dashboard show: family, then rank (new methods take the
# place their rank gives them among the older ones, whose order never changes)
METHOD_ORDER = [
    ("cam", "cam"),
    ("gradcam", "cam"),
    ("gradcam++", "cam"),
    ("smoothgradcam++", "cam"),
    ("xgradcam", "cam"),
    ("layercam", "cam"),
    ("hirescam", "cam"),
    ("gradcam_elementwise", "cam"),
    ("scorecam", "cam"),
    ("sscam", "cam"),
    ("iscam", "cam"),
    ("ablationcam", "cam"),
    ("eigencam", "cam"),
    ("kpcacam", "cam"),
    ("fullgrad", "cam"),
    ("lime", "perturbation"),
    ("kernelshap", "perturbation"),
    ("shapley_sampling", "perturbation"),
    ("occlusion", "perturbation"),
    ("feature_ablation", "perturbation"),
    ("rise", "perturbation"),
    ("drise", "perturbation"),
    ("dax", "perturbation"),
    ("saliency", "gradient"),
    ("input_x_gradient", "gradient"),
    ("guided_backprop", "gradient"),
    ("deconvnet", "gradient"),
    ("guided_gradcam", "gradient"),
    ("integrated_gradients", "gradient"),
    ("deeplift", "gradient"),
    ("deeplift_shap", "gradient"),
    ("smoothgrad", "gradient"),
    ("noise_tunnel", "gradient"),
    ("gradient_shap", "gradient"),
    ("lrp", "gradient"),
    ("dff", "concepts"),
    ("attention_rollout", "attention"),
    ("legrad", "attention"),
    ("attention_heads", "attention"),
    ("feature_maps", "features"),
    ("feature_inversion", "features"),
]
METRIC_ORDER = [
    ("iou", "localisation"),
    ("iou_sweep", "localisation"),
    ("pointing_game", "localisation"),
    ("energy_pointing_game", "localisation"),
    ("deletion", "faithfulness"),
    ("insertion", "faithfulness"),
    ("hide_top", "faithfulness"),
    ("average_drop", "faithfulness"),
    ("increase_in_confidence", "faithfulness"),
    ("robustness", "robustness"),
    ("cascading_randomization", "randomization"),
]


def test_methods_are_listed_in_their_display_order():
    assert [(m.name, m.family) for m in list_methods()] == METHOD_ORDER
    assert [(m.name, m.family) for m in seethrough.list_methods()] == METHOD_ORDER
    assert families() == list(dict.fromkeys(f for _, f in METHOD_ORDER))
    assert [m.name for m in list_methods(family="gradient")] == [
        n for n, f in METHOD_ORDER if f == "gradient"
    ]


def test_metrics_are_listed_in_their_display_order():
    assert [(m.name, m.category) for m in list_metrics()] == METRIC_ORDER
    assert [m.name for m in list_metrics("faithfulness")] == [
        n for n, c in METRIC_ORDER if c == "faithfulness"
    ]


def test_the_command_line_lists_methods_and_metrics_in_display_order(capsys, monkeypatch):
    out = _methods_output(capsys, monkeypatch, 80)  # the compact layout: one block per method
    starts = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert starts == [n for n, _ in METHOD_ORDER]
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = cli(capsys, "metrics")
    assert code == 0
    names = [n for n, _ in METRIC_ORDER]
    rows = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert [r for r in rows if r in names] == names


@pytest.mark.filterwarnings("ignore")
def test_the_dashboard_groups_methods_in_display_order():
    groups = service.methods_by_family()
    assert list(groups) == list(dict.fromkeys(f for _, f in METHOD_ORDER))
    assert [(m.name, m.family) for ms in groups.values() for m in ms] == METHOD_ORDER


# ---------------------------------------------------------------------------------------------
# the registry type, ranks, and methods from outside the package


@pytest.fixture
def extra_methods():
    """Registers test methods; takes every one of them out again afterwards."""
    from seethrough.registry import METHODS, register_method, unregister_method

    added: list[str] = []

    def add(cls):
        register_method(cls)
        added.append(cls.name)
        return cls

    yield add
    for name in added:
        if name in METHODS:
            unregister_method(name)


def _method(name: str, family: str, **attrs):
    from seethrough.methods.base import Method

    return type(name, (Method,), {"name": name, "title": name.upper(), "family": family, **attrs})


def test_a_method_without_rank_follows_its_family_and_a_new_family_follows_the_known(
    extra_methods,
):
    extra_methods(_method("zz_first", "cam", rank=5))
    extra_methods(_method("aa_unranked", "cam"))
    extra_methods(_method("my_method", "aaa_family"))
    names = [m.name for m in list_methods()]
    cams = [m.name for m in list_methods(family="cam")]
    assert cams == ["zz_first"] + [n for n, f in METHOD_ORDER if f == "cam"] + ["aa_unranked"]
    assert names[-1] == "my_method" and families()[-1] == "aaa_family"
    assert [n for n in names if n in dict(METHOD_ORDER)] == [n for n, _ in METHOD_ORDER]


def test_unregister_removes_a_method_and_names_are_unique(extra_methods):
    from seethrough.errors import UnknownMethodError
    from seethrough.registry import METHODS, get_method, register_method, unregister_method

    cls = extra_methods(_method("Temp_Method", "cam"))
    assert get_method("temp_method").cls is cls and "TEMP_METHOD" in METHODS
    register_method(cls)  # the same class again: nothing changes
    with pytest.raises(ValueError, match="registered twice"):
        register_method(_method("temp_method", "cam"))
    assert unregister_method("temp_method").cls is cls
    with pytest.raises(UnknownMethodError, match="unknown method 'temp_method'"):
        get_method("temp_method")


def test_one_registry_type_for_methods_and_metrics():
    from seethrough.errors import UnknownMethodError, UnknownMetricError
    from seethrough.registry import METHODS, METRICS, Registry, get_method, get_metric

    assert isinstance(METHODS, Registry) and isinstance(METRICS, Registry)
    with pytest.raises(UnknownMethodError, match="Did you mean: gradcam"):
        get_method("gradcma")
    with pytest.raises(UnknownMetricError, match="Did you mean: deletion"):
        get_metric("deletoin")
    assert get_method(" GradCAM ").name == "gradcam" and get_metric("IoU").name == "iou"
    assert METRICS.groups() == ["localisation", "faithfulness", "robustness", "randomization"]


def test_a_registry_fills_itself_once_on_first_use():
    from seethrough.errors import UnknownMethodError
    from seethrough.registry import MethodInfo, Registry

    calls = []
    reg: Registry[MethodInfo] = Registry(
        "method", UnknownMethodError, group=lambda m: m.family, groups=(), source=lambda m: m.cls
    )
    reg.fill_with(lambda: calls.append(reg.add(seethrough.get_method("cam"))))
    assert calls == []
    assert [m.name for m in reg.select()] == ["cam"] and reg.get("cam").title == "CAM"
    assert len(calls) == 1


def test_threads_wait_for_the_registry_to_fill():
    import threading
    import time

    from seethrough.errors import UnknownMethodError
    from seethrough.registry import MethodInfo, Registry

    calls, seen = [], []
    reg: Registry[MethodInfo] = Registry(
        "method", UnknownMethodError, group=lambda m: m.family, groups=(), source=lambda m: m.cls
    )

    def slow_fill():
        calls.append(reg.select())  # a lookup from inside the loader sees what is there so far
        time.sleep(0.2)
        reg.add(seethrough.get_method("cam"))

    reg.fill_with(slow_fill)
    threads = [
        threading.Thread(target=lambda: seen.append([m.name for m in reg.select()]))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [[]] and seen == [["cam"]] * 3


def test_a_method_validates_its_own_parameters_registered_or_not():
    from seethrough.errors import InvalidParameterError
    from seethrough.methods.cam import GradCAM
    from seethrough.registry import Param

    unregistered = _method("nowhere", "cam", params=(Param("k", 3, "a count", int, min=1),))
    assert unregistered(k="4").config == {"k": 4}
    with pytest.raises(InvalidParameterError, match="must be >= 1"):
        unregistered(k=0)
    with pytest.raises(InvalidParameterError, match="method 'nowhere' has no parameter 'kk'"):
        unregistered(kk=1)

    class Quieter(GradCAM):  # a subclass keeps its parent's name and parameters
        pass

    assert Quieter(relu=False).config == {"relu": False}


def test_an_explanation_keeps_the_title_it_was_given(tmp_path):
    import numpy as np

    from seethrough.explanation import Explanation

    zeros = np.zeros((2, 2), np.float32)
    e = Explanation(raw=zeros, map=zeros, method="gradcam", title="Grad-CAM")
    assert e.caption().splitlines()[0] == "Grad-CAM"
    back = Explanation.load(e.save(tmp_path)["json"])
    assert back.title == "Grad-CAM"
    assert Explanation(raw=zeros, map=zeros, method="mine").title == "mine"


# ---------------------------------------------------------------------------------------------
# the import structure


def test_the_registry_imports_nothing_it_lists():
    import ast
    from pathlib import Path

    import seethrough.registry as registry

    tree = ast.parse(Path(registry.__file__).read_text())
    inside = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module
    }
    assert inside == {"errors"}
    assert not any(
        isinstance(node, ast.Import) and any(a.name.startswith("seethrough") for a in node.names)
        for node in ast.walk(tree)
    )


def test_the_import_contracts_hold():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("import-linter is not installed (the `test` extra has it)")
    proc = subprocess.run(
        [command, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
