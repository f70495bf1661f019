"""The market channel's vocabulary: every event type pm_ws knows, the keys each one reads, the
kind of value under each key, and the counters derived from them.

This is the one place an event type is declared. The pure-Python core builds its handler table
and its shape checks from it; the compiled core's enums (``pm_kind``, ``pm_key``, ``pm_stat``),
key and event-name matchers, key masks and dispatch switch are generated from it at build time
(``pm_ws/_events_codegen.py`` writes ``pm_ws/_hot/pm_events.h`` and ``events_*.pxi``), and it
exports them back as ``EVENT_TABLE`` / ``KEY_TABLE``, which a test keeps equal to ``EVENTS`` /
``KEYS`` here. Each event type needs a handler named after it in both cores: ``_apply_<name>`` in
the twin, ``apply_<name>`` in ``_hot/dispatch_hot.pxi`` (hot) or ``_hot/dispatch_cold.pxi`` (cold).

A leaf module: it imports nothing from pm_ws (the build loads it by path, before pm_ws exists).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class ValueKind(StrEnum):
    """How a key's value is read. Every value is a JSON string except the two array kinds."""

    NAME = "name"  # the event type's name
    ID = "id"  # a token id (asset_id), any string
    TIMESTAMP = "timestamp"  # 1 to MAX_TIMESTAMP_DIGITS ASCII digits, ms
    PRICE = "price"  # an exact decimal price (see parse_price)
    PRICE_OR_EMPTY = "price_or_empty"  # a price, or "" meaning none yet (a book's last_trade_price)
    TICK = "tick"  # a price above 0
    SIZE = "size"  # an exact decimal size (see parse_size)
    SIDE = "side"  # "BUY" or "SELL"; anything else is a malformed event, not a bad number
    LEVELS = "levels"  # array of {"price", "size"} objects (LEVEL_KEYS), no price twice
    ENTRIES = "entries"  # array of price_change entries (ENTRY_REQUIRED, ENTRY_OPTIONAL)


MAX_TIMESTAMP_DIGITS = 18  # 18 digits always fit int64 ms

# Every key an event or element is read by, with its value kind, in the compiled pm_key order
KEYS: dict[str, ValueKind] = {
    "event_type": ValueKind.NAME,
    "asset_id": ValueKind.ID,
    "timestamp": ValueKind.TIMESTAMP,
    "tick_size": ValueKind.TICK,
    "new_tick_size": ValueKind.TICK,
    "last_trade_price": ValueKind.PRICE_OR_EMPTY,
    "price": ValueKind.PRICE,
    "size": ValueKind.SIZE,
    "side": ValueKind.SIDE,
    "best_bid": ValueKind.PRICE,
    "best_ask": ValueKind.PRICE,
    "bids": ValueKind.LEVELS,  # the array keys stay last: the compiled core stages them by position
    "asks": ValueKind.LEVELS,
    "price_changes": ValueKind.ENTRIES,
}

# Keys of the objects inside the array kinds
LEVEL_KEYS = ("price", "size")
ENTRY_REQUIRED = ("asset_id", "price", "size", "side")
ENTRY_OPTIONAL = ("best_bid", "best_ask")


class EventType(NamedTuple):
    """One ``event_type`` the dispatcher knows.

    A hot event is applied from its keys, checked shape first (missing or wrong-typed key:
    ``rej_bad_event``), then numbers (``rej_bad_number``). A cold event is rare: it is decoded
    whole and handed to ``on_event`` without checks. Keys are listed in ``KEYS`` order.
    """

    name: str
    hot: bool
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


# Every event type, in the compiled pm_kind order: the hot ones first, then the cold ones
EVENTS = (
    EventType("book", True, ("asset_id", "bids", "asks"), ("timestamp", "tick_size", "last_trade_price")),
    EventType("price_change", True, ("price_changes",), ("timestamp",)),
    EventType("last_trade_price", True, ("asset_id", "price", "size"), ("timestamp", "side")),
    EventType("tick_size_change", True, ("asset_id", "new_tick_size"), ("timestamp",)),
    EventType("best_bid_ask", True, ("asset_id", "best_bid", "best_ask"), ("timestamp",)),
    EventType("new_market", False),
    EventType("market_resolved", False),
)
EVENT_TYPES = {event.name: event for event in EVENTS}

# A new_market's identity for deduplication: the value of the first of these keys it has
NEW_MARKET_ID_KEYS = ("market", "condition_id", "id")

# Text frames that are not JSON: the server's control words (matched ignoring ASCII case)
CONTROL_WORDS = {
    "PONG": "ctl_pong",
    "INVALID OPERATION": "ctl_invalid_operation",
    "NO NEW ASSETS": "ctl_no_new_assets",
}

# Counters returned by Dispatcher.stats(), in this order, in both implementations
STAT_KEYS = (
    ("frames", "bytes", "events")
    + tuple(f"ev_{event.name}" for event in EVENTS)
    + tuple(CONTROL_WORDS.values())
    + ("rej_oversized", "rej_unknown_text", "rej_invalid_json", "rej_unknown_event", "rej_bad_event", "rej_bad_number")
    + ("skip_unsubscribed", "skip_duplicate", "skip_not_live", "skip_foreign")
    + ("checksum_mismatch", "crossed_book", "off_grid", "impossible_book", "bba_mismatch", "resync_queued")
)

