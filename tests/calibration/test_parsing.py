"""Shape and size strings: the one parser each, good input and typos (InvalidInputError, expected vs given)."""

from __future__ import annotations

import pytest
from infership.calibration import parse_hw, parse_named_shape, parse_shape
from infership.runtime import InfershipError, InvalidInputError


@pytest.mark.parametrize(
    ("text", "dims"),
    [
        ("1x3x224x224", (1, 3, 224, 224)),
        ("1,3,224,224", (1, 3, 224, 224)),
        ("1X3X8X8", (1, 3, 8, 8)),
        (" 2 x 4 ", (2, 4)),
        ("7", (7,)),
        ("1x3x", (1, 3)),
    ],
)
def test_parse_shape_accepts_x_or_comma_separated_positive_integers(text, dims):
    assert parse_shape(text) == dims


@pytest.mark.parametrize("text", ["", "x", "1xx3", "1x3xa", "1x0x8", "1x-3", "1.5x2", "input:1x3"])
def test_parse_shape_typo_is_invalid_input_naming_expected_and_given(text):
    with pytest.raises(InvalidInputError) as info:
        parse_shape(text, what="--input-shape")
    msg = str(info.value)
    assert msg.startswith(f"--input-shape {text!r}:") and "expected positive integers" in msg
    assert isinstance(info.value, InfershipError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input=1x3x224x224", ("input", (1, 3, 224, 224))),
        ("input:1x3x224x224", ("input", (1, 3, 224, 224))),
        ("1x3x224x224", (None, (1, 3, 224, 224))),
        ("input:0=1x3x8x8", ("input:0", (1, 3, 8, 8))),
        ("input:0:1x3x8x8", ("input:0", (1, 3, 8, 8))),
        ("x = 2,4", ("x", (2, 4))),
    ],
)
def test_parse_named_shape_forms(text, expected):
    assert parse_named_shape(text) == expected


@pytest.mark.parametrize("text", [":1x3", "=1x3", "x:", "x:1xb", "x=0x3"])
def test_parse_named_shape_refuses_empty_names_and_bad_dims(text):
    with pytest.raises(InvalidInputError, match=r"--shape .*: expected a shape like"):
        parse_named_shape(text, what="--shape")


def test_parse_named_shape_can_require_a_name():
    assert parse_named_shape("x:1x3", require_name=True) == ("x", (1, 3))
    with pytest.raises(
        InvalidInputError, match=r"'1x3x8x8': expected a shape like 'x:1x3x224x224' \(NAME:DIMS\)"
    ):
        parse_named_shape("1x3x8x8", require_name=True)


@pytest.mark.parametrize(
    ("text", "hw"), [("224", (224, 224)), ("224x160", (224, 160)), ("8X16", (8, 16)), (" 32 x 48 ", (32, 48))]
)
def test_parse_hw_square_or_height_by_width(text, hw):
    assert parse_hw(text) == hw


@pytest.mark.parametrize("text", ["", "0", "224x0", "224x", "x224", "1x2x3", "a", "-4", "2.5", "²"])
def test_parse_hw_refuses_anything_else(text):
    with pytest.raises(InvalidInputError) as info:
        parse_hw(text, what="--crop")
    assert (
        str(info.value) == f"--crop {text!r}: expected N or HxW with positive integers, e.g. 224 or 224x160"
    )
