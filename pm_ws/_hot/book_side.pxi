# Book sides: sorted C arrays, worst -> best (bids ascending, asks descending), and the row
# stamp computed from them. Included by _core_c.pyx.

cdef enum:
    NEAR_BEST = 8  # levels side_set walks from the best before searching by halves


cdef int cmp_px_asc(const void* a, const void* b) noexcept nogil:
    cdef PxRaw x = (<const pm_level_t*>a).px, y = (<const pm_level_t*>b).px
    return (x > y) - (x < y)


cdef int cmp_px_desc(const void* a, const void* b) noexcept nogil:
    cdef PxRaw x = (<const pm_level_t*>a).px, y = (<const pm_level_t*>b).px
    return (x < y) - (x > y)


cdef int cmp_i64(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0], y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


cdef inline bint worse(PxRaw a, PxRaw b, bint bids) noexcept:
    # a comes before b in the side's worst -> best order
    return a < b if bids else a > b


cdef int side_reserve(pm_side_t* side, Py_ssize_t n) noexcept:
    cdef pm_level_t* q
    cdef Py_ssize_t cap
    if n <= side.cap:
        return 0
    cap = side.cap * 2 if side.cap * 2 >= n else n
    if cap < 8:
        cap = 8
    q = <pm_level_t*>PyMem_Realloc(side.lv, cap * sizeof(pm_level_t))
    if q == NULL:
        return -1
    side.lv = q
    side.cap = cap
    return 0


cdef int side_load(pm_side_t* side, const pm_level_t* src, Py_ssize_t n, bint bids) noexcept:
    # Replace the side by a snapshot: drop size-0 levels, sort only if the wire order is broken
    cdef Py_ssize_t i, m = 0
    cdef bint ordered = True
    cdef pm_level_t* dst
    if side_reserve(side, n) < 0:
        return -1
    dst = side.lv
    for i in range(n):
        if src[i].sz == 0:
            continue
        if m and not worse(dst[m - 1].px, src[i].px, bids):
            ordered = False
        dst[m] = src[i]
        m += 1
    side.n = m
    if not ordered:
        qsort(dst, m, sizeof(pm_level_t), cmp_px_asc if bids else cmp_px_desc)
    return 0


cdef int side_snapshot(pm_side_t* side, const pm_level_t* src, Py_ssize_t n, bint bids, bint sorted) noexcept:
    # side_load, or a plain copy of levels already sorted worst -> best with none of size 0
    # (pm_fields_t.sorted_levels)
    if not sorted:
        return side_load(side, src, n, bids)
    if side_reserve(side, n) < 0:
        return -1
    memcpy(side.lv, src, n * sizeof(pm_level_t))
    side.n = n
    return 0


cdef int side_set(pm_side_t* side, PxRaw px, SzRaw sz, bint bids) noexcept:
    # Set the absolute size at px (0 deletes). Most deltas land a few levels from the best, at
    # the tail: walk back from it a few steps, and search by halves only past them
    cdef Py_ssize_t n = side.n, lo, hi, mid
    cdef Py_ssize_t j = n - 1
    cdef Py_ssize_t stop = n - 1 - NEAR_BEST if n - 1 > NEAR_BEST else -1
    cdef pm_level_t* lv = side.lv
    while j > stop and worse(px, lv[j].px, bids):  # lv[j] is better than px
        j -= 1
    if j == stop and stop >= 0:  # worse than the NEAR_BEST best levels
        lo = 0
        hi = j + 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if worse(lv[mid].px, px, bids):
                lo = mid + 1
            else:
                hi = mid
    else:
        lo = j if j >= 0 and lv[j].px == px else j + 1
    if lo < n and lv[lo].px == px:
        if sz:
            lv[lo].sz = sz
        else:
            memmove(&lv[lo], &lv[lo + 1], (n - lo - 1) * sizeof(pm_level_t))
            side.n = n - 1
        return 0
    if sz == 0:
        return 0
    if side_reserve(side, n + 1) < 0:
        return -1
    lv = side.lv
    memmove(&lv[lo + 1], &lv[lo], (n - lo) * sizeof(pm_level_t))
    lv[lo].px = px
    lv[lo].sz = sz
    side.n = n + 1
    return 0


cdef inline PxRaw best_bid_px(const pm_book_t* b) noexcept:
    return b.bids.lv[b.bids.n - 1].px if b.bids.n else 0


cdef inline PxRaw best_ask_px(const pm_book_t* b) noexcept:
    return b.asks.lv[b.asks.n - 1].px if b.asks.n else PM_PRICE_SCALE


