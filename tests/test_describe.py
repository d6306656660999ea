"""Textual explanations: each number computed as its formula says, and each number in the text
traced back to its source."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import seethrough
from seethrough.describe import (
    GRID_NAMES,
    agreement,
    agreement_words,
    box_mask,
    concentration,
    concentration_words,
    describe,
    describe_agreement,
    describe_many,
    dff_concepts,
    region_shares,
    share_inside,
)
from seethrough.errors import InvalidParameterError
from seethrough.explanation import Explanation, Region
from seethrough.metrics import hide_top, hide_top_sweep
from seethrough.models import Preprocessing, VisionModel

from .conftest import make_tiny

NUMBER = re.compile(r"-?\d+(?:\.\d+)?%?")


def numbers_in(text: str) -> list[str]:
    """Every number of the text, in order, leaving out quoted names ('thing 3')."""
    return NUMBER.findall(re.sub(r"'[^']*'", "''", text))


def shown(value: float, kind: str) -> str:
    """A number as the text prints it, formatted here independently of the module."""
    if kind == "percent":
        return (
            f"{round(100 * value)}%"
            if abs(value) >= 0.01 or value == 0
            else f"{round(100 * value, 2):.2f}%"
        )
    if kind == "int":
        return str(int(value))
    return f"{value:.2f}"


def check_text(d, expected: dict[str, tuple[float, str]]) -> None:
    """The text prints exactly the facts recorded, in order; each fact equals its source."""
    assert numbers_in(d.text) == [s for _, s in d.printed]
    assert set(d.facts) == set(expected), sorted(set(d.facts) ^ set(expected))
    for name, (value, _) in expected.items():
        assert d.facts[name] == pytest.approx(value, abs=1e-12), name
    for name, text in d.printed:
        assert text == shown(expected[name][0], expected[name][1]), name


def explanation(m: np.ndarray, **kw) -> Explanation:
    kw.setdefault("method", "gradcam")
    return Explanation(raw=m.astype(np.float32), map=m.astype(np.float32), **kw)


# --------------------------------------------------------------------------- the numbers


@pytest.mark.parametrize("row", range(3))
@pytest.mark.parametrize("col", range(3))
def test_a_peak_is_named_by_its_grid_cell(row, col):
    m = np.zeros((9, 12))
    m[3 * row + 1, 4 * col + 2] = 5.0
    shares = region_shares(m)
    assert list(shares) == [n for names in GRID_NAMES for n in names]
    assert shares[GRID_NAMES[row][col]] == 1.0
    assert sum(shares.values()) == 1.0
    text = explanation(m).describe()
    assert f"mostly in the {GRID_NAMES[row][col]} (100% of it)." in text


def test_region_shares_by_hand_uneven_split_and_negative_values():
    # 7 rows split 3, 2, 2; 4 columns split 2, 1, 1 (numpy.array_split)
    m = np.zeros((7, 4))
    m[0:3, 0:2] = 1.0  # upper left: 6
    m[3:5, 3] = 2.0  # centre right: 4
    m[6, 2] = 10.0  # lower centre: 10
    m[5, 0] = -50.0  # negative evidence is not mass
    shares = region_shares(m)
    assert shares["upper left"] == pytest.approx(6 / 20)
    assert shares["centre right"] == pytest.approx(4 / 20)
    assert shares["lower centre"] == pytest.approx(10 / 20)
    assert shares["lower left"] == 0.0
    assert all(v == 0 for v in region_shares(-np.ones((5, 5))).values())


def test_concentration_of_a_delta_a_uniform_and_an_empty_map():
    delta = np.zeros((10, 10))
    delta[4, 7] = 1.0
    assert concentration(delta) == 1.0
    assert concentration(np.ones((10, 10))) == pytest.approx(0.1)
    assert concentration(np.ones((10, 10)), top=0.25) == pytest.approx(0.25)
    assert concentration(-np.ones((4, 4))) == 0.0
    # by hand: 20 pixels, top 2 = 9 + 8 of a total 9 + 8 + 18 * 1
    m = np.ones((4, 5))
    m[0, 0], m[3, 4] = 9.0, 8.0
    assert concentration(m) == pytest.approx(17 / 35)
    assert concentration_words(1.0) == "concentrated"
    assert concentration_words(0.3) == "fairly concentrated"
    assert concentration_words(0.1) == "spread"
    with pytest.raises(InvalidParameterError):
        concentration(m, top=0)


def test_share_inside_a_mask_and_a_box_by_hand():
    m = np.arange(16, dtype=float).reshape(4, 4) - 5.0  # positive: 1..10 at flat 6..15
    mask = np.zeros((4, 4), bool)
    mask[3, :] = True  # 7 + 8 + 9 + 10
    total = sum(range(1, 11))
    assert share_inside(m, mask) == pytest.approx(34 / total)
    # pixel centres at i + 0.5: the box (1, 2, 3, 4) holds rows 2-3, columns 1-2
    expected = np.zeros((4, 4), bool)
    expected[2:4, 1:3] = True
    np.testing.assert_array_equal(box_mask((1, 2, 3, 4), (4, 4)), expected)
    assert share_inside(m, (1, 2, 3, 4)) == pytest.approx((4 + 5 + 8 + 9) / total)
    with pytest.raises(InvalidParameterError):
        share_inside(m, np.ones((3, 4), bool))
    with pytest.raises(InvalidParameterError):
        explanation(m).describe(mask=np.ones((2, 2), bool))


def test_agreement_identical_opposite_and_against_scipy():
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    assert agreement(a, a) == (pytest.approx(1.0), 1.0)
    rho, overlap = agreement(a, -a)
    assert rho == pytest.approx(-1.0) and overlap == 0.0
    assert agreement(a, 3 * a + 1)[0] == pytest.approx(1.0)  # ranks only
    b = np.round(a + rng.normal(0, 0.3, a.shape), 1)  # with ties
    assert agreement(a, b)[0] == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    # overlap by hand: the top 10% of 100 pixels is 10 pixels, 4 of them shared
    x, y = np.zeros((10, 10)), np.zeros((10, 10))
    x.ravel()[:10] = 1.0
    y.ravel()[6:16] = 1.0
    assert agreement(x, y)[1] == pytest.approx(0.4)
    assert np.isnan(agreement(np.ones((4, 4)), a[:4, :4])[0])
    assert agreement_words(0.9) == "agree strongly"
    assert agreement_words(-1.0) == "disagree"
    assert agreement_words(float("nan")) == "cannot be compared"
    with pytest.raises(InvalidParameterError):
        agreement(a, a[:4])


def test_dff_concepts_by_hand():
    heat = np.zeros((3, 2, 3))
    heat[0, 0, :] = 1.0  # concept 1 strongest on 3 cells
    heat[1, 1, :2] = 1.0  # concept 2 on 2 cells
    heat[2, 1, 2] = 1.0  # concept 3 on 1 cell
    extras = {
        "concepts": heat,
        "concept_labels": np.array([["cat", "dog"], ["sky", "sea"], ["grass", "tree"]]),
        "concept_scores": np.array([[0.7, 0.2], [0.5, 0.1], [0.9, 0.05]]),
    }
    assert dff_concepts(extras) == [
        (1, "cat", 0.7, 0.5),
        (2, "sky", 0.5, pytest.approx(1 / 3)),
        (3, "grass", 0.9, pytest.approx(1 / 6)),
    ]
    assert dff_concepts({}) == []


# --------------------------------------------------------------------------- the text


def test_every_number_of_the_text_is_a_computed_fact():
    m = np.zeros((12, 12))
    m[1, 1], m[2, 2], m[6, 6], m[10, 11] = 6.0, 2.0, 3.0, -4.0
    e = explanation(
        m,
        title="Grad-CAM",
        target=3,
        label="cat",
        probability=0.8734,
        region=Region("box", 3, "cat", box=(0, 0, 4, 4)),
    )
    d = describe(e)
    expected = {
        "target": (3, "int"),
        "probability": (0.8734, "percent"),
        "share_upper left": (8 / 11, "percent"),
        "share_centre": (3 / 11, "percent"),
        "top_fraction": (0.1, "percent"),
        "concentration": (1.0, "percent"),  # 3 positive pixels among the top 14
        "inside": (8 / 11, "percent"),
    }
    check_text(d, expected)
    assert e.describe() == d.text == describe(e).text  # deterministic
    assert d.text.splitlines() == [
        "Grad-CAM explains 'cat' (class 3), which the model gives 87% probability.",
        "The positive evidence lies mostly in the upper left (73% of it) and the centre (27%).",
        "It is concentrated: the top 10% of pixels hold 100% of it.",
        "73% of it lies inside the explained box.",
    ]
    # a given mask replaces the region; no probability: the score
    mask = np.zeros((12, 12), bool)
    mask[6:, 6:] = True
    e2 = explanation(m, target=5, score=-1.23456)
    check_text(
        describe(e2, mask=mask),
        {
            "target": (5, "int"),
            "score": (-1.23456, "float"),
            "share_upper left": (8 / 11, "percent"),
            "share_centre": (3 / 11, "percent"),
            "top_fraction": (0.1, "percent"),
            "concentration": (1.0, "percent"),
            "inside": (3 / 11, "percent"),
        },
    )


def test_a_small_probability_is_not_printed_as_zero():
    e = explanation(np.ones((6, 6)), target=7, label="cup", probability=0.0031)
    assert e.describe().startswith("gradcam explains 'cup' (class 7), which the model gives 0.31%")
    assert numbers_in(e.describe())[1] == shown(0.0031, "percent") == "0.31%"


def test_a_class_mask_region_and_a_map_without_evidence():
    m = np.ones((6, 6))
    pixels = np.zeros((6, 6), bool)
    pixels[:2] = True
    e = explanation(m, target=1, label="road", region=Region("mask", 1, "road", pixels=pixels))
    assert "33% of it lies inside the explained mask." in e.describe()
    assert describe(e).facts["inside"] == pytest.approx(1 / 3)
    empty = explanation(-np.ones((6, 6)), target=1)
    assert "no positive evidence" in empty.describe()
    check_text(describe(empty), {"target": (1, "int")})


@pytest.fixture(scope="module")
def labelled():
    torch.manual_seed(0)
    labels = [f"thing {i}" for i in range(4)]
    return VisionModel(
        make_tiny(), Preprocessing(size=16), labels, name="t", source="t", weights="t"
    )


def test_hide_top_results_are_reported_as_computed(labelled):
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    e = seethrough.explain(labelled, x, "gradcam")
    sweep = hide_top_sweep(labelled, x, e, [0.05, 0.5, 1.0])
    for h in (hide_top(labelled, x, e, fraction=0.1), sweep):
        d = describe(e, hide_top=h)
        pick = h
        if isinstance(h, list):  # the smallest fraction that changes the class, else the largest
            pick = min((r for r in h if r.changed), key=lambda r: r.fraction, default=h[-1])
        line = d.lines[-1]
        assert line.startswith(f"Hiding the top {shown(pick.fraction, 'percent')} of pixels")
        assert d.facts["hide_fraction"] == pick.fraction
        assert d.facts["before_probability"] == pick.before_probability
        assert d.facts["after_probability"] == pick.after_probability
        was, now = (shown(p, "percent") for p in (pick.before_probability, pick.after_probability))
        if pick.changed:
            assert line.endswith(
                f"changes the prediction from '{pick.before_label}' ({was}) to "
                f"'{pick.after_label}' ({now})."
            )
        else:
            assert line.endswith(f"'{pick.before_label}' goes from {was} to {now}.")
        assert numbers_in(d.text) == [s for _, s in d.printed]


def test_dff_concept_names_in_the_text(labelled):
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    e = seethrough.explain(labelled, x, "dff", n_concepts=3, top_k=2)
    d = describe(e)
    concepts = dff_concepts(e.extras)
    line = d.lines[-1]
    assert line.startswith("Concepts found: ")
    for k, label, score, area in concepts:
        assert label == str(e.extras["concept_labels"][k - 1][0])
        assert score == pytest.approx(float(e.extras["concept_scores"][k - 1][0]))
        assert (
            f"'{label}' (concept {k}, {shown(score, 'percent')} probability, strongest on " in line
        )
        assert d.facts[f"concept_{k}_area"] == area
    assert sum(c[3] for c in concepts) == pytest.approx(1.0)
    assert numbers_in(d.text) == [s for _, s in d.printed]


def test_describe_many_agreement_of_one_image():
    rng = np.random.default_rng(1)
    a = rng.random((10, 10))
    one = explanation(a, title="A", target=0)
    same = explanation(a, title="B", target=0)
    opposite = explanation(-a + 1, title="C", target=0)
    d = describe_many([one, same, opposite])
    for i, e in enumerate((one, same, opposite), start=1):
        assert d.facts[f"{i}:concentration"] == describe(e).facts["concentration"]
    assert d.facts["1-2:rho"] == pytest.approx(1.0) and d.facts["1-2:overlap"] == 1.0
    assert d.facts["1-3:rho"] == pytest.approx(-1.0) and d.facts["1-3:overlap"] == 0.0
    assert "A and B agree strongly: rank correlation 1.00, 100% of their top 10% pixels" in d.text
    assert "A and C disagree: rank correlation -1.00, 0% of their top 10% pixels" in d.text
    assert numbers_in(d.text) == [s for _, s in d.printed]
    for name, text in d.printed:
        kind = "float" if name.endswith("rho") else "int" if name.endswith("target") else "percent"
        assert text == shown(d.facts[name], kind)
    assert describe_agreement([one]).lines == []
    with pytest.raises(InvalidParameterError):
        describe_many([])
    with pytest.raises(InvalidParameterError):
        describe_many([one, explanation(np.ones((4, 4)))])


def test_the_text_survives_save_and_load(tmp_path):
    m = np.zeros((9, 9))
    m[7, 7] = 1.0
    e = explanation(m, target=2, label="dog", probability=0.5)
    paths = e.save(tmp_path, "x")
    assert Explanation.load(paths["json"]).describe() == e.describe()


def test_cli_writes_the_text_beside_the_figure(tmp_path):
    from seethrough.cli.main import main

    model = ["--model", "resnet18", "--weights", "none", "--size", "64"]
    main(["explain", "sample:chelsea", *model, "--method", "gradcam,cam", "--out", str(tmp_path)])
    folder = tmp_path / "chelsea"
    loaded = [Explanation.load(folder / f"{m}.json") for m in ("gradcam", "cam")]
    for stem, e in zip(("gradcam", "cam"), loaded, strict=True):
        assert (folder / f"{stem}.txt").read_text() == e.describe() + "\n"
    figure = (folder / "figure.txt").read_text()
    assert figure == describe_many(loaded).text + "\n"
    assert "Grad-CAM and CAM agree" in figure


def test_the_dashboard_shows_the_text_under_each_map():
    from .test_dashboard_app import explain, new_app, only_methods, results

    at = new_app()
    only_methods(at, ["cam", "saliency"])
    for rerun in (False, True):  # as the run shows them, and on the next rerun
        if rerun:
            at.run()
        else:
            explain(at)
        done = [e for _, e in results(at)]
        texts = [t.value for t in at.text]
        for e in done:
            assert e.describe() in texts
        assert describe_agreement(done).text in texts


def test_the_evaluation_report_holds_each_case_text(tmp_path):
    import html

    from seethrough.evaluation import evaluate, write_report

    from .test_evaluation import bright_model, square_sample

    vm, sample = bright_model(), square_sample(0)
    result = evaluate([vm], [sample], ["gradcam"], steps=4, metrics=["iou"])
    case = result.best[("bright", "gradcam")]
    e = seethrough.explain(vm, sample.image, "gradcam")
    mask = vm.preprocessing.mask(sample.mask)
    assert f"{shown(share_inside(e.map, mask), 'percent')} of it lies inside" in case.text
    assert case.text.startswith("Grad-CAM explains 'bright' (class 0), which the model gives")
    page = write_report(result, tmp_path)["html"].read_text()
    assert "<br>".join(html.escape(line) for line in case.text.splitlines()) in page


def test_hide_top_both_ways_by_hand():
    from seethrough.metrics.faithfulness import HideTop

    def result(fraction, changed, after):
        return HideTop(fraction, 10, 0, 0, "cat", 0.8, 1 if changed else 0, "dog", after, 0.8,
                       0.1, changed)  # fmt: skip

    e = explanation(np.ones((4, 4)), target=0, label="cat", probability=0.8)
    kept, flipped = result(0.05, False, 0.9), result(0.2, True, 0.6)
    assert e.describe(hide_top=kept).splitlines()[-1] == (
        "Hiding the top 5% of pixels does not change the prediction: 'cat' goes from 80% to 90%."
    )
    line = "Hiding the top 20% of pixels changes the prediction from 'cat' (80%) to 'dog' (60%)."
    assert e.describe(hide_top=flipped).splitlines()[-1] == line
    # a sweep: the smallest fraction that changes the class; none does: the largest
    assert e.describe(hide_top=[kept, flipped, result(0.5, True, 0.7)]).endswith(line)
    assert "top 20% of pixels does not" in e.describe(hide_top=[kept, result(0.2, False, 0.9)])
