# cython: language_level=3
"""Compiled core of pm_ws: exact number parsing, the frame dispatcher, L2 books and top-of-book rows.

One pass over a frame's bytes validates the whole JSON text (RFC 8259, depth <= 32) and stages
every recognised field into reusable C buffers; only then are the staged events applied, so a
frame that is not valid JSON changes nothing. Members in the server's usual order and spelling
take a fast path that checks each key as it goes and hands the rest of an object to the generic
scanner on the first surprise. Behaviour is the contract stated by the pure
twin ``_core_py`` (its docstring and the shared tests); the C layout lives in ``_core_c.pxd``.

The hot path's sections are included from ``_hot/`` (numbers, scanner, staging, fastpath,
book_side, validate, and ``dispatch_hot``: one handler per hot event type); so are BookStore's
cold parts (``store_slots``: slot memory, add and remove; ``store_shared``: the shared-memory
segment; ``store_transfer``: REST snapshots, resolutions, a token's export and restore),
Dispatcher's (``dispatch_cold``: scratch memory, the cold events new_market and market_resolved,
the resync queue and counters) and the tables the tests compare (``compiled_tables``). The event
vocabulary's part is generated from ``pm_ws._events`` by ``pm_ws/_events_codegen.py``: the enums
in ``pm_events.h`` and ``events_tables`` (the scanner's key and event-name matchers, key masks,
the dispatch switch ``apply_hot``).

Compiler directives that depend on the build mode (bounds and wraparound checks, C division)
are set by setup.py, so a ``PM_WS_CYTHON_DEBUG=1`` build really turns the checks back on.
"""

cimport cython
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_1BYTE_DATA, PyUnicode_Check, PyUnicode_CheckExact, PyUnicode_GET_LENGTH
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcmp, memcpy, memmove, memset

from pm_ws._shared_layout cimport DIR_ENTRY_BYTES, E_ID, E_LENGTH, E_SEQ, E_TAG, H_HEARTBEAT_NS
import operator

import orjson

from pm_ws._events import NEW_MARKET_ID_KEYS, STAT_KEYS
from pm_ws._rest_levels import wire_levels
from pm_ws._token_blob import TokenState, decode_token, encode_token, restored_counters
from pm_ws.errors import capacity_error, parse_error, token_id_type_error, token_ids_type_error
from pm_ws.row import (DEFAULT_MAX_FRAME_BYTES, OWNER_MAX, SEEN_MARKET_ID_MAX, SEEN_MARKETS_MAX, TOKEN_ID_EXPECTED, Top,
                       check_owner)

__all__ = ["parse_price", "parse_size", "price_to_cents", "BookStore", "Dispatcher"]

cdef extern from "pm_bytes.h":  # _hot/pm_bytes.h: byte scanning, token-id compare and hash
    const unsigned char* pm_skip_plain(const unsigned char* p, const unsigned char* e) noexcept nogil
    bint pm_plain_span(const unsigned char* p, Py_ssize_t n) noexcept nogil
    uint64_t pm_hash(const unsigned char* p, Py_ssize_t n) noexcept nogil
    bint pm_same_bytes(const unsigned char* a, const unsigned char* b, Py_ssize_t n) noexcept nogil
    int64_t pm_token_tag(const unsigned char* p, Py_ssize_t n) noexcept nogil

cdef extern from "pm_seqlock.h":  # _hot/pm_seqlock.h: the per-row sequence lock (memory-ordering notes there)
    int64_t pm_row_open(int64_t* seq) noexcept nogil
    void pm_row_close(int64_t* seq, int64_t s) noexcept nogil
    void pm_store_release(int64_t* word, int64_t value) noexcept nogil
    int64_t pm_monotonic_ns() noexcept nogil

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)


include "_hot/numbers.pxi"
include "_hot/scanner.pxi"
include "_hot/events_tables.pxi"
include "_hot/staging.pxi"
include "_hot/fastpath.pxi"
include "_hot/book_side.pxi"
include "_hot/validate.pxi"
include "_hot/store_slots.pxi"
include "_hot/store_shared.pxi"
include "_hot/store_transfer.pxi"
include "_hot/dispatch_hot.pxi"
include "_hot/dispatch_cold.pxi"

