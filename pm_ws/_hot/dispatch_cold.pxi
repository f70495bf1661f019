# Dispatcher's cold parts: its per-slot scratch memory, the cold events (new_market,
# market_resolved: decoded with orjson, deduplicated, handed to on_event), and the resync queue
# and counters it reports. The per-frame methods stay on the class in _core_c.pyx.

cdef int dispatcher_alloc(Dispatcher d, BookStore store, object on_event, bint emit_trades,
                          Py_ssize_t max_frame_bytes) except -1:
    # Fill a new dispatcher: the per-slot price_change scratch arrays are sized to the store
    cdef Py_ssize_t cells = store._capacity
    d.store = store
    d._on_event = on_event
    d._emit_trades = emit_trades
    d._max_frame_bytes = max_frame_bytes
    d._mark = <int32_t*>PyMem_Malloc(cells * sizeof(int32_t))
    d._touched = <int32_t*>PyMem_Malloc(cells * sizeof(int32_t))
    d._last_entry = <Py_ssize_t*>PyMem_Malloc(cells * sizeof(Py_ssize_t))
    d._flaw = <int*>PyMem_Malloc(cells * sizeof(int))
    if not (d._mark and d._touched and d._last_entry and d._flaw):
        raise MemoryError()
    memset(d._mark, 0xFF, cells * sizeof(int32_t))  # every slot -1
    d._seen_markets = {}
    return 0


cdef void dispatcher_free(Dispatcher d) noexcept:
    PyMem_Free(d._mark)
    PyMem_Free(d._touched)
    PyMem_Free(d._last_entry)
    PyMem_Free(d._flaw)
    free_stage(&d._st)


cdef int apply_cold(Dispatcher d, pm_event_t* e, int kind) except -1:
    # Cold events are rare, so decoded with orjson from the event's own bytes
    try:
        payload = orjson.loads(PyBytes_FromStringAndSize(<const char*>e.span_start, e.span_end - e.span_start))
    except orjson.JSONDecodeError:  # only a number too large for orjson (e.g. 1e400), valid JSON to us
        d._stats[ST_REJ_BAD_EVENT] += 1
        return 0
    if kind == EV_NEW_MARKET:
        return apply_new_market(d, payload)
    if kind == EV_MARKET_RESOLVED:
        return deliver_cold(d, EV_MARKET_RESOLVED, payload)
    d._stats[ST_REJ_BAD_EVENT] += 1  # unreachable: a cold kind without a handler
    return 0


cdef int apply_new_market(Dispatcher d, object payload) except -1:
    key = None
    for field in NEW_MARKET_ID_KEYS:
        if field in payload:
            key = payload[field]
            break
    if isinstance(key, str) and len(key) <= SEEN_MARKET_ID_MAX:
        if key in d._seen_markets:
            d._stats[ST_SKIP_DUPLICATE] += 1
            return 0
        d._seen_markets[key] = None
        if len(d._seen_markets) > SEEN_MARKETS_MAX:
            del d._seen_markets[next(iter(d._seen_markets))]
    return deliver_cold(d, EV_NEW_MARKET, payload)


cdef int deliver_cold(Dispatcher d, int kind, object payload) except -1:
    # Count a cold event and hand it to on_event under its event_type name
    d._count(ST_EV_BOOK + kind - EV_BOOK)  # the ST_EV_* counters follow pm_kind
    if d._on_event is not None:
        d._on_event(EVENT_NAMES[kind], payload)
    return 1


cdef list take_resync(BookStore store):
    # The queued tokens, first-queued first, and an empty queue
    out = list(store._resync)
    store._resync.clear()
    return out


cdef dict stats_dict(const int64_t* stats):
    cdef Py_ssize_t i
    return {STAT_KEYS[i]: stats[i] for i in range(ST_COUNT)}
