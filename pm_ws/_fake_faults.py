"""What reaches the fake server's connections: delivery to subscribers and the fault switches that bend it.

:class:`FaultSwitches` holds the open connections and sends each simulated frame to those subscribed;
its switches break that on demand: clean close, abrupt TCP abort, a half-open server that reads and
writes nothing, a server that sends but stops reading, a data stall that still answers ``PING``,
withheld snapshots, raw and malformed frames, and connections rejected right after the handshake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ._fake_connection import FakeConnection
from ._fake_market import MarketBook, SimulatedMarkets, now_ms

__all__ = ["FaultSwitches", "MALFORMED_KINDS"]

FLUSH_TIMEOUT_SECONDS = 5.0  # longest an async method waits for its frames to reach the sockets
HUGE_FRAME_BYTES = 17 * 2**20  # above the Dispatcher's default 16 MiB, below the client's 32 MiB

# Names of the frames send_malformed() cycles through, in order
MALFORMED_KINDS = (
    "truncated_json", "unknown_event", "wrong_types", "bad_number", "price_out_of_range",
    "unknown_text", "invalid_utf8_binary", "array_of_non_objects", "too_deep", "huge",
)  # fmt: skip


class FaultSwitches(SimulatedMarkets):
    """The open connections of :class:`~pm_ws.testing.FakeMarketServer`, its fault switches and its delivery.

    ``__init__`` sets this part's own state; the server initialises the simulated markets.
    """

    def __init__(self) -> None:  # not SimulatedMarkets.__init__: the server calls each part's own
        self._live: dict[int, FakeConnection] = {}  # the open connections by id
        self._withheld: set[str] = set()
        self._stalled = False
        self._unresponsive = False
        self._not_reading = False
        self._rejecting = False
        self._malformed_next = 0

    # ------------------------------------------------------------------ faults

    async def close_all(self, code: int = 1011, reason: str = "test") -> None:
        """Close every open connection with a clean close handshake."""
        await asyncio.gather(*(conn.websocket.close(code, reason) for conn in list(self._live.values())))

    def abort_all(self) -> None:
        """Drop every open connection's TCP socket at once: no close frame, no handshake."""
        for conn in list(self._live.values()):
            conn.websocket.transport.abort()
            conn.closed = True

    def set_unresponsive(self, on: bool = True) -> None:
        """Play a half-open server: read nothing, answer nothing (not even protocol pings), send nothing.

        Applies to the open connections and to every connection accepted while it is on (their
        opening handshake still completes). Switching it off resumes reading; frames that were due
        meanwhile are lost, so resumed clients' books fall behind.
        """
        self._unresponsive = on
        for conn in self._live.values():
            conn._freeze(on)

    def stop_reading(self, on: bool = True) -> None:
        """Keep sending market data but read nothing more from the client, so its sends block once
        the socket buffers are full (no ``PONG`` either: only the data keeps the client's inbound clock going).

        Applies to the open connections and to every connection accepted while it is on, right after
        its subscription frame. Switching it off resumes reading.
        """
        self._not_reading = on
        for conn in self._live.values():
            if conn._subscription_seen and not conn.frozen:
                conn._read(not on)

    def set_data_stalled(self, on: bool = True) -> None:
        """Keep answering ``PING`` (and bad frames) but send no market data at all, to every connection.

        The books keep changing meanwhile, so a client resumed after a stall holds outdated books
        and should notice on the next ``price_change`` (its best bid/ask will not match).
        """
        self._stalled = on

    def withhold_snapshot(self, token_ids: str | Iterable[str], on: bool = True) -> None:
        """Never send a ``book`` for these tokens (initial dump, resubscribe, trade or tick refresh)."""
        tokens = {token_ids} if isinstance(token_ids, str) else set(token_ids)
        if on:
            self._withheld |= tokens
        else:
            self._withheld -= tokens

    async def send_raw(
        self, frame: str | bytes | Iterable[str | bytes], conn: FakeConnection | None = None
    ) -> None:
        """Send a frame (``str`` = text frame, ``bytes`` = binary frame), or several in order, to one
        or every open connection.

        Ignores the data-stall switch; a frozen (unresponsive) connection sends nothing. Sending
        the output of :meth:`frames` this way streams pre-rendered frames at socket speed.
        """
        frames = [frame] if isinstance(frame, (str, bytes)) else list(frame)
        for target in self._targets(conn):
            for one in frames:
                target._enqueue(one)
        await self._flush()

    async def send_malformed(self, n: int = 1, conn: FakeConnection | None = None) -> None:
        """Send the next ``n`` bad frames of :data:`MALFORMED_KINDS` (a fixed cycle) to every open connection.

        Each one must be rejected whole by a correct client and changes no book: invalid JSON,
        unknown event, wrong JSON types, a bad number inside an otherwise valid ``price_change``,
        a price above 1, unknown text, non-UTF-8 binary, an array of non-objects, nesting deeper
        than 32 and a 17 MiB frame.
        """
        for _ in range(n):
            kind = MALFORMED_KINDS[self._malformed_next % len(MALFORMED_KINDS)]
            self._malformed_next += 1
            frame = self._malformed(kind)
            for target in self._targets(conn):
                target._enqueue(frame)
        await self._flush()

    def reject_connections(self, on: bool = True) -> None:
        """Complete each new WebSocket handshake, then close at once (1013 "try again later")."""
        self._rejecting = on

    def _malformed(self, kind: str) -> str | bytes:
        market = self._markets[0]
        yes_id, no_id = market.yes_id, market.no_id
        timestamp = now_ms()
        if kind == "truncated_json":
            whole = self._book_event(yes_id, with_tick=True)
            return whole[: len(whole) // 2]
        if kind == "unknown_event":
            return (
                f'{{"market":"{market.condition_id}","asset_id":"{yes_id}","timestamp":"{timestamp}",'
                f'"event_type":"mystery_event"}}'
            )
        if kind == "wrong_types":
            return (
                f'{{"market":"{market.condition_id}","asset_id":"{yes_id}","timestamp":"{timestamp}",'
                f'"bids":[{{"price":0.5,"size":100}}],"asks":[],"event_type":"book"}}'
            )
        if kind == "bad_number":
            # a valid-looking first entry must not be applied when the second one is broken
            return (
                f'{{"market":"{market.condition_id}","price_changes":['
                f'{{"asset_id":"{yes_id}","price":"0.01","size":"1","side":"BUY"}},'
                f'{{"asset_id":"{no_id}","price":"0.12345","size":"1","side":"SELL"}}],'
                f'"timestamp":"{timestamp}","event_type":"price_change"}}'
            )
        if kind == "price_out_of_range":
            return (
                f'{{"market":"{market.condition_id}","asset_id":"{yes_id}","timestamp":"{timestamp}",'
                f'"bids":[{{"price":"1.5","size":"10"}}],"asks":[],"event_type":"book"}}'
            )
        if kind == "unknown_text":
            return "HELLO FROM THE FAKE SERVER"
        if kind == "invalid_utf8_binary":
            return b'{"event_type":"book","asset_id":"\xff\xfe","bids":[],"asks":[]}'
        if kind == "array_of_non_objects":
            return '[1,"book",null,[],true]'
        if kind == "too_deep":
            return "[" * 40 + "]" * 40
        padding = "x" * HUGE_FRAME_BYTES
        return f'{{"event_type":"book","asset_id":"{yes_id}","bids":[],"asks":[],"padding":"{padding}"}}'

    # ------------------------------------------------------------------ delivery

    def _targets(self, conn: FakeConnection | None) -> list[FakeConnection]:
        if conn is not None:
            return [conn]
        return list(self._live.values())

    def _send_books(self, conn: FakeConnection, assets: Iterable[str]) -> None:
        if self._stalled:
            return
        known = [token for token in dict.fromkeys(assets) if token in self._book_of and token not in self._withheld]
        frame = self._books_frame(known)
        if frame:
            conn._enqueue(frame)

    def _send_data(self, token_id: str, frame: str) -> None:
        if self._stalled:
            return
        for conn in self._live.values():
            if token_id in conn.subscribed:
                conn._enqueue(frame)

    def _send_book(self, token_id: str) -> None:
        # a refresh, as after a trade: no tick_size
        if token_id not in self._withheld and not self._stalled:  # not rendered when nobody gets it
            self._send_data(token_id, self._book_event(token_id, with_tick=False))

    def _send_trade(self, token_id: str | None) -> None:
        traded = self._trade(token_id)
        if traded is not None:
            token, frame, market = traded
            self._send_data(token, frame)
            for book_token in market[1:]:
                self._send_book(book_token)

    def _send_custom(self, frames: list[str]) -> None:
        # The custom-feature events are global: every connection that asked for them gets them
        if self._stalled:
            return
        for conn in self._live.values():
            if conn.custom_features:
                for frame in frames:
                    conn._enqueue(frame)

    def _send_market(self, book: MarketBook, frame: str) -> None:
        if self._stalled:
            return
        yes_id, no_id = book.market.yes_id, book.market.no_id
        for conn in self._live.values():
            if yes_id in conn.subscribed or no_id in conn.subscribed:
                conn._enqueue(frame)

    async def _flush(self) -> None:
        # a client that stops reading must not hang the test driving the server
        waits = [asyncio.ensure_future(conn._wait_idle()) for conn in self._live.values() if not conn.frozen]
        if waits:
            _, late = await asyncio.wait(waits, timeout=FLUSH_TIMEOUT_SECONDS)
            for wait in late:
                wait.cancel()
