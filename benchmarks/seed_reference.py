"""The seed-style handler pm_ws replaces, kept only as the cost baseline of the benchmarks.

This re-creates the logic of the typical draft market-channel handler: ``orjson.loads`` the
whole frame, dispatch each event on ``event_type`` through a dict of bound methods, convert
prices with ``int(float(s) * 100)`` to cents, take ``bids[0]`` / ``asks[0]`` as the best level
of a ``book`` and store a ``(bid, bid_sz, ask, ask_sz, ts)`` tuple per token in a dict.

It is WRONG ON PURPOSE and must never be used for anything but timing: the float round trip
is one cent low for prices like ``"0.29"``, element 0 of ``bids``/``asks`` is the worst level
(the wire sends best last), sub-cent ticks are truncated, and no L2 book is kept. Fixing any
of that would change its cost, and its cost is the only thing it is here for.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson


class SeedHandler:
    """Seed-style frame handler: orjson, dict dispatch, float prices, tuple cache.

    Parameters
    ----------
    token_ids
        The subscribed tokens; events for any other token are ignored, as the draft did.
    """

    def __init__(self, token_ids: Iterable[str]) -> None:
        self.tokens = set(token_ids)
        self.cache: dict[str, tuple[int, float, int, float, int]] = {}
        self.last_trades: dict[str, tuple[int, float, str, int]] = {}
        self.handlers = {
            "book": self._on_book,
            "price_change": self._on_price_change,
            "last_trade_price": self._on_last_trade_price,
            "best_bid_ask": self._on_best_bid_ask,
        }

    def feed(self, frame: str | bytes) -> None:
        """Decode one frame (object or array of objects) and apply each event."""
        msg = orjson.loads(frame)
        events = msg if isinstance(msg, list) else [msg]
        for event in events:
            handler = self.handlers.get(event.get("event_type"))
            if handler is not None:
                handler(event)

    def _on_book(self, event: dict) -> None:
        asset_id = event["asset_id"]
        if asset_id not in self.tokens:
            return
        bids = event.get("bids") or []
        asks = event.get("asks") or []
        # the draft's bug: element 0 is the WORST level on the wire
        bid = int(float(bids[0]["price"]) * 100) if bids else 0
        bid_sz = float(bids[0]["size"]) if bids else 0.0
        ask = int(float(asks[0]["price"]) * 100) if asks else 100
        ask_sz = float(asks[0]["size"]) if asks else 0.0
        self.cache[asset_id] = (bid, bid_sz, ask, ask_sz, int(event.get("timestamp", 0)))

    def _on_price_change(self, event: dict) -> None:
        ts = int(event.get("timestamp", 0))
        for change in event["price_changes"]:
            asset_id = change["asset_id"]
            if asset_id not in self.tokens:
                continue
            bid, bid_sz, ask, ask_sz, _ = self.cache.get(asset_id, (0, 0.0, 100, 0.0, 0))
            price = int(float(change["price"]) * 100)
            size = float(change["size"])
            best_bid = change.get("best_bid")
            if best_bid is not None:
                bid = int(float(best_bid) * 100)
            best_ask = change.get("best_ask")
            if best_ask is not None:
                ask = int(float(best_ask) * 100)
            side = change["side"]
            if side == "BUY" and price == bid:
                bid_sz = size
            elif side == "SELL" and price == ask:
                ask_sz = size
            self.cache[asset_id] = (bid, bid_sz, ask, ask_sz, ts)

    def _on_last_trade_price(self, event: dict) -> None:
        asset_id = event["asset_id"]
        if asset_id not in self.tokens:
            return
        self.last_trades[asset_id] = (
            int(float(event["price"]) * 100),
            float(event["size"]),
            event.get("side", ""),
            int(event.get("timestamp", 0)),
        )

    def _on_best_bid_ask(self, event: dict) -> None:
        asset_id = event["asset_id"]
        if asset_id not in self.tokens:
            return
        _, bid_sz, _, ask_sz, _ = self.cache.get(asset_id, (0, 0.0, 100, 0.0, 0))
        bid = int(float(event["best_bid"]) * 100)
        ask = int(float(event["best_ask"]) * 100)
        self.cache[asset_id] = (bid, bid_sz, ask, ask_sz, int(event.get("timestamp", 0)))
