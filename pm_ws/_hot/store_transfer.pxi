# State that enters or leaves a BookStore slot other than through frames: a book loaded from a
# REST snapshot, a market's resolution, and a token's whole state exported to (and restored from)
# a blob in pm_ws._token_blob's format. Cold code: BookStore's methods check the token and call these.

cdef bint load_slot_book(BookStore store, int32_t slot, bids, asks, tick, int64_t exch_ms, int64_t recv_ns) except -1:
    # BookStore.load_book for a held slot: False (nothing changed) when the row is LIVE or RESOLVED
    cdef int64_t* row = store._rows + slot * PM_N_FIELDS
    cdef pm_book_t* book
    cdef int64_t seq
    tick = operator.index(tick) or row[PM_TICK]
    bid_levels, ask_levels = wire_levels(bids, asks, tick)
    if row[PM_STATE] == PM_LIVE or row[PM_STATE] == PM_RESOLVED:
        return False
    book = &store._books[slot]
    side_copy(&book.bids, bid_levels)
    side_copy(&book.asks, ask_levels)
    book.books_name_tick = True
    book.tick_unconfirmed = False
    seq = pm_row_open(&row[PM_SEQ])
    row[PM_TICK] = tick
    row[PM_STATE] = PM_UNCONFIRMED
    row[PM_EPOCH] += 1
    row[PM_EXCH_TS_MS] = exch_ms
    stamp_row(row, book, recv_ns)
    pm_row_close(&row[PM_SEQ], seq)
    return True


cdef int resolve_slot(BookStore store, int32_t slot, won) except -1:
    # BookStore.resolve for a held slot: remember the outcome (the dict and OUTCOME), the row turns RESOLVED once
    cdef int64_t* row = store._rows + slot * PM_N_FIELDS
    cdef int64_t seq
    cdef int64_t outcome = 0 if won is None else (1 if won else 2)
    store._resolved[store._names[slot]] = None if won is None else bool(won)
    if row[PM_STATE] != PM_RESOLVED or row[PM_OUTCOME] != outcome:
        seq = pm_row_open(&row[PM_SEQ])
        if row[PM_STATE] != PM_RESOLVED:
            row[PM_STATE] = PM_RESOLVED
            row[PM_EPOCH] += 1
        row[PM_OUTCOME] = outcome
        pm_row_close(&row[PM_SEQ], seq)
    return 0


cdef bytes export_slot(BookStore store, int32_t slot):
    # BookStore.export_token for a held slot
    cdef int64_t* row = store._rows + slot * PM_N_FIELDS
    cdef pm_book_t* book = &store._books[slot]
    cdef Py_ssize_t i
    name = store._names[slot]
    return encode_token(TokenState(
        [row[i] for i in range(PM_N_FIELDS)], side_levels(&book.bids), side_levels(&book.asks),
        book.books_name_tick, book.tick_unconfirmed, store._owners[slot], name in store._resolved,
        store._resolved.get(name),
    ))


cdef int restore_slot(BookStore store, int32_t slot, blob) except -1:
    # BookStore.restore_token for a held slot: nothing changes unless the blob decodes
    cdef int64_t* row = store._rows + slot * PM_N_FIELDS
    cdef pm_book_t* book = &store._books[slot]
    cdef int64_t new_seq, new_epoch
    cdef Py_ssize_t i
    state = decode_token(blob, row[PM_TOKEN_TAG])
    values = state.row
    new_seq, new_epoch = restored_counters(row[PM_SEQ], row[PM_EPOCH], values)
    # room for both sides first: past this point nothing can fail half-way
    if side_reserve(&book.bids, len(state.bids)) < 0 or side_reserve(&book.asks, len(state.asks)) < 0:
        raise MemoryError()
    side_copy(&book.bids, state.bids)
    side_copy(&book.asks, state.asks)
    book.books_name_tick = state.books_name_tick
    book.tick_unconfirmed = state.tick_unconfirmed
    store._owners[slot] = state.owner
    if state.resolved:
        store._resolved[store._names[slot]] = state.won
    else:
        store._resolved.pop(store._names[slot], None)
    pm_row_open(&row[PM_SEQ])
    for i in range(PM_N_FIELDS):
        if i != PM_SEQ:  # SEQ is the lock: only pm_row_close writes it
            row[i] = values[i]
    row[PM_EPOCH] = new_epoch
    pm_row_close(&row[PM_SEQ], new_seq - 2)  # it stores its argument + 2
    return 0


cdef list side_levels(const pm_side_t* side):
    # Every level as (price, size), in the side's worst -> best order (export_token)
    cdef Py_ssize_t i
    return [(side.lv[i].px, side.lv[i].sz) for i in range(side.n)]
