"""The registry: what it lists, in which order, and that it depends on nothing it lists."""

from __future__ import annotations

import pytest

import seethrough
from seethrough.dashboard import service
from seethrough.registry import families, list_methods, list_metrics
from tests.test_cli import _methods_output, cli

# the order the command line and the dashboard have always shown
METHOD_ORDER = [
    ("cam", "cam"),
    ("gradcam", "cam"),
    ("gradcam++", "cam"),
    ("xgradcam", "cam"),
    ("layercam", "cam"),
    ("hirescam", "cam"),
    ("scorecam", "cam"),
    ("eigencam", "cam"),
    ("lime", "perturbation"),
    ("kernelshap", "perturbation"),
    ("occlusion", "perturbation"),
    ("rise", "perturbation"),
    ("saliency", "gradient"),
    ("guided_backprop", "gradient"),
    ("guided_gradcam", "gradient"),
    ("integrated_gradients", "gradient"),
    ("smoothgrad", "gradient"),
    ("gradient_shap", "gradient"),
    ("dff", "concepts"),
    ("attention_rollout", "attention"),
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
