# Dispatcher's hot handlers: one per hot event type of pm_ws._events, named apply_<event type>
# (as the twin's Dispatcher._apply_<event type>), called by apply_hot (events_tables.pxi) with an
# event whose keys validate_event checked. Each returns 1 when the event was applied, else 0.
# Included by _core_c.pyx.


cdef int apply_book(Dispatcher d, pm_event_t* e, int64_t recv_ts_ns) except -1:
    cdef pm_fields_t* f = &e.f
    cdef int32_t slot = d._slot(f)
    cdef pm_book_t* book
    cdef int64_t* row
    cdef int64_t seq
    cdef int flaw
    if slot < 0:
        return 0
    if d.store._rows[slot * PM_N_FIELDS + PM_STATE] == PM_RESOLVED:  # final: no book changes it again
        d._stats[ST_SKIP_NOT_LIVE] += 1
        return 0
    book = &d.store._books[slot]
    if (side_snapshot(&book.bids, d._cur.lv + f.off[A_BIDS], f.cnt[A_BIDS], True,
                      f.sorted_levels & (1 << A_BIDS)) < 0
            or side_snapshot(&book.asks, d._cur.lv + f.off[A_ASKS], f.cnt[A_ASKS], False,
                             f.sorted_levels & (1 << A_ASKS)) < 0):
        raise MemoryError()
    row = d.store._rows + slot * PM_N_FIELDS
    if f.has & (1 << K_TICK_SIZE):
        book.books_name_tick = True
        book.tick_unconfirmed = False
    seq = pm_row_open(&row[PM_SEQ])
    if f.has & (1 << K_TICK_SIZE):
        row[PM_TICK] = f.val[K_TICK_SIZE]
    if f.has & (1 << K_LAST_TRADE_PRICE) and f.val[K_LAST_TRADE_PRICE] >= 0:
        row[PM_LAST_PX] = f.val[K_LAST_TRADE_PRICE]
    row[PM_STATE] = PM_STALE if book.tick_unconfirmed else PM_LIVE
    row[PM_EPOCH] += 1
    touch_row(row, book, f, recv_ts_ns)
    flaw = book_flaw(d._cur.lv + f.off[A_BIDS], f.cnt[A_BIDS], d._cur.lv + f.off[A_ASKS], f.cnt[A_ASKS],
                     row[PM_TICK])
    if not flaw and is_crossed(book):
        flaw = ST_CROSSED_BOOK
    if flaw:
        invalidate_row(row)
    else:
        row[PM_CONFIRM_TS_NS] = recv_ts_ns  # a snapshot is the server's own top of book
    pm_row_close(&row[PM_SEQ], seq)
    d._count(ST_EV_BOOK)
    if flaw:
        d._invalidated(slot, flaw)
    return 1


cdef int apply_price_change(Dispatcher d, pm_event_t* e, int64_t recv_ts_ns) except -1:
    cdef BookStore store = d.store
    cdef pm_fields_t* f = &e.f
    cdef Py_ssize_t i, t, nt = 0, first = f.off[A_PRICE_CHANGES], end = first + f.cnt[A_PRICE_CHANGES]
    cdef pm_entry_t* en
    cdef int32_t slot
    cdef int64_t* row
    cdef int64_t seq
    cdef pm_book_t* book
    cdef bint any_held = False
    cdef int failed = 0, stat
    for i in range(first, end):
        en = &d._cur.pc[i]
        slot = store.lookup(en.asset, en.asset_n, en.asset_hash)
        if slot < 0:
            continue
        any_held = True
        if d._foreign(slot):
            continue
        row = store._rows + slot * PM_N_FIELDS
        if row[PM_STATE] != PM_LIVE and row[PM_STATE] != PM_UNCONFIRMED:
            d._stats[ST_SKIP_NOT_LIVE] += 1
            continue
        book = &store._books[slot]
        if en.side == PM_SIDE_BUY:
            failed = side_set(&book.bids, en.px, en.sz, True)
        else:
            failed = side_set(&book.asks, en.px, en.sz, False)
        t = d._mark[slot]
        if t < 0:
            d._mark[slot] = <int32_t>nt
            d._touched[nt] = slot
            d._flaw[nt] = 0
            t = nt
            nt += 1
        d._last_entry[t] = i
        if not d._flaw[t]:
            d._flaw[t] = level_flaw(en.px, en.sz, row[PM_TICK], en.side == PM_SIDE_BUY)
        if failed:
            break
    for t in range(nt):
        d._mark[d._touched[t]] = -1
    if failed:
        raise MemoryError()
    if not any_held:
        d._stats[ST_SKIP_UNSUBSCRIBED] += 1
        return 0
    d._count(ST_EV_PRICE_CHANGE)
    for t in range(nt):
        slot = d._touched[t]
        book = &store._books[slot]
        row = store._rows + slot * PM_N_FIELDS
        en = &d._cur.pc[d._last_entry[t]]
        stat = d._flaw[t]
        if not stat and en.best_bid >= 0 and en.best_ask >= 0 and (
                en.best_bid != best_bid_px(book) or en.best_ask != best_ask_px(book)):
            stat = ST_CHECKSUM_MISMATCH
        elif not stat and is_crossed(book):
            stat = ST_CROSSED_BOOK
        seq = pm_row_open(&row[PM_SEQ])
        touch_row(row, book, f, recv_ts_ns)
        if stat:
            invalidate_row(row)
        elif en.best_bid >= 0 and en.best_ask >= 0:
            row[PM_CONFIRM_TS_NS] = recv_ts_ns  # the server's best prices match the book
            row[PM_STATE] = PM_LIVE  # confirms an UNCONFIRMED (REST) book too
        pm_row_close(&row[PM_SEQ], seq)
        if stat:
            d._invalidated(slot, stat)
    return 1


