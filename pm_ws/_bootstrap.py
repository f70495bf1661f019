"""REST bootstrap: a token whose WebSocket snapshot never came gets its book from the CLOB REST API.

While a token's request is in flight its WebSocket ``price_change`` entries are buffered (the core
skips them: the token is not LIVE). The REST answer can be newer than what the WebSocket has delivered
(the two sockets are read in whatever order their bytes come), so the book waits until the WebSocket
passes the snapshot: until an entry of the token newer than the snapshot arrives, or ``PARK_SECONDS``
(a quiet market has nothing in flight). A delta older than the snapshot applied on top of it would
leave a book the server never had, which a later delta with matching best prices would confirm LIVE.
Then the book is loaded with ``BookStore.load_book`` (state ``UNCONFIRMED``) and the buffered entries
whose timestamp is the snapshot's or later are replayed through a dispatcher of their own, frame by
frame; older ones are already in the snapshot. A token is asked only once it waited ``after`` on one open
socket (so the server has long had its subscription when the snapshot is taken: the deltas between the
snapshot and a later subscription would never come), and its book is dropped (asked again later) if that
socket changed meanwhile, or went silent (no market data for longer than ``confirm_interval``, or none yet
since it opened: a server that goes silent on an open socket drops the deltas meanwhile): the deltas of such a
gap are never delivered. Once loaded, the connection watches the book: a silence turns its row STALE, before
the data that ends it could confirm the book (``on_loaded``). At an
equal timestamp the order of the two is unknown (the market channel has no sequence numbers): the entry
is replayed, which is harmless for sizes that are absolute, and the WebSocket decides: the book turns
LIVE only when a ``price_change`` entry or a ``best_bid_ask`` carries best prices equal to it, and a
``price_change`` that disagrees makes it INVALID (resync).

The CLOB's documented limits (docs.polymarket.com/api-reference/rate-limits): ``GET /book`` 1,500
and ``POST /books`` 500 requests per 10 s, throttled by Cloudflare rather than refused; books are
asked in batches of ``BOOKS_PER_REQUEST`` through ``POST /books``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from ._core import parse_price, parse_size
from ._http import HttpClient, HttpError
from ._taps import Taps
from .row import STATE, State

logger = logging.getLogger("pm_ws")

BOOKS_PER_REQUEST = 50
PARK_SECONDS = 0.5  # longest a REST book waits for the WebSocket to pass its timestamp

_WAITING = (int(State.SUBSCRIBING), int(State.STALE), int(State.INVALID))  # states a bootstrap may rescue


class _Buffered(NamedTuple):
    timestamp: int  # the frame's exchange time, ms
    market: str
    entries: list[dict[str, Any]]  # this token's entries of that frame, in order
    recv_ns: int


class _RestBook(NamedTuple):
    timestamp: int  # the snapshot's exchange time, ms
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    tick: int
    recv_ns: int


def _always_up(token: str) -> object:
    return True


class RestBootstrap:
    """Find tokens waiting too long for a snapshot, fetch their REST books, merge the buffered deltas.

    Parameters
    ----------
    taps : Taps
        The client's store operations (the books loaded and the deltas replayed reach its store taps).
    http : HttpClient
        Shared HTTP client (its rate limit covers these requests too).
    clob_url : str
        CLOB REST base URL.
    after : float
        Seconds a token may wait without a book (SUBSCRIBING, STALE or INVALID) before its REST book is asked.
    connection : callable, optional
        ``connection(token)``: what identifies the open socket that delivers the token's deltas, and its silences
        so far (compared with ``==``), None while it has none (by default one that is always up).
    on_loaded : callable, optional
        ``on_loaded(token)``, called once a REST book is loaded: the connection drops it on its next silence.
    """

    def __init__(
        self,
        taps: Taps,
        http: HttpClient,
        clob_url: str,
        after: float,
        connection: Callable[[str], object | None] | None = None,
        on_loaded: Callable[[str], None] | None = None,
    ) -> None:
        self.taps = taps
        self.store = store = taps.store
        self.http = http
        self.clob_url = clob_url.rstrip("/")
        self.after_ns = int(after * 1e9)
        self.buffers: dict[str, list[_Buffered]] = {}  # tokens with a request in flight (or a book parked)
        self.parked: dict[str, _RestBook] = {}  # REST books waiting for the WebSocket to pass them
        self.connection = connection if connection is not None else _always_up
        self.sockets: dict[str, object] = {}  # token -> its connection when its request was made
        self.on_loaded = on_loaded
        # token -> (monotonic ns it was first seen without a book on this socket, the socket)
        self.waiting_since: dict[str, tuple[int, object]] = {}
        core = sys.modules[type(store).__module__]
        self.replay = core.Dispatcher(store)  # its counters are the replays' own
        self.counters = {
            "requests": 0, "books_loaded": 0, "superseded": 0, "rejected": 0, "missing": 0,
            "replayed": 0, "older_dropped": 0, "errors": 0, "connection_changed": 0,
        }  # fmt: skip

    def stats(self) -> dict[str, Any]:
        """Counters, tokens in flight, and the replay dispatcher's checksum mismatches."""
        replay = self.replay.stats()
        return {**self.counters, "in_flight": len(self.buffers), "replay_mismatches": replay["checksum_mismatch"]}

    def due(self, tokens: list[str], now: int) -> list[str]:
        """The tokens among ``tokens`` that waited ``after`` without a book and have no request in flight."""
        view = self.store.view
        slot_of = self.store.slot
        since = self.waiting_since
        due = []
        for token in tokens:
            if view[slot_of(token), STATE] not in _WAITING:
                since.pop(token, None)
                continue
            socket = self.connection(token)
            first, seen_on = since.get(token, (now, None))
            if socket is None or seen_on != socket:  # the clock starts again on each socket
                since[token] = (now, socket)
            elif now - first >= self.after_ns and token not in self.buffers:
                due.append(token)
        return due

    def forget(self, tokens: list[str]) -> None:
        """Stop tracking unsubscribed tokens."""
        for token in tokens:
            self.waiting_since.pop(token, None)
            self.buffers.pop(token, None)
            self.parked.pop(token, None)
            self.sockets.pop(token, None)

    def on_frame(self, frame: str | bytes, recv_ns: int) -> None:
        """Buffer the ``price_change`` entries of tokens whose request is in flight (free when none is)."""
        if not self.buffers:
            return
        marker: Any = '"price_change"' if isinstance(frame, str) else b'"price_change"'
        if marker not in frame:
            return
        try:
            document = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return
        passed: list[str] = []  # parked books the WebSocket has passed: merged once the whole frame is buffered
        for event in document if isinstance(document, list) else [document]:
            if not isinstance(event, dict) or event.get("event_type") != "price_change":
                continue
            changes = event.get("price_changes")
            if not isinstance(changes, list):
                continue
            mine: dict[str, list[dict[str, Any]]] = {}
            for entry in changes:
                token = entry.get("asset_id") if isinstance(entry, dict) else None
                if token in self.buffers:
                    mine.setdefault(token, []).append(entry)
            for token, entries in mine.items():
                try:
                    timestamp = int(event.get("timestamp", ""))
                except ValueError:
                    continue  # the core rejects it too
                self.buffers[token].append(_Buffered(timestamp, str(event.get("market", "")), entries, recv_ns))
                parked = self.parked.get(token)
                if parked is not None and timestamp > parked.timestamp:
                    passed.append(token)
        # Merged after this frame reached every frame tap: a publisher writes the frame, then the book and replays
        loop = asyncio.get_running_loop()
        for token in dict.fromkeys(passed):
            loop.call_soon(self._merge_parked, token)

    async def fetch(self, tokens: list[str]) -> None:
        """Ask the REST books of ``tokens`` (buffering their deltas from now on) and merge each answer."""
        now = time.monotonic_ns()
        for token in tokens:
            self.buffers[token] = []
            self.sockets[token] = socket = self.connection(token)
            self.waiting_since[token] = (now, socket)  # the next attempt, if needed, waits ``after`` again
        for start in range(0, len(tokens), BOOKS_PER_REQUEST):
            batch = tokens[start : start + BOOKS_PER_REQUEST]
            self.counters["requests"] += 1
            try:
                books = await self.http.post_json(f"{self.clob_url}/books", [{"token_id": t} for t in batch])
            except HttpError as exc:
                self.counters["errors"] += 1
                logger.warning("REST bootstrap of %d tokens failed: %s", len(batch), exc)
                books = []
            recv_ns = time.time_ns()
            answered = {str(book.get("asset_id")): book for book in books if isinstance(book, dict)}
            for token in batch:
                buffered = self.buffers.get(token)
                if buffered is None:
                    continue  # unsubscribed meanwhile
                book = answered.get(token)
                rest_book = self._parse(token, book, recv_ns) if book is not None else None
                if rest_book is None:
                    self.counters["missing" if book is None else "rejected"] += 1
                    del self.buffers[token], self.sockets[token]
                    continue
                self.parked[token] = rest_book
                if any(item.timestamp > rest_book.timestamp for item in buffered):
                    self._merge(token)  # the WebSocket is past the snapshot already
        await asyncio.sleep(PARK_SECONDS)
        for token in tokens:
            if token in self.parked:  # no newer delta came: a quiet market, what was in flight has come by now
                self._merge(token)

    def _parse(self, token: str, book: dict[str, Any], recv_ns: int) -> _RestBook | None:
        try:
            bids = [(parse_price(level["price"]), parse_size(level["size"])) for level in book["bids"]]
            asks = [(parse_price(level["price"]), parse_size(level["size"])) for level in book["asks"]]
            tick = parse_price(book["tick_size"]) if book.get("tick_size") else 0
            return _RestBook(int(book["timestamp"]), bids, asks, tick, recv_ns)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("REST book of %s refused: %s", token, exc)
            return None

    def _merge_parked(self, token: str) -> None:
        if token in self.parked:
            self._merge(token)

    def _merge(self, token: str) -> None:
        counters = self.counters
        book = self.parked.pop(token)
        buffered = self.buffers.pop(token, [])
        socket = self.sockets.pop(token, None)
        if socket is None or socket != self.connection(token):
            counters["connection_changed"] += 1  # deltas lost between two sockets or in a silence: asked again later
            return
        timestamp = book.timestamp
        try:
            loaded = self.taps.load_book(token, book.bids, book.asks, book.tick, timestamp, book.recv_ns)
        except (KeyError, TypeError, ValueError) as exc:  # an impossible book (or the token gone)
            counters["rejected"] += 1
            logger.warning("REST book of %s refused: %s", token, exc)
            return
        if not loaded:
            counters["superseded"] += 1  # the WebSocket delivered first (or the market resolved)
            return
        counters["books_loaded"] += 1
        if self.on_loaded is not None:
            self.on_loaded(token)
        for item in buffered:
            if item.timestamp < timestamp:
                counters["older_dropped"] += 1  # already in the snapshot
                continue
            frame = orjson.dumps(
                {"event_type": "price_change", "market": item.market, "timestamp": str(item.timestamp),
                 "price_changes": item.entries}
            ).decode()  # fmt: skip
            self.taps.replay(token, self.replay.feed, frame, item.recv_ns)
            counters["replayed"] += 1
