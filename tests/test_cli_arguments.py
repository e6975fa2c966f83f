"""Property tests (hypothesis) of the command line's argument parsing (issue 19): points,
sizes, durations, finite floats, positive integers and the rule that tells a negative
number from a flag. Whatever the text, a parser gives its value or its own refusal
(``ArgumentTypeError``, or ``ValueError`` for the library's parsers), never another
exception."""

from __future__ import annotations

import argparse
import functools
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from segloc.cli import build_parser
from segloc.cli.arguments import (
    MAX_COORDINATE,
    NEGATIVE_NUMBER,
    UsageError,
    finite_float,
    parse_point,
    positive_int,
)
from segloc.cli.segmentation import _size
from segloc.engine.run import parse_duration

SETTINGS = settings(max_examples=300, deadline=None)
coordinate = st.integers(-MAX_COORDINATE, MAX_COORDINATE)
finite = st.floats(allow_nan=False, allow_infinity=False)
garbage = st.text(max_size=40)


@functools.cache
def parser() -> argparse.ArgumentParser:
    """The whole command line's parser, built once (parsing does not change it)."""
    return build_parser()


def _refused(parser, text, kinds):
    """``parser(text)`` returns or raises one of ``kinds``; True when it refused."""
    try:
        parser(text)
    except kinds:
        return True
    return False


# --------------------------------------------------------------------------- points


@SETTINGS
@given(x=coordinate, y=coordinate, z=st.none() | coordinate)
def test_an_integer_point_round_trips_to_row_col_slice(x, y, z):
    text = f"{x},{y}" if z is None else f"{x},{y},{z}"
    assert parse_point(text) == ((y, x) if z is None else (y, x, z))


@SETTINGS
@given(x=finite, y=finite, z=st.none() | finite)
def test_a_finite_point_is_rounded_or_refused_as_out_of_range(x, y, z):
    values = [x, y] if z is None else [x, y, z]
    text = ",".join(repr(v) for v in values)
    rounded = [int(round(v)) for v in values]
    if any(abs(v) > MAX_COORDINATE for v in rounded):
        with pytest.raises(argparse.ArgumentTypeError, match="within"):
            parse_point(text)
    else:
        row_col = (rounded[1], rounded[0], *rounded[2:])
        assert parse_point(text) == row_col


@SETTINGS
@given(text=garbage)
def test_point_garbage_is_refused_with_argument_type_error_only(text):
    _refused(parse_point, text, argparse.ArgumentTypeError)


@pytest.mark.parametrize("text", ["", "1", "1,2,3,4", "nan,1", "1,inf", "-inf,2", "a,b", "1;2"])
def test_points_that_are_not_points(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_point(text)


# --------------------------------------------------------------------------- sizes


@SETTINGS
@given(size=st.lists(st.integers(1, 10**6), min_size=1, max_size=3), sep=st.sampled_from("xX"))
def test_a_size_round_trips(size, sep):
    assert _size(sep.join(map(str, size))) == tuple(size)


@SETTINGS
@given(size=st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=3))
def test_a_size_with_zero_or_negative_parts_is_refused(size):
    assume(min(size) < 1)
    with pytest.raises(UsageError, match="--size must be positive"):
        _size("x".join(map(str, size)))


@SETTINGS
@given(text=garbage)
def test_size_garbage_is_refused_with_usage_error_only(text):
    _refused(_size, text, UsageError)


# --------------------------------------------------------------------------- durations


@SETTINGS
@given(
    h=st.none() | st.integers(0, 1000),
    m=st.none() | st.integers(0, 10**4),
    s=st.none() | st.integers(0, 10**6) | st.floats(0, 10**6).map(lambda v: round(v, 3)),
    unit_s=st.booleans(),
    spaces=st.booleans(),
)
def test_a_duration_is_the_sum_of_its_parts(h, m, s, unit_s, spaces):
    parts = []
    if h is not None:
        parts.append(f"{h}h")
    if m is not None:
        parts.append(f"{m}m")
    if s is not None:
        parts.append(f"{s}s" if unit_s else f"{s}")  # a bare number is seconds
    assume(parts)
    text = (" " if spaces else "").join(parts)
    seconds = 3600 * (h or 0) + 60 * (m or 0) + float(s or 0)
    if seconds > 0:
        assert parse_duration(text) == pytest.approx(seconds)
    else:
        with pytest.raises(ValueError, match="duration must be positive"):
            parse_duration(text)


@SETTINGS
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_a_duration_number_is_seconds_or_refused(value):
    if math.isfinite(value) and value > 0:
        assert parse_duration(value) == value
    else:
        with pytest.raises(ValueError):
            parse_duration(value)


@SETTINGS
@given(text=garbage)
def test_duration_garbage_is_refused_with_value_error_only(text):
    _refused(parse_duration, text, ValueError)


@pytest.mark.parametrize("text", ["-5m", "-1h", "0", "0s", "0h0m", "m", "1e3", "5 minutes", "inf"])
def test_durations_refused(text):
    with pytest.raises(ValueError, match="duration must"):
        parse_duration(text)


# --------------------------------------------------------------------------- numbers


@SETTINGS
@given(value=finite)
def test_a_finite_float_round_trips(value):
    assert finite_float(repr(value)) == value


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "Infinity", "1e400", "-1e400"])
def test_non_finite_floats_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        finite_float(text)


@SETTINGS
@given(text=garbage)
def test_float_garbage_is_refused_with_argument_type_error_only(text):
    _refused(finite_float, text, argparse.ArgumentTypeError)


@SETTINGS
@given(value=st.integers(-(10**12), 10**12))
def test_positive_int(value):
    if value >= 1:
        assert positive_int(str(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=">= 1"):
            positive_int(str(value))


@SETTINGS
@given(text=garbage)
def test_positive_int_garbage_is_refused_with_argument_type_error_only(text):
    _refused(positive_int, text, argparse.ArgumentTypeError)


# --------------------------------------------------------------------------- negative numbers


def _option_strings(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _option_strings(sub)


def test_no_flag_looks_like_a_negative_number():
    flags = set(_option_strings(parser()))
    assert {"-o", "-q", "--max-voxels", "--seeds", "--offset"} <= flags
    assert [f for f in flags if NEGATIVE_NUMBER.match(f)] == []


@SETTINGS
@given(value=finite.filter(lambda v: v < 0))
def test_a_negative_number_is_a_value(value):
    assert NEGATIVE_NUMBER.match(repr(value))
    args = parser().parse_args(
        ["segment", "a.png", "--method", "local", "--offset", repr(value), "-o", "o.png"]
    )
    assert args.offset == value and args.output == "o.png"


@SETTINGS
@given(points=st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=4))
def test_negative_points_are_values_and_flags_after_them_are_flags(points):
    texts = [f"{x},{y}" for x, y in points]
    args = parser().parse_args(
        ["segment", "a.png", "--method", "srg", "--seeds", *texts, "-o", "o.png", "--invert"]
    )
    assert args.seeds == [(y, x) for x, y in points]
    assert args.output == "o.png" and args.invert


@SETTINGS
@given(minutes=st.integers(1, 10**4))
def test_a_negative_duration_reaches_its_parser_as_a_value(minutes):
    args = parser().parse_args(["train", "--time-budget", f"-{minutes}m", "-q"])
    assert args.time_budget == f"-{minutes}m" and args.quiet
    with pytest.raises(ValueError, match="duration must look like"):
        parse_duration(args.time_budget)
