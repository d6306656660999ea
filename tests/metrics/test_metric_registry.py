"""Every registered metric carries complete metadata, so reports and front ends can use it."""

import inspect

import pytest

import seethrough
import seethrough.metrics as metrics
from seethrough.registry import METRIC_CATEGORIES

NEEDS = {"mask", "model", "image", "method"}
ALL = seethrough.list_metrics()


def test_the_issue_s_metrics_are_registered():
    names = {m.name for m in ALL}
    assert {"iou", "pointing_game", "energy_pointing_game", "deletion", "insertion"} <= names
    assert {"hide_top", "average_drop", "increase_in_confidence"} <= names
    assert {"robustness", "cascading_randomization"} <= names
    assert set(METRIC_CATEGORIES) == {m.category for m in ALL}


@pytest.mark.parametrize("info", ALL, ids=lambda m: m.name)
def test_metadata(info):
    assert getattr(metrics, info.name) is info.func  # a plain name in seethrough.metrics
    assert info.category in METRIC_CATEGORIES
    assert isinstance(info.higher_is_better, bool)
    assert set(info.needs) <= NEEDS
    assert info.title and info.summary.endswith((".", "?"))
    if info.range is not None:
        assert info.range[0] < info.range[1]
    params = inspect.signature(info.func).parameters
    first = list(params)[:3]
    if "model" in info.needs:
        assert first[:2] == ["model", "image"]
    else:
        assert first[:2] == ["saliency", "mask"]
    doc = inspect.getdoc(info.func)
    assert len(doc.splitlines()) > 2, "the docstring gives the paper or the formula"


def test_categories_filter():
    for category in METRIC_CATEGORIES:
        assert all(m.category == category for m in seethrough.list_metrics(category))
