"""Pure-Python core: exact number parsing, L2 books, top-of-book rows and the frame dispatcher.

This is the reference implementation (the test oracle) of the compiled ``pm_ws._core_c`` and the
core used when ``PM_WS_NO_EXTENSIONS=1``. Both produce byte-identical ``BookStore.view`` contents
and identical ``Dispatcher.stats()`` for any input. The rules, in short:

Numbers
    Prices are ints in 1e-4 units (``"0.5"`` -> 5000, ``".48"`` -> 4800, ``"1"`` -> 10000), sizes
    int64 in 1e-6 units (``"219.217767"`` -> 219217767). Grammar: ASCII ``DIGITS? ('.' DIGITS?)?``
    with at least one digit. More fractional digits than the scale (even a trailing ``0``), a
    price above 1, a size beyond int64, a sign, an exponent or whitespace is a ``ParseError``,
    never a rounding. No float or Decimal is involved anywhere.

Rows and books
    ``BookStore`` keeps one row of ``N_FIELDS`` int64 values per token slot in a single buffer that
    is never reallocated; ``view`` exports it read-only (format ``"q"``, shape
    ``(capacity, N_FIELDS)``) through a second, read-only mapping of the same memory, so nothing
    reachable from a view can write a row. Each token's book keeps per side a list of
    ``(price, size)`` in wire order, worst to best (bids ascending, asks descending), so the best
    level is the last one.

Frames
    A frame is a control word (``PONG``, ``INVALID OPERATION``, ``NO NEW ASSETS``, any case), or
    a JSON object or array of objects. The whole frame is validated (RFC 8259, nesting depth at
    most 32) before anything is applied. Each event is checked in order: known ``event_type``
    (else ``rej_unknown_event``), shape (else ``rej_bad_event``), numbers (else
    ``rej_bad_number``), subscribed token (else ``skip_unsubscribed``); a rejected event changes
    nothing. ``book`` replaces a book and makes the token LIVE (after ``mark_stale`` of a token whose
    books carried ``tick_size``, only a ``book`` with it does, or any book after a ``tick_size_change``,
    even a repeated one); ``price_change`` sets absolute
    level sizes (``"0"`` deletes) on LIVE tokens only and checks the server's ``best_bid`` /
    ``best_ask``; a mismatch or a crossed book makes the token INVALID and queues a resync, and
    so does a level price off the token's known tick grid (``off_grid``, any size) or a book that
    cannot exist (``impossible_book``: a bid at 1 or an ask at 0 with size); such a book or
    change is applied first, the row says it cannot be trusted.
    ``tick_size_change`` to a new value makes a LIVE/INVALID token STALE and queues a resync;
    ``best_bid_ask`` is only a cross-check of a LIVE book; ``new_market`` (deduplicated) and
    ``market_resolved`` go to ``on_event``. ``CONFIRM_TS_NS`` takes the frame's receive time when
    the server confirms the top of book: a ``book`` that is not INVALID, or server best prices
    (a ``price_change`` entry's, a ``best_bid_ask``) that match the book. With ``feed(owner=n)``,
    n != 0, events for tokens whose owner is not n change nothing (``skip_foreign``). Every
    outcome is counted in ``stats()``.

The parts outside this module: ``_numbers_py`` (exact numbers), ``_frame_decode_py`` (the JSON
text and each event's checks) and ``_store_transfer_py`` (resolutions, a token's export and
restore).
"""

from __future__ import annotations

import heapq
import mmap
import operator
import os
import struct
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import shared as shared_table

from ._events import CONTROL_WORDS, EVENTS, NEW_MARKET_ID_KEYS, STAT_KEYS, EventType
from ._frame_decode_py import Rejected, decode_event, decode_json, frame_bytes
from ._numbers_py import INT64_MAX, parse_price, parse_size, price_to_cents
from ._rest_levels import wire_levels
from ._store_transfer_py import export_slot, resolve_slot, restore_slot
from .errors import capacity_error, token_id_type_error, token_ids_type_error
from .row import (
    ASK_LEVELS,
    ASK_PX,
    ASK_SZ,
    BID_LEVELS,
    BID_PX,
    BID_SZ,
    CONFIRM_TS_NS,
    DEFAULT_MAX_FRAME_BYTES,
    EPOCH,
    EXCH_TS_MS,
    LAST_PX,
    LAST_SIDE,
    LAST_SZ,
    MISMATCHES,
    N_FIELDS,
    OWNER_MAX,
    PRICE_SCALE,
    RECV_TS_NS,
    SEEN_MARKET_ID_MAX,
    SEEN_MARKETS_MAX,
    SEQ,
    SEQ_STEP,
    SIDE_BUY,
    STATE,
    TICK,
    TOKEN_ID,
    TOKEN_TAG,
    TOKEN_ID_EXPECTED,
    State,
    Top,
    check_owner,
    token_tag,
)

__all__ = ["BookStore", "Dispatcher", "parse_price", "parse_size", "price_to_cents"]


