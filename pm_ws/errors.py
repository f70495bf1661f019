"""Exceptions raised by pm_ws (pure Python, shared by both core implementations)."""

from __future__ import annotations


class PmWsError(Exception):
    """Root of every error pm_ws raises."""


class ProtocolError(PmWsError, ValueError):
    """A frame or message does not follow the market-channel protocol."""


class ParseError(ProtocolError):
    """A price, size or timestamp string is not an exact value in pm_ws units."""


class CapacityError(PmWsError):
    """A BookStore has no free slot for another token."""


MAX_ERROR_TEXT = 40  # characters of the offending input quoted in a ParseError


def parse_error(field: str, text: str, reason: str) -> ParseError:
    """Build the ParseError both cores raise: ``invalid price '0.12345': more than 4 fractional digits``."""
    return ParseError(f"invalid {field} {text[:MAX_ERROR_TEXT]!r}: {reason}")
