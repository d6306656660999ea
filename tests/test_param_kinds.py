"""Parameter kinds (``seethrough.core.kinds``): each parses what it should, refuses the rest with
a message naming the parameter and the reason; a former parameter name still works, with a
warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seethrough
from seethrough.core.kinds import Fill, Kind, Pair, Segments
from seethrough.errors import InvalidParameterError
from seethrough.registry import Param, get_method, validate_params

WINDOW = Param("window", "32", "occluding window", Pair)
HIDE = get_method("occlusion").param("hide")
BASELINE = get_method("integrated_gradients").param("baseline")
SEGMENTS = get_method("lime").param("segments")


# ---------------------------------------------------------------------------------------------
# Pair


@pytest.mark.parametrize(
    "value, expected",
    [
        (16, (16, 16)),
        ("16", (16, 16)),
        ("8x16", (8, 16)),
        ("8X16", (8, 16)),
        ("8,16", (8, 16)),
        (" 8 x 16 ", (8, 16)),
        ((8, 16), (8, 16)),
        ([8, 16], (8, 16)),
        ([5], (5, 5)),
        (8.0, (8, 8)),
        (np.int64(7), (7, 7)),
        ((np.int32(3), 4.0), (3, 4)),
    ],
)
def test_pair_accepts_a_size_or_height_by_width(value, expected):
    parsed = WINDOW.validate(value)
    assert parsed == expected
    assert type(parsed) is tuple and all(type(v) is int for v in parsed)


@pytest.mark.parametrize(
    "value, reason",
    [
        ("0x3", "positive"),
        (0, "positive"),
        ((4, -1), "positive"),
        (True, "not a boolean"),
        ((8, False), "not a boolean"),
        (2.5, "whole pixels"),
        ("8x", "whole pixels"),
        ("big", "whole pixels"),
        ("8x8x8", "one or two integers"),
        ((1, 2, 3), "one or two integers"),
        ((), "one or two integers"),
        (None, "whole pixels"),
    ],
)
def test_pair_refuses_with_the_reason(value, reason):
    with pytest.raises(InvalidParameterError) as info:
        WINDOW.validate(value)
    message = str(info.value)
    assert message.startswith(f"window={value!r}: ")
    assert reason in message


def test_occlusion_reads_its_window_as_a_pair_default_included():
    cls = get_method("occlusion").cls
    assert cls().config["window"] == (32, 32) and cls().config["stride"] == (16, 16)
    assert cls(window="8x16", stride=[4]).config["window"] == (8, 16)
    assert cls(window="8x16", stride=[4]).config["stride"] == (4, 4)


def test_an_occlusion_window_given_as_a_tuple_equals_its_text(tiny, tiny_input):
    x = tiny_input[0]
    as_tuple = seethrough.explain(tiny, x, "occlusion", target=1, window=(8, 16), stride=4)
    as_text = seethrough.explain(tiny, x, "occlusion", target=1, window="8x16", stride="4")
    transposed = seethrough.explain(tiny, x, "occlusion", target=1, window="16x8", stride=4)
    np.testing.assert_array_equal(as_tuple.map, as_text.map)
    np.testing.assert_array_equal(as_tuple.weights, as_text.weights)
    assert np.abs(as_tuple.map - transposed.map).max() > 1e-6  # the orientation counts


# ---------------------------------------------------------------------------------------------
# Fill


@pytest.mark.parametrize(
    "value, expected",
    [(0, 0.0), (-1.5, -1.5), ("0.25", 0.25), (np.float32(2.0), 2.0), ("blur", "blur")],
)
def test_fill_takes_numbers_as_floats_and_its_keywords(value, expected):
    parsed = HIDE.validate(value)
    assert parsed == expected and type(parsed) is type(expected)


def test_fill_passes_images_through_unchanged(tmp_path):
    images = [
        torch.zeros(3, 4, 4),
        np.zeros((4, 4, 3), dtype=np.uint8),
        Image.new("RGB", (4, 4)),
        Path(tmp_path / "fill.png"),
        "images/fill.png",
        "sample:chelsea",
    ]
    for image in images:
        assert HIDE.validate(image) is image


def test_each_fill_parameter_has_its_own_keywords():
    assert BASELINE.validate("black") == "black"
    with pytest.raises(InvalidParameterError, match=r"hide='black': .*'mean', 'blur', 'noise'"):
        HIDE.validate("black")


def test_a_misspelt_fill_keyword_gets_a_suggestion():
    with pytest.raises(InvalidParameterError) as info:
        HIDE.validate("blurr")
    assert str(info.value) == (
        "hide='blurr': give a finite number, one of 'mean', 'blur', 'noise' or an image. "
        "Did you mean: blur?"
    )
    with pytest.raises(InvalidParameterError, match="Did you mean: black"):
        BASELINE.validate("blak")


@pytest.mark.parametrize("value", [True, np.bool_(False), None, "nan", float("inf"), "", {}, 1j])
def test_fill_refuses_what_is_neither_number_keyword_nor_image(value):
    with pytest.raises(InvalidParameterError, match=r"^hide=.*: give a finite number"):
        HIDE.validate(value)


def test_a_method_refuses_a_bad_fill_when_it_is_made():
    with pytest.raises(InvalidParameterError, match="Did you mean: noise"):
        get_method("rise").cls(hide="nois")


# ---------------------------------------------------------------------------------------------
# Segments


def test_segments_takes_a_segmenter_name_or_integer_labels():
    assert SEGMENTS.validate("quickshift") == "quickshift"
    labels = np.arange(12).reshape(3, 4)
    for given in (labels, torch.as_tensor(labels), labels.tolist(), labels.astype(np.uint8)):
        parsed = SEGMENTS.validate(given)
        assert isinstance(parsed, np.ndarray)
        np.testing.assert_array_equal(parsed, labels)


@pytest.mark.parametrize(
    "value, reason",
    [
        ("slicc", "Did you mean: slic?"),
        ("watershed", "use one of 'slic', 'quickshift', 'felzenszwalb', 'grid'"),
        (np.zeros((4, 4)), "must hold integers"),
        (np.zeros((4, 4), dtype=bool), "must hold integers"),
        (np.zeros(4, dtype=int), "shape (H, W)"),
        (3, "or an integer label array"),
    ],
)
def test_segments_refuses_with_the_reason(value, reason):
    with pytest.raises(InvalidParameterError, match=r"^segments=") as info:
        SEGMENTS.validate(value)
    assert reason in str(info.value)


# ---------------------------------------------------------------------------------------------
# what front ends see


def test_kinds_are_shown_by_their_name_and_are_text_fields():
    from seethrough.dashboard.service import param_fields

    occlusion = get_method("occlusion")
    shown = {p.name: p.type.__name__ for p in occlusion.params}
    assert (shown["window"], shown["stride"], shown["hide"]) == ("Pair", "Pair", "Fill")
    assert SEGMENTS.type.__name__ == "Segments" and BASELINE.type.__name__ == "Fill"
    assert all(issubclass(k, Kind) for k in (Pair, Fill, Segments, HIDE.type, SEGMENTS.type))
    kinds = {f.name: f.kind for f in param_fields(occlusion)}
    assert kinds["window"] == kinds["stride"] == kinds["hide"] == "text"


def test_a_kind_is_any_class_with_a_parse_classmethod():
    class Even:
        @classmethod
        def parse(cls, value: object) -> int:
            number = int(value)  # type: ignore[call-overload]
            if number % 2:
                raise ValueError("must be even")
            return number

    param = Param("n", 2, "an even number", Even)
    assert validate_params([param], {}, "m") == {"n": 2}
    assert validate_params([param], {"n": "4"}, "m") == {"n": 4}
    with pytest.raises(InvalidParameterError, match=r"^n=3: must be even$"):
        validate_params([param], {"n": 3}, "m")


# ---------------------------------------------------------------------------------------------
# a former name


def test_internal_batch_size_still_works_with_a_warning(tiny, tiny_input):
    info = get_method("integrated_gradients")
    with pytest.warns(DeprecationWarning, match="now called 'batch_size'") as caught:
        old = seethrough.explain(tiny, tiny_input, "integrated_gradients", internal_batch_size=3)
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = seethrough.explain(tiny, tiny_input, "integrated_gradients", batch_size=3)
        assert info.cls(batch_size=3).config["batch_size"] == 3
    for a, b in zip(old, new, strict=True):
        np.testing.assert_array_equal(a.attributions, b.attributions)
    with pytest.warns(DeprecationWarning):
        assert info.param("internal_batch_size") is info.param("batch_size")
    with pytest.warns(DeprecationWarning), pytest.raises(InvalidParameterError, match="once"):
        info.cls(batch_size=2, internal_batch_size=3)
    # the command line hands it to the methods that take it
    from seethrough.cli._shared import params_for

    routed = params_for(["integrated_gradients", "occlusion"], ["internal_batch_size=4"])
    assert routed == {"integrated_gradients": {"internal_batch_size": "4"}, "occlusion": {}}


def test_a_misspelt_keyword_through_explain_gets_a_suggestion():
    """explain reads a bare word as a keyword, not as an image file to open."""
    model = seethrough.load_model("synthetic_digits", weights="none")
    with pytest.raises(InvalidParameterError, match="Did you mean: blur"):
        seethrough.explain(model, "sample:chelsea", "occlusion", hide="blurr")
