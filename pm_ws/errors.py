"""Exceptions raised by pm_ws (pure Python, shared by both core implementations)."""

from __future__ import annotations


class PmWsError(Exception):
    """Root of every error pm_ws raises."""


class ProtocolError(PmWsError, ValueError):
    """A frame or message does not follow the market-channel protocol."""


class ParseError(ProtocolError):
    """A price, size or timestamp string is not an exact value in pm_ws units."""


class CapacityError(PmWsError):
    """A BookStore has no free slot for another token (the message names the token and the capacity)."""


MAX_ERROR_TEXT = 40  # characters of the offending input quoted in a ParseError


def parse_error(field: str, text: str, reason: str) -> ParseError:
    """Build the ParseError both cores raise: ``invalid price '0.12345': more than 4 fractional digits``."""
    return ParseError(f"invalid {field} {text[:MAX_ERROR_TEXT]!r}: {reason}")


def capacity_error(token_id: str, capacity: int) -> CapacityError:
    """Build the CapacityError both cores raise: ``BookStore is full (2 slots): no slot for token 'abc'``."""
    return CapacityError(f"BookStore is full ({capacity} slots): no slot for token {token_id!r}")


def token_id_type_error(value: object) -> TypeError:
    """Build the TypeError both cores raise for a token id that is neither str nor bytes (None, 123, ...)."""
    return TypeError(f"token id must be str or bytes, was {type(value).__name__}")


def token_ids_type_error(value: str | bytes | bytearray) -> TypeError:
    """Build the TypeError both cores raise for one str/bytes given where a collection of ids is expected."""
    return TypeError(f"token_ids must be a collection of token ids, was a single {type(value).__name__} {value!r:.60}")
