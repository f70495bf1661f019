# The compiled layout and vocabulary as Python values (row fields, constants, limits, the event and
# key tables the scanner was built from), for the tests that keep them equal to pm_ws.row and
# pm_ws._events. Included at the end of _core_c.pyx: it runs the scanner at import.

FIELD_INDEX = {
    "BID_PX": PM_BID_PX, "BID_SZ": PM_BID_SZ, "ASK_PX": PM_ASK_PX, "ASK_SZ": PM_ASK_SZ,
    "LAST_PX": PM_LAST_PX, "LAST_SZ": PM_LAST_SZ, "LAST_SIDE": PM_LAST_SIDE,
    "EXCH_TS_MS": PM_EXCH_TS_MS, "RECV_TS_NS": PM_RECV_TS_NS, "SEQ": PM_SEQ, "EPOCH": PM_EPOCH,
    "STATE": PM_STATE, "TICK": PM_TICK, "BID_LEVELS": PM_BID_LEVELS, "ASK_LEVELS": PM_ASK_LEVELS,
    "MISMATCHES": PM_MISMATCHES, "TOKEN_TAG": PM_TOKEN_TAG, "CONFIRM_TS_NS": PM_CONFIRM_TS_NS,
    "OUTCOME": PM_OUTCOME,
}
C_CONSTANTS = {
    "PRICE_SCALE": PM_PRICE_SCALE, "SIZE_SCALE": PM_SIZE_SCALE, "N_FIELDS": PM_N_FIELDS,
    "FIRST_SPARE": PM_FIRST_SPARE,
    "SIDE_BUY": PM_SIDE_BUY, "SIDE_SELL": PM_SIDE_SELL,
    "EMPTY": PM_EMPTY, "SUBSCRIBING": PM_SUBSCRIBING, "LIVE": PM_LIVE, "STALE": PM_STALE,
    "INVALID": PM_INVALID, "RESOLVED": PM_RESOLVED, "UNCONFIRMED": PM_UNCONFIRMED, "N_STATS": ST_COUNT,
}
C_LIMITS = {
    "PRICE_DECIMALS": PM_PRICE_DECIMALS, "SIZE_DECIMALS": PM_SIZE_DECIMALS, "TOKEN_ID_MAX": PM_TOKEN_ID_MAX,
    "MAX_JSON_DEPTH": PM_MAX_JSON_DEPTH, "MAX_TIMESTAMP_DIGITS": PM_MAX_TIMESTAMP_DIGITS,
}


cdef tuple key_names(uint32_t keys):
    cdef int k
    return tuple([KEY_NAMES[k] for k in range(K_COUNT) if (keys >> k) & 1])


cdef tuple event_row(int kind):
    # (name, the pm_kind kind_of() gives it, hot, required keys, optional keys)
    cdef uint32_t required = 0, optional = 0
    cdef bytes name = EVENT_NAMES[kind].encode()
    cdef bint hot = required_keys(kind, &required, &optional)
    if not hot:
        required = optional = 0
    return (EVENT_NAMES[kind], kind_of(name, len(name)), hot and kind < EV_FIRST_COLD,
            key_names(required), key_names(optional))


cdef tuple key_row(int k):
    # (name, the pm_key key_of() and the raw_key() fast path give it, its value kind's name)
    cdef bytes name = KEY_NAMES[k].encode()
    cdef bytes padded = name + b'"' + b" " * RAW_KEY_SPAN  # raw_key reads ahead
    cdef int fast = -1
    if raw_key(<cptr>padded, &fast) == NULL:
        fast = -1
    return (KEY_NAMES[k], key_of(name, len(name)), fast, VALUE_NAMES[key_value(k)])


EVENT_TABLE = tuple([event_row(kind) for kind in range(EV_BOOK, EV_COUNT)])  # in pm_kind order
KEY_TABLE = tuple([key_row(k) for k in range(K_COUNT)])  # in pm_key order
ELEMENT_KEYS = {
    "level": key_names(LEVEL_KEYS),
    "entry_required": key_names(ENTRY_REQUIRED),
    "entry_optional": key_names(ENTRY_OPTIONAL),
}
