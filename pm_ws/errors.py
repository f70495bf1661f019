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
