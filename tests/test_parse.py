"""Exact price and size parsing: accepted forms, rejected forms, error messages, input types."""

from __future__ import annotations

import re

import pytest

from pm_ws.errors import ParseError, ProtocolError

INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("0.5", 5000),
        (".48", 4800),
        ("0.0025", 25),
        ("0.0001", 1),
        ("0.9999", 9999),
        ("0.514", 5140),
        ("1", 10000),
        ("1.", 10000),
        ("1.0000", 10000),
        ("0", 0),
        ("0.", 0),
        (".0", 0),
        ("00.5", 5000),
        ("000.5", 5000),
        ("0.550", 5500),
        ("0000000000000000000000000000001", 10000),  # leading zeros do not count towards range
    ],
)
def test_parse_price_valid_text_exact_units(impl, text, units):
    assert impl.parse_price(text) == units


@pytest.mark.parametrize(("text", "units"), [("0.29", 2900), ("0.57", 5700), ("0.58", 5800)])
def test_parse_price_float_trap_values_exact(impl, text, units):
    # int(float(text) * 100) is one cent low for exactly these
    assert int(float(text) * 100) * 100 != units
    assert impl.parse_price(text) == units


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_parse_price_bytes_input_same_units(impl, kind):
    assert impl.parse_price(kind(b".48")) == 4800
    assert impl.parse_price(kind(b"0.0025")) == 25


@pytest.mark.parametrize(
    "text",
    ["", ".", " 1", "1 ", "\t0.5", "0.5\n", "+1", "-1", "-0", "1e2", "1E2", "0x1", "1,5", "½", "٠.5", "0.5.",
     "1..", "..5", "0.5%", "inf", "nan", "1_000", "0.1\x00"],
)  # fmt: skip
def test_parse_price_malformed_text_parse_error(impl, text):
    with pytest.raises(ParseError, match=re.escape(f"invalid price {text!r}: ")):
        impl.parse_price(text)


@pytest.mark.parametrize("text", ["0.12345", "0.00000", "1.00000", "0.50000"])
def test_parse_price_fifth_fractional_digit_parse_error(impl, text):
    with pytest.raises(ParseError, match=re.escape(f"invalid price {text!r}: more than 4 fractional digits")):
        impl.parse_price(text)


def test_parse_price_message_matches_contract_example(impl):
    with pytest.raises(ParseError) as excinfo:
        impl.parse_price("0.12345")
    assert str(excinfo.value) == "invalid price '0.12345': more than 4 fractional digits"


@pytest.mark.parametrize("text", ["1.0001", "2", "1.5", "10", "001.0001", "99999999999999999999999999"])
def test_parse_price_above_one_parse_error(impl, text):
    with pytest.raises(ParseError, match=re.escape(f"invalid price {text!r}: ")):
        impl.parse_price(text)


@pytest.mark.parametrize(("text", "units"), [("0.0025", 25), ("0.001", 10), ("0.1", 1000)])
def test_parse_price_every_tick_size_whole_units(impl, text, units):
    assert impl.parse_price(text) == units


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("219.217767", 219217767),
        ("100", 100_000_000),
        ("0", 0),
        ("1304.72", 1_304_720_000),
        ("20230.87", 20_230_870_000),
        (".5", 500_000),
        ("2200.8", 2_200_800_000),
        ("1.000000", 1_000_000),
        ("0.000001", 1),
        ("9223372036854.775807", INT64_MAX),
        ("0009223372036854.775807", INT64_MAX),
    ],
)
def test_parse_size_valid_text_exact_units(impl, text, units):
    assert impl.parse_size(text) == units


@pytest.mark.parametrize("text", ["0.0000001", "1.0000000", "219.2177670"])
def test_parse_size_seventh_fractional_digit_parse_error(impl, text):
    with pytest.raises(ParseError, match=re.escape(f"invalid size {text!r}: more than 6 fractional digits")):
        impl.parse_size(text)


@pytest.mark.parametrize(
    "text",
    ["9223372036854.775808", "9223372036855", "9999999999999.999999", "18446744073709.551616",
     "99999999999999999999999999999999", "1" + "0" * 5000],
)  # fmt: skip
def test_parse_size_beyond_int64_parse_error(impl, text):
    with pytest.raises(ParseError, match=re.escape(f"invalid size {text[:40]!r}: ")):
        impl.parse_size(text)


@pytest.mark.parametrize("text", ["", ".", "-1", "+5", "1e3", " 5", "5 ", "1,000", "١", "0x10"])
def test_parse_size_malformed_text_parse_error(impl, text):
    with pytest.raises(ParseError, match=re.escape(f"invalid size {text!r}: ")):
        impl.parse_size(text)


def test_parse_size_bytes_input_same_units(impl):
    assert impl.parse_size(b"219.217767") == impl.parse_size(bytearray(b"219.217767")) == 219217767


def test_parse_error_long_text_truncated_to_40_characters(impl):
    text = "1" * 60 + "x"
    with pytest.raises(ParseError) as excinfo:
        impl.parse_size(text)
    assert str(excinfo.value).startswith(f"invalid size {'1' * 40!r}: ")


def test_parse_error_bytes_text_decoded_as_latin1(impl):
    with pytest.raises(ParseError, match=re.escape(f"invalid price {'0.5' + chr(0xFF)!r}: ")):
        impl.parse_price(b"0.5\xff")


def test_parse_error_is_protocol_and_value_error(impl):
    with pytest.raises(ProtocolError):
        impl.parse_price("x")
    with pytest.raises(ValueError):
        impl.parse_size("x")


@pytest.mark.parametrize("value", [0.5, 5, None, memoryview(b"0.5"), ["0.5"], object()])
@pytest.mark.parametrize("name", ["parse_price", "parse_size", "price_to_cents"])
def test_parse_non_text_input_type_error(impl, name, value):
    with pytest.raises(TypeError):
        getattr(impl, name)(value)


@pytest.mark.parametrize(
    ("text", "cents"),
    [("0.29", 29), ("0.57", 57), ("0.58", 58), ("1", 100), ("0", 0), (".5", 50), ("0.01", 1), ("0.990", 99)],
)
def test_price_to_cents_whole_cents_exact(impl, text, cents):
    assert impl.price_to_cents(text) == cents


def test_price_to_cents_bytes_input_exact(impl):
    assert impl.price_to_cents(b"0.58") == 58


@pytest.mark.parametrize("text", ["0.505", "0.0025", "0.001", "0.9999"])
def test_price_to_cents_sub_cent_price_parse_error(impl, text):
    with pytest.raises(ParseError) as excinfo:
        impl.price_to_cents(text)
    assert str(excinfo.value) == f"invalid price {text!r}: not a whole cent"


@pytest.mark.parametrize("text", ["0.12345", "1.01", "-0.5", ""])
def test_price_to_cents_invalid_price_parse_error(impl, text):
    with pytest.raises(ParseError, match=re.escape(f"invalid price {text!r}: ")):
        impl.price_to_cents(text)