_ROW = struct.Struct(f"@{N_FIELDS}q")  # one row, native int64 like the exported "q" view
_WORD = struct.Struct("@q")  # one field
_SEQ_OFFSET = SEQ * _WORD.size

_JSON_WHITESPACE = b" \t\n\r"
_JSON_OPENERS = b"{["

_CONTROL_WORDS = {word.encode(): counter for word, counter in CONTROL_WORDS.items()}


# ---------------------------------------------------------------------------------------------
# Book sides: lists of (price, size), worst -> best (bids ascending, asks descending)


_Level = tuple[int, int]  # (price units, size units)


class _Book:
    """One token's L2 book: per side ``(price, size)`` tuples in wire order, best last."""

    __slots__ = ("bids", "asks", "books_name_tick", "tick_unconfirmed")

    def __init__(self) -> None:
        self.bids: list[_Level] = []  # ascending price
        self.asks: list[_Level] = []  # descending price
        self.books_name_tick = False  # a book for this token carried tick_size (a server that sends it)
        self.tick_unconfirmed = False  # marked STALE since: only a book naming the tick turns it LIVE


def _bid_key(level: _Level) -> int:
    return level[0]


def _ask_key(level: _Level) -> int:
    return -level[0]  # asks descend, so their negated prices ascend for bisect


def _set_level(levels: list[_Level], price: int, size: int, key: Callable[[_Level], int]) -> None:
    # Absolute size at a price; size 0 deletes the level (an absent level is a no-op)
    index = bisect_left(levels, key((price, size)), key=key)
    present = index < len(levels) and levels[index][0] == price
    if size and present:
        levels[index] = (price, size)
    elif size:
        levels.insert(index, (price, size))
    elif present:
        del levels[index]


def _wire_order(levels: list[_Level], key: Callable[[_Level], int]) -> list[_Level]:
    # Drop empty levels; sort only when the server's worst->best order is broken
    kept = [level for level in levels if level[1]]
    keys = [key(level) for level in kept]
    if all(a < b for a, b in zip(keys, keys[1:])):
        return kept
    return sorted(kept, key=key)


def _touch(row: list[int], book: _Book, timestamp: int | None, recv_ts_ns: int) -> None:
    # The one row update per token per event: top of book from the book, times (SEQ: _write_row)
    row[BID_PX], row[BID_SZ] = book.bids[-1] if book.bids else (0, 0)
    row[ASK_PX], row[ASK_SZ] = book.asks[-1] if book.asks else (PRICE_SCALE, 0)
    row[BID_LEVELS] = len(book.bids)
    row[ASK_LEVELS] = len(book.asks)
    if timestamp is not None:
        row[EXCH_TS_MS] = timestamp
    row[RECV_TS_NS] = recv_ts_ns


def _level_flaw(price: int, size: int, tick: int, bid: bool) -> str | None:
    # "off_grid" for a price off the known tick grid (tick > 0, any size), "impossible_book" for a
    # bid at 1 or an ask at 0 with size, else None
    if tick > 0 and price % tick:
        return "off_grid"
    if size and (price >= PRICE_SCALE if bid else price == 0):
        return "impossible_book"
    return None


def _book_flaw(bids: list[_Level], asks: list[_Level], tick: int) -> str | None:
    # The flaw of a snapshot's levels (see _level_flaw): an off-grid level anywhere first
    flaws = {_level_flaw(price, size, tick, True) for price, size in bids}
    flaws.update(_level_flaw(price, size, tick, False) for price, size in asks)
    return "off_grid" if "off_grid" in flaws else "impossible_book" if "impossible_book" in flaws else None


def _crossed(row: list[int]) -> bool:
    return row[BID_LEVELS] > 0 and row[ASK_LEVELS] > 0 and row[BID_PX] >= row[ASK_PX]


# ---------------------------------------------------------------------------------------------
# BookStore


def _token_key(token_id: object) -> str | None:
    # The plain str a token id is held under, None for a str/bytes that cannot be an id; TypeError for
    # anything else. A str subclass (numpy.str_) is held as its plain value, as the compiled core does
    if isinstance(token_id, str):
        key = str.__str__(token_id)
    elif isinstance(token_id, bytes):
        key = token_id.decode("latin-1")
    else:
        raise token_id_type_error(token_id)
    return key if TOKEN_ID.fullmatch(key) else None


def _mapped_twice(size: int) -> tuple[mmap.mmap, mmap.mmap]:
    # Private rows in anonymous memory mapped twice: writable for the store, read-only for the view (as a
    # shared store maps its segment a second time), so nothing reachable from the view can write a row
    memfd = getattr(os, "memfd_create", None)  # Linux; elsewhere an unlinked temporary file
    with os.fdopen(memfd("pm_ws-rows", os.MFD_CLOEXEC), "w+b") if memfd else tempfile.TemporaryFile() as file:
        file.truncate(size)
        return mmap.mmap(file.fileno(), size), mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)