cdef inline bint is_crossed(const pm_book_t* b) noexcept:
    return b.bids.n > 0 and b.asks.n > 0 and best_bid_px(b) >= best_ask_px(b)


cdef inline uint64_t grid_magic(PxRaw tick) noexcept:
    # The multiplier grid_flaw tests prices against the grid of tick with; 0 when every price is
    # on it (no tick known, or tick 1)
    return (~<uint64_t>0) // <uint64_t>tick + 1 if tick > 1 else 0


cdef inline int grid_flaw(PxRaw px, SzRaw sz, uint64_t magic, bint bid) noexcept:
    # level_flaw for a valid price (0..PM_PRICE_SCALE) with the tick as grid_magic(tick): px is a
    # multiple of tick exactly when px * magic, modulo 2**64, is below magic (Lemire, Kaser and
    # Kurz, "Faster remainder by direct computation", 2019): a multiply per level, not a division
    if magic and <uint64_t>px * magic > magic - 1:
        return ST_OFF_GRID
    if sz and (px >= PM_PRICE_SCALE if bid else px == 0):
        return ST_IMPOSSIBLE_BOOK
    return 0


cdef inline int level_flaw(PxRaw px, SzRaw sz, PxRaw tick, bint bid) noexcept:
    # ST_OFF_GRID for a price off the known tick grid (tick > 0, any size), ST_IMPOSSIBLE_BOOK for
    # a bid at 1 or an ask at 0 with size, else 0
    return grid_flaw(px, sz, grid_magic(tick), bid)


cdef int book_flaw(const pm_level_t* bids, Py_ssize_t nb, const pm_level_t* asks, Py_ssize_t na,
                   PxRaw tick) noexcept:
    # The flaw of a snapshot's levels (see level_flaw): an off-grid level anywhere first. Read to
    # the end without a branch per level (a valid book, the usual case, is read whole anyway):
    # the largest px * magic (grid_flaw), the highest bid and the lowest ask with a size
    cdef Py_ssize_t i
    cdef uint64_t magic = grid_magic(tick), most = 0, product
    cdef PxRaw high_bid = 0, low_ask = PM_PRICE_SCALE, px
    for i in range(nb):
        px = bids[i].px
        product = <uint64_t>px * magic
        most = product if product > most else most
        high_bid = px if bids[i].sz != 0 and px > high_bid else high_bid
    for i in range(na):
        px = asks[i].px
        product = <uint64_t>px * magic
        most = product if product > most else most
        low_ask = px if asks[i].sz != 0 and px < low_ask else low_ask
    if magic and most > magic - 1:
        return ST_OFF_GRID
    return ST_IMPOSSIBLE_BOOK if high_bid >= PM_PRICE_SCALE or low_ask == 0 else 0


cdef inline void touch_row(int64_t* row, const pm_book_t* b, const pm_fields_t* f, int64_t recv_ts_ns) noexcept:
    # Recompute the top of book from the book and stamp the row (exactly once per token per event,
    # inside the row's write: between pm_row_open and pm_row_close, which step SEQ by 2).
    if f.has & (1 << K_TIMESTAMP):
        row[PM_EXCH_TS_MS] = f.val[K_TIMESTAMP]
    stamp_row(row, b, recv_ts_ns)


cdef inline void stamp_row(int64_t* row, const pm_book_t* b, int64_t recv_ts_ns) noexcept:
    # The top of book from the book and the receive time (inside the row's write, like touch_row).
    # The sides are copied first: for the compiler every row store might change them
    cdef pm_side_t bids = b.bids, asks = b.asks
    if bids.n:
        row[PM_BID_PX] = bids.lv[bids.n - 1].px
        row[PM_BID_SZ] = bids.lv[bids.n - 1].sz
    else:
        row[PM_BID_PX] = 0
        row[PM_BID_SZ] = 0
    if asks.n:
        row[PM_ASK_PX] = asks.lv[asks.n - 1].px
        row[PM_ASK_SZ] = asks.lv[asks.n - 1].sz
    else:
        row[PM_ASK_PX] = PM_PRICE_SCALE
        row[PM_ASK_SZ] = 0
    row[PM_BID_LEVELS] = bids.n
    row[PM_ASK_LEVELS] = asks.n
    row[PM_RECV_TS_NS] = recv_ts_ns


cdef int side_copy(pm_side_t* side, list levels) except -1:
    # Replace the side by (price, size) pairs already checked and in wire order (load_book)
    cdef Py_ssize_t i, n = len(levels)
    if side_reserve(side, n) < 0:
        raise MemoryError()
    for i in range(n):
        side.lv[i].px = levels[i][0]
        side.lv[i].sz = levels[i][1]
    side.n = n
    return 0