# ---------------------------------------------------------------------------------------------
# BookStore

@cython.final
@cython.auto_pickle(False)
cdef class BookStore:
    """Order books and top-of-book rows for up to ``capacity`` tokens.

    Parameters
    ----------
    capacity : int
        Number of token slots; fixed for the store's life.
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
        ``capacity`` is below 1 (or above 2**28), or ``shared`` is not a valid name.
    pm_ws.shared.SharedTableError
        ``shared`` names a table whose writer is alive, or something that is not a pm_ws table.
    """

    def __cinit__(self, Py_ssize_t capacity=1024, shared=None):
        if capacity < 1 or capacity > (1 << 28):
            raise ValueError(f"capacity must be at least 1 (and at most {1 << 28}), was {capacity}")
        self._capacity = capacity
        if shared is None:
            self._rows = <int64_t*>PyMem_Calloc(capacity * PM_N_FIELDS, sizeof(int64_t))
        else:
            attach_segment(self, shared)
        allocate_slots(self)
        self._shape[0] = capacity
        self._shape[1] = PM_N_FIELDS
        self._strides[0] = PM_N_FIELDS * sizeof(int64_t)
        self._strides[1] = sizeof(int64_t)
        self._names = [None] * capacity
        self._resync = {}
        self._resolved = {}

    def __dealloc__(self):
        free_slots(self)

    def __getbuffer__(self, Py_buffer* buf, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("BookStore.view is read-only")
        buf.buf = self._rows
        buf.obj = self
        buf.len = self._capacity * PM_N_FIELDS * sizeof(int64_t)
        buf.readonly = 1
        buf.itemsize = sizeof(int64_t)
        buf.format = NULL
        if flags & PyBUF_FORMAT:
            buf.format = b"q"
        buf.ndim = 2
        buf.shape = self._shape if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buf.strides = self._strides if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer* buf):
        pass

    @property
    def capacity(self):
        """Number of token slots."""
        return self._capacity

    @property
    def shared(self):
        """The name of the shared table the rows live in, None for a private store."""
        return None if self._segment is None else self._segment.name

    def beat(self):
        """Tell readers of the shared table that the writer is alive (a no-op for a private store).

        Readers treat every row as STALE once the last beat is older than the table's deadline
        (``pm_ws.shared.DEFAULT_DEADLINE_NS``, 1 s): beat at least every few hundred ms.
        """
        if self._header != NULL:
            pm_store_release(&self._header[H_HEARTBEAT_NS], pm_monotonic_ns())

    def close_shared(self):
        """Withdraw the shared table: readers see every row STALE, the name is unlinked.

        The store goes on working in this process (its rows stay mapped); a no-op when private.
        Also run at a clean interpreter exit.
        """
        if self._segment is not None:
            self._segment.close()

    @property
    def view(self):
        """Read-only ``memoryview`` of all rows: format ``"q"``, shape ``(capacity, N_FIELDS)``.

        Index it as ``view[slot, FIELD]``; ``numpy.asarray(view)`` gives an int64 array without
        copying. The buffer is the same for the store's whole life.

        .. warning:: values change under the reader whenever a frame is applied; read ``SEQ``
           before and after a multi-field read to detect a concurrent update.
        """
        return memoryview(self)

    cdef int32_t lookup(self, const char* p, Py_ssize_t n, uint64_t h) noexcept:
        # Slot of the id p[:n] with hash h, or -1; never allocates
        cdef Py_ssize_t i
        cdef int32_t slot
        cdef pm_token_t* t
        if n < 1 or n > PM_TOKEN_ID_MAX:
            return -1
        i = <Py_ssize_t>(h & <uint64_t>self._mask)
        while True:
            slot = self._table[i]
            if slot < 0:
                return -1
            t = &self._ids[slot]
            if t.hash == h and t.n == n and pm_same_bytes(<cptr>t.id, <cptr>p, n):
                return slot
            i = (i + 1) & self._mask

    cdef int32_t _slot_of(self, object token_id) except -2:
        # Slot of a held id, -1 for any other str/bytes; TypeError for anything else
        cdef cptr p
        cdef Py_ssize_t n
        if not token_view(token_id, &p, &n):
            return -1
        return self.lookup(<const char*>p, n, pm_hash(p, n))

    def add(self, token_id, owner=0):
        """Hold a token: give it the lowest free slot and a fresh row (SUBSCRIBING, its TOKEN_TAG).

        In a slot used before, SEQ and EPOCH continue from its previous token, each bumped: they
        never go back, so a reader that cached the slot sees them move on (and TOKEN_TAG change).

        Parameters
        ----------
        token_id : str or bytes
            1..100 ASCII characters of ``[0-9A-Za-z_.:-]``.
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
            The id is not str or bytes.
        ValueError
            The id is not a valid token id.
        CapacityError
            Every slot is taken (the message names the token and the capacity).
        """
        cdef cptr p
        cdef Py_ssize_t n
        cdef int32_t slot
        cdef uint64_t h
        cdef int32_t new_owner = check_owner(owner)
        if not (token_view(token_id, &p, &n) and valid_token(p, n)):
            raise ValueError(f"invalid token id {token_id!r:.60}: {TOKEN_ID_EXPECTED}")
        h = pm_hash(p, n)
        slot = self.lookup(<const char*>p, n, h)
        if slot >= 0:
            return slot
        if self._count >= self._capacity:
            raise capacity_error(id_text(p, n), self._capacity)
        return claim_slot(self, p, n, h, new_owner)

    cdef void _free_slot(self, int32_t slot) noexcept:
        release_slot(self, slot)

    def remove(self, token_id):
        """Stop holding a token: free its slot and book, zero its row but SEQ (bumped) and EPOCH.

        Unknown ids are ignored.

        Parameters
        ----------
        token_id : str or bytes
            The token to drop.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot >= 0:
            self._free_slot(slot)
            self._resync.pop(self._names[slot], None)  # a removed token leaves the resync queue
            self._resolved.pop(self._names[slot], None)
            self._names[slot] = None

    def set_owner(self, token_id, owner):
        """Give a held token to another owner (0 .. ``OWNER_MAX``; 0 = none); its row is unchanged.

        Raises
        ------
        KeyError
            The token is not held.
        """
        cdef int32_t new_owner = check_owner(owner)
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        self._owners[slot] = new_owner

    def owner(self, token_id):
        """Return a held token's owner (0 = none); KeyError if the token is not held."""
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        return self._owners[slot]

    def slot(self, token_id):
        """Return the slot (row index in ``view``) of a held token.

        Raises
        ------
        KeyError
            The token is not held.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        return slot

    def __contains__(self, token_id):
        # Anything that is not str or bytes is simply not held (no TypeError, as for a set)
        return isinstance(token_id, (str, bytes)) and self._slot_of(token_id) >= 0

    def __len__(self):
        return self._count

    def tokens(self):
        """Return the held token ids, in slot order."""
        return [name for name in self._names if name is not None]

    def top(self, token_id):
        """Return a held token's row as a :class:`pm_ws.row.Top`.

        Raises
        ------
        KeyError
            The token is not held.
        """
        cdef int32_t slot = self._slot_of(token_id)
        cdef int64_t* row
        cdef Py_ssize_t i
        if slot < 0:
            raise KeyError(token_id)
        row = self._rows + slot * PM_N_FIELDS
        return Top.from_row([row[i] for i in range(PM_N_FIELDS)])

    def book(self, token_id, depth=10):
        """Return a held token's levels, best first.

        Parameters
        ----------
        token_id : str or bytes
            The token.
        depth : int or None
            At most this many levels per side; None for all.

        Returns
        -------
        tuple of (list of (int, int), list of (int, int))
            ``(bids, asks)``, each a list of ``(price, size)`` in pm_ws units, best level first.

        Raises
        ------
        KeyError
            The token is not held.
        ValueError
            ``depth`` is negative.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        cdef Py_ssize_t limit = -1 if depth is None else depth
        if limit < 0 and depth is not None:
            raise ValueError(f"depth must be None or at least 0, was {depth}")
        return (side_list(&self._books[slot].bids, limit), side_list(&self._books[slot].asks, limit))

    def mark_stale(self, token_ids):
        """Mark held tokens STALE (after a disconnect): bump EPOCH and SEQ, keep the levels and TICK.

        A tick change may have been missed meanwhile: a token whose books have carried ``tick_size``
        turns LIVE again only on a ``book`` that carries it (a snapshot), not on a post-trade refresh
        without one (that refresh still replaces the levels, the row stays STALE); a
        ``tick_size_change`` confirms the tick, and the next book of any kind turns it LIVE.

        Parameters
        ----------
        token_ids : iterable of str or bytes
            Tokens to mark; ids not held are ignored.

        Raises
        ------
        TypeError
            Before any row changes: ``token_ids`` is a single str or bytes, or holds an id that is not.
        """
        cdef int32_t slot
        cdef int64_t* row
        cdef int64_t seq
        if isinstance(token_ids, (str, bytes, bytearray)):  # would mark its characters
            raise token_ids_type_error(token_ids)
        cdef list slots = [self._slot_of(token_id) for token_id in token_ids]  # every id checked before any row changes
        for slot in slots:
            if slot >= 0:
                row = self._rows + slot * PM_N_FIELDS
                if row[PM_STATE] == PM_RESOLVED:
                    continue  # final
                seq = pm_row_open(&row[PM_SEQ])
                row[PM_STATE] = PM_STALE
                row[PM_EPOCH] += 1
                pm_row_close(&row[PM_SEQ], seq)
                self._books[slot].tick_unconfirmed = self._books[slot].books_name_tick

    def load_book(self, token_id, bids, asks, tick, exch_ts_ms, recv_ts_ns):
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
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        return load_slot_book(self, slot, bids, asks, tick, exch_ts_ms, recv_ts_ns)

    def resolve(self, token_id, won):
        """Mark a held token's market resolved: state ``RESOLVED`` for good (no frame changes it again).

        ``won``: whether this token is the winning outcome (None: not known). The book is kept.
        KeyError if the token is not held.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        resolve_slot(self, slot, won)

    def resolution(self, token_id):
        """True/False: the resolved token won/lost; None: not resolved or the winner is unknown.

        KeyError if the token is not held.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        return self._resolved.get(self._names[slot])

    def export_token(self, token_id):
        """Return a held token's whole state as a blob for ``restore_token`` (in this store or another, either core).

        The blob (layout in ``pm_ws._token_blob``, versioned) holds the row, both sides' levels, the
        tick flags ``mark_stale`` leaves, the owner and the resolution. KeyError if the token is not held.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        return export_slot(self, slot)

    def restore_token(self, token_id, blob):
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
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        restore_slot(self, slot, blob)



cdef inline void invalidate_row(int64_t* row) noexcept:
    # The book can no longer be trusted (inside the row's write): INVALID, one more mismatch
    row[PM_STATE] = PM_INVALID
    row[PM_MISMATCHES] += 1


cdef list side_list(const pm_side_t* side, Py_ssize_t limit):
    cdef Py_ssize_t i, n = side.n
    if 0 <= limit < n:
        n = limit
    return [(side.lv[side.n - 1 - i].px, side.lv[side.n - 1 - i].sz) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Dispatcher

@cython.final
@cython.auto_pickle(False)
cdef class Dispatcher:
    """Apply market-channel frames to a :class:`BookStore` and count what happened.

    Parameters
    ----------
    store : BookStore
        The books and rows to update.
    on_event : callable or None
        Called as ``on_event(event_type, payload)`` for ``new_market`` (deduplicated) and
        ``market_resolved`` events, and for trades when ``emit_trades`` is set.
    emit_trades : bool
        Also hand every applied ``last_trade_price`` to ``on_event``.
    max_frame_bytes : int
        Frames longer than this are rejected unread.

    Notes
    -----
    ``on_event`` runs in the middle of a frame, after the events before it were applied. It may
    feed this dispatcher again (that frame is staged apart and applied at once) or change the
    store; the rest of the outer frame then applies to the store as it finds it. An exception
    raised by ``on_event`` propagates out of ``feed`` and the rest of that frame is not applied:
    keep the callback exception-free (``MarketClient`` wraps its own and counts failures).
    """

    def __cinit__(self, BookStore store not None, *, on_event=None, bint emit_trades=False,
                  Py_ssize_t max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
        dispatcher_alloc(self, store, on_event, emit_trades, max_frame_bytes)

    def __dealloc__(self):
        dispatcher_free(self)

    @cython.binding(False)  # a method descriptor: ~5 ns less per call than a cyfunction
    @cython.embedsignature.format("clinic")  # keeps inspect.signature() working
    def feed(self, frame, int64_t recv_ts_ns=0, int64_t owner=0):
        """Apply one WebSocket text frame.

        Parameters
        ----------
        frame : str, bytes, bytearray or memoryview
            The frame as received; an ASCII ``str`` is read in place.
        recv_ts_ns : int
            Receive time (``time.time_ns()``) stamped into every row the frame changes.
        owner : int
            The connection the frame arrived on: with owner != 0, events for tokens another owner
            holds change nothing (``skip_foreign``); 0 applies the frame to every token.

        Returns
        -------
        int
            Number of events applied (the ``ev_*`` counters this frame incremented).

        Raises
        ------
        TypeError
            ``frame`` has another type.
        ValueError
            ``owner`` is outside 0 .. ``OWNER_MAX``.
        """
        if owner < 0 or owner > OWNER_MAX:
            raise ValueError(f"owner must be 0 .. {OWNER_MAX}, was {owner}")
        if PyUnicode_CheckExact(frame) and PyUnicode_IS_COMPACT_ASCII(frame):
            return self._feed_c(<cptr>PyUnicode_1BYTE_DATA(frame), PyUnicode_GET_LENGTH(frame), recv_ts_ns,
                                <int32_t>owner)
        if not PyBytes_CheckExact(frame):
            if isinstance(frame, str):
                frame = (<str>frame).encode("utf-8", "surrogatepass")  # lone surrogates fail validation
            elif isinstance(frame, (bytes, bytearray, memoryview)):
                # a copy: an on_event callback may write into a mutable buffer mid-frame
                frame = bytes(frame)
            else:
                raise TypeError(f"a frame must be str, bytes, bytearray or memoryview, was {type(frame).__name__}")
        return self._feed_c(<cptr>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), recv_ts_ns, <int32_t>owner)

    cdef Py_ssize_t _feed_c(self, cptr data, Py_ssize_t n, int64_t recv_ts_ns, int32_t owner) except -1:
        cdef cptr b = data, e = data + n
        cdef pm_stage_t nested
        self._stats[ST_FRAMES] += 1
        self._stats[ST_BYTES] += n
        if n > self._max_frame_bytes:
            self._stats[ST_REJ_OVERSIZED] += 1
            return 0
        b = skip_ws(b, e)
        while e > b and (e - 1)[0] in b" \t\n\r":
            e -= 1
        if b < e and (b[0] == c'{' or b[0] == c'['):
            if self._cur == NULL:
                return self._scan_apply(&self._st, b, e, recv_ts_ns, owner)
            # on_event fed a frame while another is being applied: stage it apart, the outer
            # frame's staged events are not applied yet
            memset(&nested, 0, sizeof(pm_stage_t))
            try:
                return self._scan_apply(&nested, b, e, recv_ts_ns, owner)
            finally:
                free_stage(&nested)
        self._stats[control_word(b, e - b)] += 1
        return 0

    cdef Py_ssize_t _scan_apply(self, pm_stage_t* st, cptr b, cptr e, int64_t recv_ts_ns, int32_t owner) except -1:
        cdef int r = scan_frame(st, b, e)
        cdef pm_stage_t* outer = self._cur
        cdef int32_t outer_owner = self._owner
        if r < 0:
            raise MemoryError()
        if r == 0:
            self._stats[ST_REJ_INVALID_JSON] += 1
            return 0
        self._cur = st
        self._owner = owner
        try:
            return self._apply_all(recv_ts_ns)
        finally:
            self._cur = outer
            self._owner = outer_owner

    cdef Py_ssize_t _apply_all(self, int64_t recv_ts_ns) except -1:
        cdef Py_ssize_t i, applied = 0
        cdef pm_event_t* e
        cdef int kind, status
        cdef pm_stage_t* st = self._cur
        for i in range(st.ev_n):
            e = &st.ev[i]
            if not e.is_object:
                self._stats[ST_REJ_BAD_EVENT] += 1
                continue
            kind = <int>e.f.val[K_EVENT_TYPE] if e.f.has & (1 << K_EVENT_TYPE) else EV_UNKNOWN
            if kind == EV_UNKNOWN:
                self._stats[ST_REJ_UNKNOWN_EVENT] += 1
                continue
            if kind >= EV_FIRST_COLD:  # decoded whole from its bytes: no staged keys to check
                applied += self._apply_cold(e, kind)
                continue
            status = validate_event(st, &e.f, kind)
            if status < 0:
                raise MemoryError()
            if status == S_BAD_SHAPE:
                self._stats[ST_REJ_BAD_EVENT] += 1
            elif status == S_BAD_NUMBER:
                self._stats[ST_REJ_BAD_NUMBER] += 1
            else:
                applied += apply_hot(self, e, kind, recv_ts_ns)
        return applied

    cdef int32_t _slot(self, const pm_fields_t* f) noexcept:
        # Slot of the event's asset_id, or -1 counted as skip_unsubscribed (nobody holds it) or
        # skip_foreign (another owner does)
        cdef int32_t slot = self.store.lookup(f.asset, f.asset_n, f.asset_hash)
        if slot < 0:
            self._stats[ST_SKIP_UNSUBSCRIBED] += 1
        elif self._foreign(slot):
            return -1
        return slot

    cdef bint _foreign(self, int32_t slot) noexcept:
        # The frame's owner is set and the token belongs to another: counted skip_foreign
        if self._owner and self.store._owners[slot] != self._owner:
            self._stats[ST_SKIP_FOREIGN] += 1
            return True
        return False

    cdef void _count(self, int stat) noexcept:
        self._stats[stat] += 1
        self._stats[ST_EVENTS] += 1

    cdef int _apply_cold(self, pm_event_t* e, int kind) except -1:
        return apply_cold(self, e, kind)

    cdef int _invalidated(self, int32_t slot, int stat) except -1:
        # After invalidate_row, outside the row's write (this may raise): counted under stat, resync queued
        self._stats[stat] += 1
        return self._queue_resync(slot)

    cdef int _queue_resync(self, int32_t slot) except -1:
        # The queue lives in the store (remove() takes a token out); a queued token is not re-counted
        cdef dict queue = self.store._resync
        token = self.store._names[slot]
        if token not in queue:
            queue[token] = None
            self._stats[ST_RESYNC_QUEUED] += 1
        return 0

    def pending_resync(self):
        """Return and forget the tokens that need a fresh snapshot, each once, first-queued first.

        Tokens removed from the store since they were queued are left out.

        Returns
        -------
        list of str
            Token ids to resubscribe.
        """
        return take_resync(self.store)

    def stats(self):
        """Return every counter (the keys of ``pm_ws.row.STAT_KEYS``) as a new dict."""
        return stats_dict(self._stats)


include "_hot/compiled_tables.pxi"

if len(STAT_KEYS) != ST_COUNT:
    raise ImportError("pm_ws._core_c: pm_stat (_hot/pm_events.h) no longer matches pm_ws._events.STAT_KEYS: rebuild")
