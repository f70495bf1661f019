"""Exact decimal numbers of the pure-Python core: prices in 1e-4 units, sizes in 1e-6 units, as ints.

Grammar: ASCII ``DIGITS? ('.' DIGITS?)?`` with at least one digit. More fractional digits than the
scale (even a trailing ``0``), a price above 1, a size beyond int64, a sign, an exponent or
whitespace is a ``ParseError``, never a rounding; no float or Decimal is involved. The compiled
core's counterpart is ``pm_ws/_hot/numbers.pxi``.
"""

from __future__ import annotations

import re

from .errors import parse_error
from .row import PRICE_DECIMALS, PRICE_SCALE, SIZE_DECIMALS

__all__ = ["INT64_MAX", "parse_price", "parse_size", "price_to_cents", "price_units", "size_units"]

INT64_MAX = 2**63 - 1
MAX_INT_DIGITS = 19  # len(str(INT64_MAX)); longer integer parts are out of range for both fields

_DECIMAL = re.compile(r"([0-9]*)(?:\.([0-9]*))?")  # [0-9], not \d: ASCII digits only



def _text_of(value: object, field: str) -> str:
    # bytes are decoded as latin-1 so every byte maps to one character; non-ASCII never matches
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    raise TypeError(f"{field} must be str, bytes or bytearray, was {type(value).__name__}")


def _parse_fixed(text: str, field: str, digits: int, max_units: int, too_large: str) -> int:
    # Reasons are checked in this order: grammar, fractional digits, range
    match = _DECIMAL.fullmatch(text)
    if match is None or not (match[1] or match[2]):
        raise parse_error(field, text, "not a decimal number")
    whole, fraction = match[1].lstrip("0"), match[2] or ""
    if len(fraction) > digits:
        raise parse_error(field, text, f"more than {digits} fractional digits")
    # A longer integer part is out of range anyway; skipping int() also avoids its digit cap
    if len(whole) > MAX_INT_DIGITS:
        raise parse_error(field, text, too_large)
    units = int(whole + fraction.ljust(digits, "0"))  # the digits with the point moved right
    if units > max_units:
        raise parse_error(field, text, too_large)
    return units


def price_units(text: str) -> int:
    return _parse_fixed(text, "price", PRICE_DECIMALS, PRICE_SCALE, "greater than 1")


def size_units(text: str) -> int:
    return _parse_fixed(text, "size", SIZE_DECIMALS, INT64_MAX, "does not fit in int64")


def parse_price(value: str | bytes | bytearray) -> int:
    """Parse a decimal price into exact 1e-4 units.

    Parameters
    ----------
    value : str, bytes or bytearray
        ASCII decimal text such as ``"0.514"`` or ``".48"``: at most 4 fractional digits, at most 1.

    Returns
    -------
    int
        The price times ``PRICE_SCALE`` (0 ... 10000).

    Raises
    ------
    ParseError
        The text is not such a decimal, has more than 4 fractional digits or is above 1.
    TypeError
        ``value`` is not str, bytes or bytearray.
    """
    return price_units(_text_of(value, "price"))


def parse_size(value: str | bytes | bytearray) -> int:
    """Parse a decimal size into exact 1e-6 units (micro-shares).

    Parameters
    ----------
    value : str, bytes or bytearray
        ASCII decimal text such as ``"219.217767"``: at most 6 fractional digits.

    Returns
    -------
    int
        The size times ``SIZE_SCALE``; always fits int64.

    Raises
    ------
    ParseError
        The text is not such a decimal, has more than 6 fractional digits or overflows int64.
    TypeError
        ``value`` is not str, bytes or bytearray.
    """
    return size_units(_text_of(value, "size"))


def price_to_cents(value: str | bytes | bytearray) -> int:
    """Parse a price that must be a whole number of cents (for code ported from cent-based bots).

    Parameters
    ----------
    value : str, bytes or bytearray
        Decimal price text as accepted by :func:`parse_price`, e.g. ``"0.29"``.

    Returns
    -------
    int
        The price in cents (0 ... 100), exact: ``"0.29"`` is 29, never 28.

    Raises
    ------
    ParseError
        :func:`parse_price` rejects the text, or the price is not a multiple of 0.01.
    TypeError
        ``value`` is not str, bytes or bytearray.
    """
    units = parse_price(value)
    if units % 100:
        raise parse_error("price", _text_of(value, "price"), "not a whole cent")
    return units // 100
