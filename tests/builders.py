"""What the hand-written core tests share: test token ids, one builder per market-channel event type,
and the readers of a dispatcher's results.

Each builder returns one event as a dict in the wire shape (every number a string); extra keyword
arguments replace a key in place or add one at the end, after ``event_type`` (``event_type_last``
moves it back where the server writes it). ``frame`` turns events into the JSON bytes a dispatcher
is fed. Random streams for the fuzzers live in ``framegen``; this module is the fixed, readable
counterpart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

# --- ids and books --------------------------------------------------------------------------

# Made-up ids shaped like real ones (decimal uint256, 77 digits): a YES/NO pair, and a third id
# (never subscribed in the dispatch tests, a third held token in the store tests)
YES = "38104916273645509182736450918273645091827364509182736450918273645091827364501"
NO = "61895083726354490817263549081726354908172635490817263549081726354908172635499"
OTHER = "50000000000000000000000000000000000000000000000000000000000000000000000000017"
MARKET = "0x" + "5d" * 32
TS = "1786728432337"  # the book snapshot's exchange time, in ms

# YES: bids 0.48 x 30, 0.49 x 20, 0.50 x 15 (best last); asks 0.54 x 10, 0.53 x 60, 0.52 x 25 (best last)
YES_BIDS = [("0.48", "30"), ("0.49", "20"), ("0.5", "15")]
YES_ASKS = [("0.54", "10"), ("0.53", "60"), ("0.52", "25")]

# --- one builder per event type -------------------------------------------------------------

Event = dict[str, Any]
Levels = Sequence[tuple[str, str]]  # (price, size) texts


def book_event(token_id: str = YES, bids: Levels = YES_BIDS, asks: Levels = YES_ASKS, **extra: Any) -> Event:
    """A ``book`` snapshot with (price, size) text pairs in the given (wire) order."""
    event = {
        "market": MARKET,
        "asset_id": token_id,
        "timestamp": TS,
        "hash": "924ec9bc1c6dd89f5db9b7b2b68cdab458cc2dc6",
        "bids": [{"price": p, "size": s} for p, s in bids],
        "asks": [{"price": p, "size": s} for p, s in asks],
        "event_type": "book",
    }
    event.update(extra)
    return event


def change(token_id: str, price: str, size: str, side: str, best_bid: str | None = None,
           best_ask: str | None = None) -> Event:  # fmt: skip
    """One entry of a ``price_change`` event's ``price_changes``; the best prices only when given."""
    entry = {"asset_id": token_id, "price": price, "size": size, "side": side, "hash": "f3285de052f8"}
    if best_bid is not None:
        entry["best_bid"] = best_bid
    if best_ask is not None:
        entry["best_ask"] = best_ask
    return entry


def price_change_event(*changes: Any, timestamp: str | None = "1786728438403") -> Event:
    """A ``price_change`` event holding ``changes`` (usually built by ``change``); no timestamp for None."""
    event = {"market": MARKET, "price_changes": list(changes), "event_type": "price_change"}
    if timestamp is not None:
        event["timestamp"] = timestamp
    return event


def last_trade_price_event(token_id: str = YES, price: str = "0.51", size: str = "219.217767", side: Any = "SELL",
                           **extra: Any) -> Event:  # fmt: skip
    """A ``last_trade_price`` event."""
    event = {"market": MARKET, "asset_id": token_id, "price": price, "size": size, "fee_rate_bps": "0",
             "side": side, "timestamp": "1786728467101", "event_type": "last_trade_price"}  # fmt: skip
    event.update(extra)
    return event


def tick_size_change_event(token_id: str = YES, new: Any = "0.001", old: str = "0.01") -> Event:
    """A ``tick_size_change`` event from ``old`` to ``new``."""
    return {"asset_id": token_id, "event_type": "tick_size_change", "market": MARKET,
            "new_tick_size": new, "old_tick_size": old, "timestamp": "1739068041853"}  # fmt: skip


def best_bid_ask_event(token_id: str = YES, best_bid: str = "0.5", best_ask: str = "0.52") -> Event:
    """A ``best_bid_ask`` event."""
    return {"market": MARKET, "asset_id": token_id, "best_bid": best_bid, "best_ask": best_ask,
            "spread": "0.02", "timestamp": "1786728467006", "event_type": "best_bid_ask"}  # fmt: skip


def new_market_event(**extra: Any) -> Event:
    """A ``new_market`` event (cold: delivered to ``on_event``, deduplicated on its market)."""
    event = {
        "event_type": "new_market", "id": "1031769", "question": "Will it rain?", "market": "0x" + "31" * 32,
        "assets_ids": [YES, NO], "outcomes": ["Yes", "No"], "timestamp": "1766790415550",
        "condition_id": "0x" + "31" * 32, "active": True, "order_price_min_tick_size": "0.01",
        "event_message": {"id": "125819", "title": "Rain"}, "tags": ["weather"],
    }  # fmt: skip
    event.update(extra)
    return event


def market_resolved_event() -> Event:
    """A ``market_resolved`` event (cold: delivered to ``on_event`` every time), YES winning."""
    return {"event_type": "market_resolved", "id": "1031769", "market": "0x" + "31" * 32,
            "winning_asset_id": YES, "winning_outcome": "Yes", "assets_ids": [YES, NO]}  # fmt: skip


def without(event: Event, key: str) -> Event:
    """``event`` less one key."""
    return {k: v for k, v in event.items() if k != key}


def event_type_last(event: Event) -> Event:
    """``event`` with ``event_type`` moved to the end, after keys added by ``extra``, as the server writes it."""
    return without(event, "event_type") | {"event_type": event["event_type"]}


def frame(*events: Any) -> bytes:
    """The frame's JSON bytes: one event as a bare object, several as an array."""
    return orjson.dumps(events[0] if len(events) == 1 else list(events))


# --- reading what a dispatcher did ----------------------------------------------------------


class Recorder:
    """An on_event callback that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, event_type: str, payload: Any) -> None:
        self.calls.append((event_type, payload))


def row(dispatcher: Any, token_id: str = YES) -> list[int]:
    """The token's row of the dispatcher's store, as a list indexed by the ``pm_ws.row`` fields."""
    store = dispatcher.store
    return [store.view[store.slot(token_id), field] for field in range(store.view.shape[1])]


def counters(dispatcher: Any) -> dict[str, int]:
    """The dispatcher's non-zero ``stats()``."""
    return {key: value for key, value in dispatcher.stats().items() if value}
