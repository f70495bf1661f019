"""A frame's text to checked events, for the pure-Python core: JSON validity and depth, then each event.

The whole frame must be valid JSON (RFC 8259) nested at most ``MAX_JSON_DEPTH`` deep before
anything is applied. A hot event's keys are checked shape first (``rej_bad_event``: a missing key,
a value of the wrong JSON type, a side other than BUY/SELL, a duplicate price in a side), then
numbers (``rej_bad_number``); ``Rejected`` carries the stats counter. The compiled core's
counterparts are in ``pm_ws/_hot/`` (scanner, staging and validate).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import orjson

from ._events import ENTRY_OPTIONAL, ENTRY_REQUIRED, KEYS, LEVEL_KEYS, MAX_TIMESTAMP_DIGITS, EventType, ValueKind
from ._numbers_py import price_units, size_units
from .errors import ParseError
from .row import MAX_JSON_DEPTH, SIDE_BUY, SIDE_SELL

__all__ = ["Rejected", "decode_event", "decode_json", "frame_bytes"]

_TIMESTAMP = re.compile(r"[0-9]{1,%d}" % MAX_TIMESTAMP_DIGITS)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = tuple(1 if b in b"[{" else -1 for b in range(256))  # indexed by a bracket byte
_SIDES = {"BUY": SIDE_BUY, "SELL": SIDE_SELL}
_MISSING = object()  # tells an absent key from a JSON null



class Rejected(Exception):
    """An event is rejected; ``counter`` is the stats key to bump."""

    def __init__(self, counter: str) -> None:
        super().__init__(counter)
        self.counter = counter


def _bad_event() -> Rejected:
    return Rejected("rej_bad_event")


def _objects(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _bad_event()
    return value


def _shaped(obj: dict[str, Any], key: str) -> Any:
    # key's value with its JSON shape checked, _MISSING when absent: a string (a side must be
    # BUY or SELL), or for the array kinds a list of objects whose own keys are shaped
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        return value
    kind = KEYS[key]
    if kind == ValueKind.LEVELS:
        return [_shaped_keys(level, LEVEL_KEYS, ()) for level in _objects(value)]
    if kind == ValueKind.ENTRIES:
        return [_shaped_keys(entry, ENTRY_REQUIRED, ENTRY_OPTIONAL) for entry in _objects(value)]
    if not isinstance(value, str) or (kind == ValueKind.SIDE and value not in _SIDES):
        raise _bad_event()
    return value


def _shaped_keys(obj: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    texts = {}
    for key in required:
        texts[key] = value = _shaped(obj, key)
        if value is _MISSING:
            raise _bad_event()
    for key in optional:
        value = _shaped(obj, key)
        if value is not _MISSING:
            texts[key] = value
    return texts


def _wire_price(text: str) -> int:
    try:
        return price_units(text)
    except ParseError:
        raise Rejected("rej_bad_number") from None


def _wire_size(text: str) -> int:
    try:
        return size_units(text)
    except ParseError:
        raise Rejected("rej_bad_number") from None


def _wire_tick(text: str) -> int:
    tick = _wire_price(text)
    if tick == 0:
        raise Rejected("rej_bad_number")
    return tick


def _wire_timestamp(text: str) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise Rejected("rej_bad_number")
    return int(text)


def _wire_price_or_empty(text: str) -> int | None:
    return _wire_price(text) if text else None  # "" means no trade yet


def _wire_levels(levels: list[dict[str, str]]) -> list[tuple[int, int]]:
    return [(_wire_price(level["price"]), _wire_size(level["size"])) for level in levels]


def _wire_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_values(entry) for entry in entries]


# How each value kind of pm_ws._events is read once its shape is right
_READERS: dict[ValueKind, Callable[[Any], Any]] = {
    ValueKind.NAME: str,
    ValueKind.ID: str,
    ValueKind.SIDE: _SIDES.__getitem__,
    ValueKind.TIMESTAMP: _wire_timestamp,
    ValueKind.PRICE: _wire_price,
    ValueKind.PRICE_OR_EMPTY: _wire_price_or_empty,
    ValueKind.TICK: _wire_tick,
    ValueKind.SIZE: _wire_size,
    ValueKind.LEVELS: _wire_levels,
    ValueKind.ENTRIES: _wire_entries,
}


def _values(texts: dict[str, Any]) -> dict[str, Any]:
    return {key: _READERS[KEYS[key]](text) for key, text in texts.items()}


def _has_duplicate_price(levels: list[tuple[int, int]]) -> bool:
    return len({price for price, _ in levels}) != len(levels)


def decode_event(event: dict[str, Any], event_type: EventType) -> dict[str, Any]:
    # The keys a hot event reads, parsed; absent optional keys are left out
    fields = _values(_shaped_keys(event, event_type.required, event_type.optional))
    # Needs the parsed values ("0.5" == "0.50"), so it runs after the numbers: a bad number wins
    # over a duplicate price, and size-0 levels count as duplicates too (contract reading)
    if any(KEYS[key] == ValueKind.LEVELS and _has_duplicate_price(levels) for key, levels in fields.items()):
        raise _bad_event()
    return fields


def frame_bytes(frame: object) -> bytes:
    if isinstance(frame, str):
        # surrogatepass: a lone surrogate becomes invalid UTF-8 (rejected below), not an exception
        return frame.encode("utf-8", "surrogatepass")
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return bytes(frame)
    raise TypeError(f"frame must be str, bytes, bytearray or memoryview, was {type(frame).__name__}")


def _depth_within_limit(body: bytes) -> bool:
    # Counted on the bytes, not the decoded value: a duplicate key may hide a deep value
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return True
    # body is valid JSON: without its escaped backslashes and quotes, every other '"' opens or
    # closes a string, so the even pieces of a split on '"' are the text outside strings
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    depths = accumulate(map(_DEPTH_STEP.__getitem__, outside.translate(None, _NOT_BRACKETS)))
    return max(depths) <= MAX_JSON_DEPTH


def decode_json(body: bytes) -> Any:
    # The decoded document, or None when the frame is not valid JSON within the depth limit
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if _depth_within_limit(body) else None