class BookStore:
    """Books and top-of-book rows for up to ``capacity`` tokens, one slot per token.

    Parameters
    ----------
    capacity : int
        Number of slots (rows). Fixed for the store's life.
    shared : str or None
        Keep the rows in the named POSIX shared-memory segment ``/shared`` (mode 0600), where
        ``pm_ws.TopReader(shared)`` reads them from any process of this user; see ``pm_ws.shared``
        for the layout. The segment is unlinked at a clean exit (or ``close_shared()``); one left by
        a dead writer is replaced. Call ``beat()`` at least every second (``MarketClient`` does).

    A token id is a str or bytes (subclasses too, e.g. ``numpy.str_``); every method that takes one
    raises TypeError for anything else, but ``in`` is simply False.

    Raises
    ------
    ValueError
        ``capacity`` is below 1, or ``shared`` is not a valid name.
    pm_ws.shared.SharedTableError
        ``shared`` names a table whose writer is alive, or something that is not a pm_ws table.
    """

    def __init__(self, capacity: int = 1024, shared: str | None = None) -> None:
        capacity = operator.index(capacity)
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, was {capacity}")
        self._capacity = capacity
        self._segment: shared_table.Segment | None = None
        # The rows twice, never resized (views stay valid): _buffer the store writes, _readable the
        # views export, a read-only mapping of the same memory
        self._buffer: mmap.mmap | memoryview
        size = capacity * _ROW.size
        if shared is None:
            self._buffer, readable = _mapped_twice(size)
            self._readable = memoryview(readable)
        else:
            from . import shared as shared_table  # the segment machinery only when asked for (and no import cycle)

            self._segment = shared_table.Segment(shared, capacity)
            offset = self._segment.rows_offset
            self._buffer = memoryview(self._segment.mmap)[offset:]
            self._readable = memoryview(shared_table.open_segment(shared))[offset : offset + size]
        self._slots: dict[str, int] = {}
        self._ids: list[str | None] = [None] * capacity
        self._books: list[_Book | None] = [None] * capacity
        self._owners = [0] * capacity  # per slot: the owner given to add/set_owner, 0 for none
        self._resolved: dict[str, bool | None] = {}  # resolved tokens -> won (None: winner unknown)
        self._free = list(range(capacity))  # a min-heap, so the lowest free slot is reused first
        self._resync: dict[str, None] = {}  # insertion-ordered set of tokens awaiting a snapshot

    @property
    def capacity(self) -> int:
        """Number of slots."""
        return self._capacity

    @property
    def shared(self) -> str | None:
        """The name of the shared table the rows live in, None for a private store."""
        return None if self._segment is None else self._segment.name

    def beat(self) -> None:
        """Tell readers of the shared table that the writer is alive (a no-op for a private store)."""
        if self._segment is not None:
            self._segment.beat()

    def close_shared(self) -> None:
        """Withdraw the shared table: readers see every row STALE, the name is unlinked (no-op when private)."""
        if self._segment is not None:
            self._segment.close()

    @property
    def view(self) -> memoryview:
        """Read-only int64 view of every row: format ``"q"``, shape ``(capacity, N_FIELDS)``.

        Index it as ``view[slot, FIELD]``. Every access returns a new view of the same buffer,
        which lives as long as the store and is updated in place.
        """
        return self._readable.cast("q", (self._capacity, N_FIELDS))

    def add(self, token_id: str | bytes, owner: int = 0) -> int:
        """Hold a token: give it the lowest free slot with an empty book, state ``SUBSCRIBING``, its ``TOKEN_TAG``.

        In a slot used before, SEQ and EPOCH continue from its previous token, each bumped: they
        never go back, so a reader that cached the slot sees them move on (and TOKEN_TAG change).

        Parameters
        ----------
        token_id : str or bytes
            1 to 100 ASCII characters from ``[0-9A-Za-z_.:-]``.
        owner : int
            The new token's owner (0 .. ``OWNER_MAX``; 0 = none): ``Dispatcher.feed(..., owner=n)``
            with n != 0 changes only tokens owned by n. A token already held keeps its owner
            (``set_owner`` moves it).

        Returns
        -------
        int
            The token's slot; a token already held keeps its slot and row.

        Raises
        ------
        TypeError
            ``token_id`` is not str or bytes.
        ValueError
            ``token_id`` is not a valid token id.
        CapacityError
            Every slot is taken (the message names the token and the capacity).
        """
        owner = check_owner(owner)
        key = _token_key(token_id)
        if key is None:
            raise ValueError(f"invalid token id {token_id!r:.60}: {TOKEN_ID_EXPECTED}")
        slot = self._slots.get(key)
        if slot is not None:
            return slot
        if not self._free:
            raise capacity_error(key, self._capacity)
        slot = heapq.heappop(self._free)
        self._slots[key] = slot
        self._ids[slot] = key
        self._books[slot] = _Book()
        if self._segment is not None:  # the directory first: a reader checks what it finds against the row
            self._segment.write_entry(slot, key)
        row = self._cleared_row(slot)
        if row[SEQ]:  # a reused slot: a reader that cached it sees SEQ (always) and EPOCH move on
            row[EPOCH] += 1
        row[ASK_PX] = PRICE_SCALE
        row[STATE] = State.SUBSCRIBING
        row[TOKEN_TAG] = token_tag(key)
        self._owners[slot] = owner
        self._write_row(slot, row)
        return slot

    def remove(self, token_id: str | bytes) -> None:
        """Stop holding a token: free its slot and book, zero its row but SEQ (bumped) and EPOCH.

        Unknown ids are ignored.
        """
        key = _token_key(token_id)
        if key is None or key not in self._slots:
            return
        slot = self._slots.pop(key)
        self._ids[slot] = None
        self._books[slot] = None
        self._owners[slot] = 0
        self._write_row(slot, self._cleared_row(slot))
        if self._segment is not None:
            self._segment.write_entry(slot, None)
        self._resync.pop(key, None)  # at once: a token re-added before the drain is not pending
        self._resolved.pop(key, None)
        heapq.heappush(self._free, slot)

    def set_owner(self, token_id: str | bytes, owner: int) -> None:
        """Give a held token to another owner (0 .. ``OWNER_MAX``; 0 = none); its row is unchanged.

        Raises
        ------
        KeyError
            The token is not held.
        """
        owner = check_owner(owner)
        self._owners[self.slot(token_id)] = owner

    def owner(self, token_id: str | bytes) -> int:
        """Return a held token's owner (0 = none); KeyError if the token is not held."""
        return self._owners[self.slot(token_id)]

    def slot(self, token_id: str | bytes) -> int:
        """Return the token's slot (its row index in ``view``); KeyError if the token is not held."""
        slot = self._lookup(token_id)
        if slot is None:
            raise KeyError(token_id)
        return slot

    def __contains__(self, token_id: object) -> bool:
        # Anything that is not str or bytes is simply not held (no TypeError, as for a set)
        return isinstance(token_id, (str, bytes)) and self._lookup(token_id) is not None

    def __len__(self) -> int:
        return len(self._slots)

    def tokens(self) -> list[str]:
        """Return the ids of the tokens held, in slot order."""
        return [token for token in self._ids if token is not None]

    def top(self, token_id: str | bytes) -> Top:
        """Return the token's row as a :class:`Top`; KeyError if the token is not held."""
        return Top.from_row(self._read_row(self.slot(token_id)))

    def book(self, token_id: str | bytes, depth: int | None = 10) -> tuple[list[_Level], list[_Level]]:
        """Return the token's book as ``(bids, asks)``, best level first.

        Parameters
        ----------
        token_id : str or bytes
            A token held by the store.
        depth : int or None
            At most this many levels per side; ``None`` returns every level.

        Returns
        -------
        tuple of two lists
            ``(price, size)`` int pairs in pm_ws units, best first.

        Raises
        ------
        KeyError
            The token is not held.
        ValueError
            ``depth`` is negative.
        """
        book = self._books[self.slot(token_id)]
        assert book is not None  # a held slot always has a book
        if depth is not None and depth < 0:
            raise ValueError(f"depth must be None or at least 0, was {depth}")
        return book.bids[::-1][:depth], book.asks[::-1][:depth]

    def mark_stale(self, token_ids: Iterable[str | bytes]) -> None:
        """Mark tokens ``STALE`` (e.g. their connection was lost): EPOCH and SEQ are bumped.

        Their books are kept for inspection, but deltas no longer apply until the next snapshot.
        A tick change may have been missed meanwhile: a token whose books have carried ``tick_size``
        turns LIVE again only on a ``book`` that carries it (a snapshot), not on a post-trade refresh
        without one (that refresh still replaces the levels, the row stays STALE); a
        ``tick_size_change`` confirms the tick, and the next book of any kind turns it LIVE.
        Ids not held by the store are ignored. TypeError, before any row changes, for a single str or
        bytes (not a collection of ids) or an id that is not str or bytes.
        """
        if isinstance(token_ids, (str, bytes, bytearray)):  # would mark its characters
            raise token_ids_type_error(token_ids)
        slots = [self._lookup(token_id) for token_id in token_ids]  # every id checked before any row changes
        for slot in slots:
            if slot is None:
                continue
            row = self._read_row(slot)
            if row[STATE] == State.RESOLVED:
                continue  # final
            row[STATE] = State.STALE
            book = self._books[slot]
            assert book is not None
            book.tick_unconfirmed = book.books_name_tick
            row[EPOCH] += 1
            self._write_row(slot, row)

    def load_book(
        self,
        token_id: str | bytes,
        bids: Iterable[tuple[int, int]],
        asks: Iterable[tuple[int, int]],
        tick: int,
        exch_ts_ms: int,
        recv_ts_ns: int,
    ) -> bool:
        """Load a book from elsewhere than the WebSocket (a REST snapshot): state ``UNCONFIRMED``.

        ``price_change`` deltas apply to an UNCONFIRMED book; the first ``price_change`` entry or
        ``best_bid_ask`` whose best prices match it turns it LIVE (``CONFIRM_TS_NS`` stamped), a
        ``price_change`` whose best prices do not is INVALID and queued for resync; a ``book`` replaces it.

        Parameters
        ----------
        token_id : str or bytes
            A held token.
        bids, asks : iterables of (int, int)
            ``(price units, size units)`` levels in any order.
        tick : int
            Tick size in price units (0: keep the row's).
        exch_ts_ms, recv_ts_ns : int
            The snapshot's exchange time and its receive time.

        Returns
        -------
        bool
            False (nothing changed) when the token is LIVE or RESOLVED: the WebSocket already
            delivered, or the market is over.

        Raises
        ------
        KeyError
            The token is not held.
        ValueError
            An impossible book (see ``pm_ws._rest_levels.wire_levels``).
        """
        slot = self.slot(token_id)
        row = self._read_row(slot)
        tick = operator.index(tick) or row[TICK]
        bid_levels, ask_levels = wire_levels(bids, asks, tick)
        if row[STATE] in (State.LIVE, State.RESOLVED):
            return False
        book = self._books[slot]
        assert book is not None
        book.bids, book.asks = bid_levels, ask_levels
        book.books_name_tick = True
        book.tick_unconfirmed = False
        row[TICK] = tick
        row[STATE] = State.UNCONFIRMED
        row[EPOCH] += 1
        _touch(row, book, operator.index(exch_ts_ms), operator.index(recv_ts_ns))
        self._write_row(slot, row)
        return True

    def resolve(self, token_id: str | bytes, won: bool | None) -> None:
        """Mark a held token's market resolved: state ``RESOLVED`` for good (no frame changes it again).

        ``won``: whether this token is the winning outcome (None: not known). The book is kept.
        KeyError if the token is not held.
        """
        resolve_slot(self, self.slot(token_id), won)

    def resolution(self, token_id: str | bytes) -> bool | None:
        """True/False: the resolved token won/lost; None: not resolved or the winner is unknown.

        KeyError if the token is not held.
        """
        return self._resolved.get(str(self._ids[self.slot(token_id)]))

    def export_token(self, token_id: str | bytes) -> bytes:
        """Return a held token's whole state as a blob for ``restore_token`` (in this store or another, either core).

        The blob (layout in ``pm_ws._token_blob``, versioned) holds the row, both sides' levels, the
        tick flags ``mark_stale`` leaves, the owner and the resolution. KeyError if the token is not held.
        """
        return export_slot(self, self.slot(token_id))

    def restore_token(self, token_id: str | bytes, blob: bytes | bytearray | memoryview) -> None:
        """Give a held token the state ``export_token`` returned: row, levels, flags, owner, resolution.

        Every row field takes the blob's value, SEQ and EPOCH too unless that would move them back:
        they become ``max(blob SEQ, SEQ + 2)`` and ``max(blob EPOCH, EPOCH + 1)``, so a restore into a
        slot behind the source (a new consumer's) gives a byte-identical row. The row is written
        under its sequence lock. The resync queue is left as it is.

        Raises
        ------
        KeyError
            The token is not held.
        ValueError
            The blob is damaged, of another version or of another token; nothing changed.
        """
        restore_slot(self, self.slot(token_id), blob)

    def _lookup(self, token_id: object) -> int | None:
        # An invalid id is simply not held (only add() raises ValueError); not str or bytes: TypeError
        key = _token_key(token_id)
        return None if key is None else self._slots.get(key)

    def _cleared_row(self, slot: int) -> list[int]:
        # An empty row keeping the slot's SEQ and EPOCH: for a slot they never go back
        old = self._read_row(slot)
        row = [0] * N_FIELDS
        row[SEQ] = old[SEQ]
        row[EPOCH] = old[EPOCH]
        return row

    def _read_row(self, slot: int) -> list[int]:
        return list(_ROW.unpack_from(self._buffer, slot * _ROW.size))

    def _write_row(self, slot: int, row: list[int], step: int = SEQ_STEP) -> None:
        # Every change of a row, under its sequence lock: SEQ odd, the fields, SEQ even and ``step``
        # (SEQ_STEP; more for restore_token) higher. Three separate stores in program order (the
        # compiled core adds the release fences a weakly ordered CPU needs; here each store is an
        # opaque C call, ordered on x86)
        offset = slot * _ROW.size
        seq = _WORD.unpack_from(self._buffer, offset + _SEQ_OFFSET)[0]
        _WORD.pack_into(self._buffer, offset + _SEQ_OFFSET, seq + 1)
        row[SEQ] = seq + 1
        _ROW.pack_into(self._buffer, offset, *row)
        row[SEQ] = seq + step
        _WORD.pack_into(self._buffer, offset + _SEQ_OFFSET, seq + step)

    def _queue_resync(self, token_id: str) -> bool:
        # True when the token was not queued yet
        if token_id in self._resync:
            return False
        self._resync[token_id] = None
        return True

    def _drain_resync(self) -> list[str]:
        tokens = list(self._resync)
        self._resync.clear()
        return tokens


