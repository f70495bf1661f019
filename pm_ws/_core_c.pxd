# C layout of the compiled core: row fields, states, book arrays, parser staging, class fields.
# The row constants mirror pm_ws/row.py; tests/test_compiled.py keeps the two equal.

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

ctypedef const unsigned char* cptr  # a position in a frame's bytes
ctypedef int64_t PxRaw  # price * PRICE_SCALE
ctypedef int64_t SzRaw  # size * SIZE_SCALE

cdef enum:  # equal to pm_ws.row (and _events.MAX_TIMESTAMP_DIGITS); tests/test_events.py keeps them so
    PM_PRICE_SCALE = 10000  # price units per 1.0
    PM_SIZE_SCALE = 1000000  # size units per share
    PM_PRICE_DECIMALS = 4
    PM_SIZE_DECIMALS = 6
    PM_TOKEN_ID_MAX = 100  # longest accepted token id, bytes
    PM_MAX_JSON_DEPTH = 32  # deepest JSON nesting accepted; the top-level container is depth 1
    PM_MAX_TIMESTAMP_DIGITS = 18  # a timestamp is 1..18 digits, so it always fits int64

# Row field indices (one row = PM_N_FIELDS int64 values), equal to pm_ws.row
cdef enum:  # pm_field
    PM_BID_PX = 0  # best bid price, 0 when the bid side is empty
    PM_BID_SZ = 1  # size at the best bid
    PM_ASK_PX = 2  # best ask price, PM_PRICE_SCALE when the ask side is empty
    PM_ASK_SZ = 3  # size at the best ask
    PM_LAST_PX = 4  # last trade price
    PM_LAST_SZ = 5  # last trade size
    PM_LAST_SIDE = 6  # PM_SIDE_BUY, PM_SIDE_SELL or 0
    PM_EXCH_TS_MS = 7  # exchange timestamp of the last event applied, ms
    PM_RECV_TS_NS = 8  # receive time of the frame that last changed the row, ns
    PM_SEQ = 9  # the row's sequence lock: odd while written, +2 per change; never goes back for a slot
    PM_EPOCH = 10  # bumped on every snapshot, mark_stale, tick-size change and add; never goes back
    PM_STATE = 11  # a pm_state value
    PM_TICK = 12  # tick size in price units, 0 until known
    PM_BID_LEVELS = 13  # bid levels in the book
    PM_ASK_LEVELS = 14  # ask levels in the book
    PM_MISMATCHES = 15  # times the book was found untrustworthy (made INVALID)
    PM_TOKEN_TAG = 16  # pm_token_tag() of the slot's token id, 0 when empty
    PM_CONFIRM_TS_NS = 17  # receive time of the server's last confirmation of the top of book, ns
    PM_OUTCOME = 18  # a RESOLVED token's outcome: 1 won, 2 lost, 0 unknown (also while not resolved)
    PM_FIRST_SPARE = 19  # PM_FIRST_SPARE .. PM_N_FIELDS - 1: spare, always 0
    PM_N_FIELDS = 24  # 192 bytes per row, a multiple of 64

cdef enum:  # pm_state
    PM_EMPTY = 0
    PM_SUBSCRIBING = 1
    PM_LIVE = 2
    PM_STALE = 3
    PM_INVALID = 4
    PM_RESOLVED = 5  # final: the market resolved
    PM_UNCONFIRMED = 6  # loaded by load_book, LIVE once the WebSocket's best prices match

# The event vocabulary as C enums, generated from pm_ws._events by pm_ws/_events_codegen.py:
# pm_kind (EV_*, the hot event types first, then from EV_FIRST_COLD the cold ones), pm_key (K_*,
# the array keys last from K_FIRST_ARRAY; a key's bit in pm_fields_t is 1 << key), pm_array (A_*),
# pm_stat (ST_*, in STAT_KEYS order), pm_value (V_*)
include "_hot/events_enums.pxi"

cdef enum:  # pm_side
    PM_SIDE_NONE = 0
    PM_SIDE_BUY = 1
    PM_SIDE_SELL = 2

cdef enum:  # pm_guess: strings whose length the fast path expects to repeat
    GUESS_MARKET
    GUESS_ASSET
    GUESS_HASH
    GUESS_SHORT  # fee_rate_bps, spread: too short for the guess to matter
    GUESS_COUNT

ctypedef struct pm_level_t:
    PxRaw px
    SzRaw sz

ctypedef struct pm_side_t:  # one side of a book, sorted worst -> best like the wire
    pm_level_t* lv
    Py_ssize_t n
    Py_ssize_t cap

ctypedef struct pm_book_t:
    pm_side_t bids  # ascending price, best bid last
    pm_side_t asks  # descending price, best ask last
    bint books_name_tick  # a book for this token carried tick_size (a server that sends it)
    bint tick_unconfirmed  # marked STALE since: only a book naming the tick turns it LIVE

ctypedef struct pm_token_t:  # the id bytes held by one slot
    uint64_t hash
    Py_ssize_t n
    char id[PM_TOKEN_ID_MAX]