cdef int apply_last_trade_price(Dispatcher d, pm_event_t* e, int64_t recv_ts_ns) except -1:
    cdef pm_fields_t* f = &e.f
    cdef int32_t slot = d._slot(f)
    cdef int64_t* row
    cdef int64_t seq
    if slot < 0:
        return 0
    row = d.store._rows + slot * PM_N_FIELDS
    seq = pm_row_open(&row[PM_SEQ])
    row[PM_LAST_PX] = f.val[K_PRICE]
    row[PM_LAST_SZ] = f.val[K_SIZE]
    row[PM_LAST_SIDE] = f.val[K_SIDE] if f.has & (1 << K_SIDE) else PM_SIDE_NONE
    touch_row(row, &d.store._books[slot], f, recv_ts_ns)
    pm_row_close(&row[PM_SEQ], seq)
    d._count(ST_EV_LAST_TRADE_PRICE)
    if d._emit_trades and d._on_event is not None:
        d._on_event("last_trade_price", {
            "asset_id": d.store._names[slot],
            "price": row[PM_LAST_PX],
            "size": row[PM_LAST_SZ],
            "side": row[PM_LAST_SIDE],
            "timestamp": f.val[K_TIMESTAMP] if f.has & (1 << K_TIMESTAMP) else 0,
        })
    return 1


cdef int apply_tick_size_change(Dispatcher d, pm_event_t* e, int64_t recv_ts_ns) except -1:
    cdef pm_fields_t* f = &e.f
    cdef int32_t slot = d._slot(f)
    cdef int64_t* row
    cdef int64_t seq
    cdef bint resync
    if slot < 0:
        return 0
    d._count(ST_EV_TICK_SIZE_CHANGE)
    row = d.store._rows + slot * PM_N_FIELDS
    d.store._books[slot].tick_unconfirmed = False
    if f.val[K_NEW_TICK_SIZE] == row[PM_TICK]:
        return 1
    resync = row[PM_STATE] == PM_LIVE or row[PM_STATE] == PM_INVALID
    seq = pm_row_open(&row[PM_SEQ])
    row[PM_TICK] = f.val[K_NEW_TICK_SIZE]
    row[PM_EPOCH] += 1
    touch_row(row, &d.store._books[slot], f, recv_ts_ns)
    if resync:
        row[PM_STATE] = PM_STALE  # levels on the old grid may be wrong until the next book
    pm_row_close(&row[PM_SEQ], seq)
    if resync:
        d._queue_resync(slot)
    return 1


cdef int apply_best_bid_ask(Dispatcher d, pm_event_t* e, int64_t recv_ts_ns) noexcept:
    # A cross-check of a LIVE or UNCONFIRMED book: a match confirms the top of book, a mismatch is only counted
    cdef pm_fields_t* f = &e.f
    cdef int32_t slot = d._slot(f)
    cdef pm_book_t* book
    cdef int64_t* row
    cdef int64_t seq
    if slot < 0:
        return 0
    d._count(ST_EV_BEST_BID_ASK)
    book = &d.store._books[slot]
    row = d.store._rows + slot * PM_N_FIELDS
    if row[PM_STATE] != PM_LIVE and row[PM_STATE] != PM_UNCONFIRMED:
        return 1
    if f.val[K_BEST_BID] != best_bid_px(book) or f.val[K_BEST_ASK] != best_ask_px(book):
        d._stats[ST_BBA_MISMATCH] += 1
    else:
        seq = pm_row_open(&row[PM_SEQ])
        row[PM_CONFIRM_TS_NS] = recv_ts_ns
        row[PM_STATE] = PM_LIVE  # confirms an UNCONFIRMED (REST) book too
        row[PM_RECV_TS_NS] = recv_ts_ns
        pm_row_close(&row[PM_SEQ], seq)
    return 1