# ---------------------------------------------------------------------------------------------
# Frames: control words, owners and market keys (the JSON text: pm_ws._frame_decode_py)


def _int64(value: int, name: str) -> int:
    value = operator.index(value)
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise OverflowError(f"{name} must fit int64, was {value}")
    return value


def _market_key(payload: dict[str, Any]) -> str | None:
    # new_market identity: the value of the first present of these keys (the value alone, not
    # key-qualified); a non-string or overlong value disables dedup
    for key in NEW_MARKET_ID_KEYS:
        if key in payload:
            value = payload[key]
            return value if isinstance(value, str) and len(value) <= SEEN_MARKET_ID_MAX else None
    return None


# ---------------------------------------------------------------------------------------------
# Dispatcher


class Dispatcher:
    """Apply market-channel frames to a :class:`BookStore` and count every outcome.

    Parameters
    ----------
    store : BookStore
        The books and rows to update; only tokens it holds are applied.
    on_event : callable, optional
        ``on_event(event_type, payload)`` receives ``new_market`` (deduplicated) and
        ``market_resolved`` payloads as decoded dicts, and trades when ``emit_trades`` is set.
    emit_trades : bool
        Also hand every applied ``last_trade_price`` to ``on_event`` as a dict of ints.
    max_frame_bytes : int
        Larger frames are counted as ``rej_oversized`` and skipped unread.

    Raises
    ------
    TypeError
        ``store`` is not a BookStore of this implementation.

    Notes
    -----
    An exception raised by ``on_event`` propagates out of ``feed`` and the rest of that frame is
    not applied: keep the callback exception-free (``MarketClient`` wraps its own).
    """

    def __init__(
        self,
        store: BookStore,
        *,
        on_event: Callable[[str, dict[str, Any]], object] | None = None,
        emit_trades: bool = False,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if not isinstance(store, BookStore):
            raise TypeError(f"store must be a pm_ws._core_py.BookStore, was {type(store).__name__}")
        self._store = store
        self._on_event = on_event
        self._emit_trades = bool(emit_trades)
        self._max_frame_bytes = operator.index(max_frame_bytes)
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._owner = 0  # owner of the frame being applied (feed's owner); 0 applies to every token
        self._seen_markets: dict[str, None] = {}  # new_market dedup keys, oldest first
        # One handler per event type of pm_ws._events, named _apply_<event type>
        self._handlers: dict[str, tuple[EventType, Callable[[dict[str, Any], int], int]]] = {
            event_type.name: (event_type, getattr(self, f"_apply_{event_type.name}")) for event_type in EVENTS
        }

    @property
    def store(self) -> BookStore:
        """The BookStore this dispatcher updates."""
        return self._store

    def feed(self, frame: str | bytes | bytearray | memoryview, recv_ts_ns: int = 0, owner: int = 0) -> int:
        """Apply one WebSocket text frame.

        Parameters
        ----------
        frame : str, bytes, bytearray or memoryview
            The frame as received: a control word, a JSON event object or an array of them.
        recv_ts_ns : int
            Receive time (``time.time_ns()`` clock) stored in every row the frame changes.
        owner : int
            The connection the frame arrived on: with owner != 0, events for tokens another owner
            holds change nothing (``skip_foreign``); 0 applies the frame to every token.

        Returns
        -------
        int
            Number of events applied (the increase of ``stats()["events"]``).

        Raises
        ------
        TypeError
            ``frame`` or ``recv_ts_ns`` has the wrong type.
        OverflowError
            ``recv_ts_ns`` or ``owner`` does not fit int64.
        ValueError
            ``owner`` is outside 0 .. ``OWNER_MAX``.
        """
        recv_ts_ns = _int64(recv_ts_ns, "recv_ts_ns")
        owner = _int64(owner, "owner")
        if not 0 <= owner <= OWNER_MAX:
            raise ValueError(f"owner must be 0 .. {OWNER_MAX}, was {owner}")
        data = frame_bytes(frame)
        outer_owner, self._owner = self._owner, owner  # a frame fed from on_event has its own owner
        try:
            return self._apply_frame(data, recv_ts_ns)
        finally:
            self._owner = outer_owner

    def _apply_frame(self, data: bytes, recv_ts_ns: int) -> int:
        stats = self._stats
        stats["frames"] += 1
        stats["bytes"] += len(data)
        if len(data) > self._max_frame_bytes:
            stats["rej_oversized"] += 1
            return 0
        body = data.strip(_JSON_WHITESPACE)
        if not body or body[0] not in _JSON_OPENERS:
            stats[_CONTROL_WORDS.get(body.upper(), "rej_unknown_text")] += 1
            return 0
        document = decode_json(body)
        if document is None:
            stats["rej_invalid_json"] += 1
            return 0
        # Top level is an object or an array: "{" or "[" was its first byte
        events = document if isinstance(document, list) else [document]
        return sum(self._apply_event(event, recv_ts_ns) for event in events)

    def pending_resync(self) -> list[str]:
        """Return and forget the tokens that need a fresh snapshot, each once, oldest first."""
        return self._store._drain_resync()

    def stats(self) -> dict[str, int]:
        """Return a copy of the counters, keyed by ``row.STAT_KEYS`` in that order."""
        return dict(self._stats)

    def _apply_event(self, event: object, recv_ts_ns: int) -> int:
        if not isinstance(event, dict):
            self._stats["rej_bad_event"] += 1
            return 0
        event_type = event.get("event_type")
        handler = self._handlers.get(event_type) if isinstance(event_type, str) else None
        if handler is None:
            self._stats["rej_unknown_event"] += 1
            return 0
        event_type, apply = handler
        if not event_type.hot:
            return apply(event, recv_ts_ns)  # cold events are handed over as decoded, without shape checks
        try:
            fields = decode_event(event, event_type)
        except Rejected as rejected:
            self._stats[rejected.counter] += 1
            return 0
        return apply(fields, recv_ts_ns)

    def _count_event(self, counter: str) -> int:
        self._stats[counter] += 1
        self._stats["events"] += 1
        return 1

    def _skip_unsubscribed(self) -> int:
        self._stats["skip_unsubscribed"] += 1
        return 0

    def _slot(self, token_id: str) -> int | None:
        # The token's slot, or None counted as skip_unsubscribed (nobody holds it) or skip_foreign
        slot = self._store._slots.get(token_id)
        if slot is None:
            self._skip_unsubscribed()
        elif self._foreign(slot):
            return None
        return slot

    def _foreign(self, slot: int) -> bool:
        # The frame's owner is set and the token belongs to another: counted skip_foreign
        if self._owner and self._store._owners[slot] != self._owner:
            self._stats["skip_foreign"] += 1
            return True
        return False

    def _invalidate(self, row: list[int], token_id: str, counter: str) -> None:
        row[STATE] = State.INVALID
        row[MISMATCHES] += 1
        self._stats[counter] += 1
        self._queue_resync(token_id)

    def _queue_resync(self, token_id: str) -> None:
        if self._store._queue_resync(token_id):
            self._stats["resync_queued"] += 1

    def _apply_book(self, fields: dict[str, Any], recv_ts_ns: int) -> int:
        store = self._store
        token_id = fields["asset_id"]
        slot = self._slot(token_id)
        if slot is None:
            return 0
        book = store._books[slot]
        assert book is not None
        if store._read_row(slot)[STATE] == State.RESOLVED:  # final: no book changes it again
            self._stats["skip_not_live"] += 1
            return 0
        book.bids = _wire_order(fields["bids"], _bid_key)
        book.asks = _wire_order(fields["asks"], _ask_key)
        row = store._read_row(slot)
        tick = fields.get("tick_size")
        if tick is not None:
            row[TICK] = tick
            book.books_name_tick = True
            book.tick_unconfirmed = False
        last_trade_price = fields.get("last_trade_price")
        if last_trade_price is not None:
            row[LAST_PX] = last_trade_price
        row[STATE] = State.STALE if book.tick_unconfirmed else State.LIVE
        row[EPOCH] += 1
        _touch(row, book, fields.get("timestamp"), recv_ts_ns)
        flaw = _book_flaw(fields["bids"], fields["asks"], row[TICK])
        if flaw is not None:
            self._invalidate(row, token_id, flaw)
        elif _crossed(row):
            self._invalidate(row, token_id, "crossed_book")
        else:
            row[CONFIRM_TS_NS] = recv_ts_ns  # a snapshot is the server's own top of book
        store._write_row(slot, row)
        return self._count_event("ev_book")

    def _apply_price_change(self, fields: dict[str, Any], recv_ts_ns: int) -> int:
        store = self._store
        slots = store._slots
        changes = fields["price_changes"]
        subscribed = [(slot, change) for change in changes if (slot := slots.get(change["asset_id"])) is not None]
        if not subscribed:
            return self._skip_unsubscribed()
        rows: dict[int, list[int]] = {}  # every subscribed slot named, in order of first appearance
        last_change: dict[int, dict[str, Any]] = {}  # LIVE slots only
        flaws: dict[int, str] = {}  # the flaw of each LIVE slot's first flawed entry
        for slot, change in subscribed:
            row = rows.get(slot)
            if row is None:
                row = rows[slot] = store._read_row(slot)
            if self._foreign(slot):
                continue
            if row[STATE] != State.LIVE and row[STATE] != State.UNCONFIRMED:
                self._stats["skip_not_live"] += 1
                continue
            book = store._books[slot]
            assert book is not None
            bid = change["side"] == SIDE_BUY
            if bid:
                _set_level(book.bids, change["price"], change["size"], _bid_key)
            else:
                _set_level(book.asks, change["price"], change["size"], _ask_key)
            last_change[slot] = change
            if slot not in flaws and (flaw := _level_flaw(change["price"], change["size"], row[TICK], bid)):
                flaws[slot] = flaw
        for slot, change in last_change.items():
            row = rows[slot]
            book = store._books[slot]
            assert book is not None
            _touch(row, book, fields.get("timestamp"), recv_ts_ns)
            best = (change.get("best_bid"), change.get("best_ask"))
            if slot in flaws:
                self._invalidate(row, change["asset_id"], flaws[slot])
            elif None not in best and best != (row[BID_PX], row[ASK_PX]):
                self._invalidate(row, change["asset_id"], "checksum_mismatch")
            elif _crossed(row):
                self._invalidate(row, change["asset_id"], "crossed_book")
            elif None not in best:
                row[CONFIRM_TS_NS] = recv_ts_ns  # the server's best prices match the book
                row[STATE] = State.LIVE  # confirms an UNCONFIRMED (REST) book too
            store._write_row(slot, row)
        return self._count_event("ev_price_change")

    def _apply_last_trade_price(self, fields: dict[str, Any], recv_ts_ns: int) -> int:
        store = self._store
        token_id = fields["asset_id"]
        slot = self._slot(token_id)
        if slot is None:
            return 0
        book = store._books[slot]
        assert book is not None
        row = store._read_row(slot)
        row[LAST_PX] = fields["price"]
        row[LAST_SZ] = fields["size"]
        row[LAST_SIDE] = fields.get("side", 0)
        timestamp = fields.get("timestamp")
        _touch(row, book, timestamp, recv_ts_ns)
        store._write_row(slot, row)
        applied = self._count_event("ev_last_trade_price")
        if self._emit_trades and self._on_event is not None:
            self._on_event(
                "last_trade_price",
                {
                    "asset_id": token_id,
                    "price": row[LAST_PX],
                    "size": row[LAST_SZ],
                    "side": row[LAST_SIDE],
                    "timestamp": timestamp or 0,
                },
            )
        return applied

    def _apply_tick_size_change(self, fields: dict[str, Any], recv_ts_ns: int) -> int:
        store = self._store
        token_id = fields["asset_id"]
        slot = self._slot(token_id)
        if slot is None:
            return 0
        applied = self._count_event("ev_tick_size_change")
        row = store._read_row(slot)
        book = store._books[slot]
        assert book is not None
        book.tick_unconfirmed = False
        tick = fields["new_tick_size"]
        if row[TICK] == tick:
            return applied  # a repeated tick size changes nothing in the row
        row[TICK] = tick
        row[EPOCH] += 1
        _touch(row, book, fields.get("timestamp"), recv_ts_ns)
        # Levels on the old grid may be wrong: wait for a snapshot
        if row[STATE] in (State.LIVE, State.INVALID):
            row[STATE] = State.STALE
            self._queue_resync(token_id)
        store._write_row(slot, row)
        return applied

    def _apply_best_bid_ask(self, fields: dict[str, Any], recv_ts_ns: int) -> int:
        store = self._store
        slot = self._slot(fields["asset_id"])
        if slot is None:
            return 0
        applied = self._count_event("ev_best_bid_ask")
        row = store._read_row(slot)
        # A cross-check of a LIVE or UNCONFIRMED book (best_bid_ask is intermittent and sometimes
        # wrong): a match confirms the top of book, a mismatch is only counted
        if row[STATE] != State.LIVE and row[STATE] != State.UNCONFIRMED:
            return applied
        if (fields["best_bid"], fields["best_ask"]) != (row[BID_PX], row[ASK_PX]):
            self._stats["bba_mismatch"] += 1
        else:
            row[CONFIRM_TS_NS] = row[RECV_TS_NS] = recv_ts_ns
            row[STATE] = State.LIVE  # confirms an UNCONFIRMED (REST) book too
            store._write_row(slot, row)
        return applied

    def _apply_new_market(self, payload: dict[str, Any], recv_ts_ns: int) -> int:
        key = _market_key(payload)
        if key is not None:
            if key in self._seen_markets:
                self._stats["skip_duplicate"] += 1
                return 0
            self._seen_markets[key] = None
            if len(self._seen_markets) > SEEN_MARKETS_MAX:
                del self._seen_markets[next(iter(self._seen_markets))]
        return self._deliver("new_market", payload)

    def _apply_market_resolved(self, payload: dict[str, Any], recv_ts_ns: int) -> int:
        return self._deliver("market_resolved", payload)

    def _deliver(self, event_type: str, payload: dict[str, Any]) -> int:
        # Count a cold event and hand it to on_event
        applied = self._count_event(f"ev_{event_type}")
        if self._on_event is not None:
            self._on_event(event_type, payload)
        return applied