ctypedef struct pm_fields_t:  # recognised keys of one JSON object, last occurrence wins
    uint32_t has  # key present with the right JSON type
    uint32_t bad_shape  # key present with a wrong type or a value outside its set
    uint32_t bad_num  # key's string is not a valid number of its kind
    int64_t val[K_COUNT]  # parsed number, pm_kind for K_EVENT_TYPE, pm_side for K_SIDE
    Py_ssize_t off[A_COUNT]  # first staged level/entry of each array key, indexed by its pm_array
    Py_ssize_t cnt[A_COUNT]  # how many
    uint32_t sorted_levels  # bit A_BIDS / A_ASKS: every level of that array came in one fast run, strictly
                            # worst -> best and none of size 0 (no duplicate price, no sorting, nothing to drop)
    const char* asset  # asset_id bytes after unescaping (in the frame or the arena)
    Py_ssize_t asset_n
    uint64_t asset_hash

ctypedef struct pm_entry_t:  # one staged price_changes[] entry
    const char* asset
    Py_ssize_t asset_n
    uint64_t asset_hash
    PxRaw px
    SzRaw sz
    PxRaw best_bid  # -1 when absent
    PxRaw best_ask  # -1 when absent
    int side  # pm_side

ctypedef struct pm_event_t:  # one staged event object
    pm_fields_t f
    cptr span_start  # the object's bytes in the frame (cold events decode them)
    cptr span_end
    bint is_object  # False: an array element that is not an object

ctypedef struct pm_stage_t:  # reusable per-frame buffers of the scanner, never shrunk
    cptr end  # end of the frame's JSON text
    int nomem  # an allocation failed while staging
    pm_event_t* ev
    Py_ssize_t ev_n
    Py_ssize_t ev_cap
    pm_level_t* lv
    Py_ssize_t lv_n
    Py_ssize_t lv_cap
    pm_entry_t* pc
    Py_ssize_t pc_n
    Py_ssize_t pc_cap
    char* arena  # unescaped strings that must outlive their scan (asset ids, numbers)
    Py_ssize_t arena_n
    Py_ssize_t arena_cap
    Py_ssize_t frame_n  # bytes in the current frame: a bound for all unescaped text
    PxRaw* tmp  # scratch for duplicate-price checks
    Py_ssize_t tmp_cap
    Py_ssize_t guess[GUESS_COUNT]  # last length of market, asset_id and hash strings (fast path)


@cython.final
cdef class BookStore:
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _count  # tokens held
    cdef int64_t* _rows  # _capacity * PM_N_FIELDS (private, or in the segment), exported by view, never moved
    cdef Py_ssize_t _shape[2]
    cdef Py_ssize_t _strides[2]
    cdef pm_book_t* _books  # one per slot
    cdef pm_token_t* _ids  # one per slot
    cdef int32_t* _table  # open addressing over token hashes: slot or -1
    cdef int32_t* _owners  # per slot: the owner given to add/set_owner, 0 for none
    cdef Py_ssize_t _mask  # table size - 1 (a power of two)
    cdef list _names  # str id per slot, None when free
    cdef object _segment  # the pm_ws.shared.Segment the rows live in, None for a private store
    cdef Py_buffer _shm  # the segment's mapping, held while _segment is set
    cdef int64_t* _header  # the segment's header words, NULL for a private store
    cdef char* _dir  # the segment's token directory, NULL for a private store
    cdef dict _resync  # token ids awaiting a fresh snapshot, first-queued first (values unused)
    cdef dict _resolved  # resolved token ids -> won (True/False, None: unknown)

    cdef int32_t lookup(self, const char* p, Py_ssize_t n, uint64_t h) noexcept
    cdef int32_t _slot_of(self, object token_id) except -2
    cdef void _free_slot(self, int32_t slot) noexcept


@cython.final
cdef class Dispatcher:
    cdef readonly BookStore store
    cdef object _on_event
    cdef bint _emit_trades
    cdef Py_ssize_t _max_frame_bytes
    cdef int64_t _stats[ST_COUNT]
    cdef int32_t _owner  # owner of the frame being applied (feed's owner); 0 applies to every token
    cdef pm_stage_t _st  # staging of a frame fed from outside
    cdef pm_stage_t* _cur  # staging whose events are being applied; NULL between frames
    cdef int32_t* _mark  # per slot: index in _touched during one price_change, else -1
    cdef int32_t* _touched  # slots touched by the current price_change, first-seen order
    cdef Py_ssize_t* _last_entry  # per touched slot: its last entry in the event
    cdef int* _flaw  # per touched slot: ST_OFF_GRID or ST_IMPOSSIBLE_BOOK of its first flawed entry, else 0
    cdef dict _seen_markets  # new_market dedup keys, oldest first (at most SEEN_MARKETS_MAX)

    cdef Py_ssize_t _feed_c(self, cptr data, Py_ssize_t n, int64_t recv_ts_ns, int32_t owner) except -1
    cdef Py_ssize_t _scan_apply(self, pm_stage_t* st, cptr b, cptr e, int64_t recv_ts_ns, int32_t owner) except -1
    cdef Py_ssize_t _apply_all(self, int64_t recv_ts_ns) except -1
    cdef int32_t _slot(self, const pm_fields_t* f) noexcept
    cdef bint _foreign(self, int32_t slot) noexcept
    cdef void _count(self, int stat) noexcept
    cdef int _apply_cold(self, pm_event_t* e, int kind) except -1
    cdef int _invalidated(self, int32_t slot, int stat) except -1
    cdef int _queue_resync(self, int32_t slot) except -1
