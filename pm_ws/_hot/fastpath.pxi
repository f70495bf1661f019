# Fast paths for the server's usual layout: compact JSON, keys in the order the server writes
# them, plain values. Each one either consumes a whole member (or element) exactly as the
# generic scanner would, or returns NULL having changed nothing, and the caller scans that
# member generically from the same position: a surprise costs one retry, never a wrong result.
# Included by _core_c.pyx.

cdef extern from "pm_bytes.h":
    const unsigned char* pm_levels_layout(const unsigned char* p, const unsigned char* e, int64_t* out,
                                         Py_ssize_t* taken, int64_t sign, int64_t* last, bint* ordered) noexcept nogil

if PM_PRICE_SCALE != 10 ** 4 or PM_SIZE_SCALE != 10 ** 6:  # the units pm_levels_layout writes
    raise ImportError("pm_bytes.h: pm_levels_layout's units differ from PM_PRICE_SCALE / PM_SIZE_SCALE")


cdef inline cptr lit(cptr p, cptr e, const char* text, Py_ssize_t n) noexcept:
    # p past the literal text[:n], or NULL
    if e - p >= n and memcmp(p, text, n) == 0:
        return p + n
    return NULL


cdef inline cptr plain_str_end(cptr p, cptr e, Py_ssize_t* guess) noexcept:
    # Just after the closing quote of a string body without escapes or special bytes, or NULL.
    # guess holds the length this field had last time (ids, hashes and markets have fixed
    # lengths): checking that length first avoids a data-dependent loop exit
    cdef Py_ssize_t n = guess[0]
    cdef cptr q
    if n >= 16 and e - p > n and p[n] == c'"' and pm_plain_span(p, n):
        return p + n + 1
    q = pm_skip_plain(p, e)
    if q < e and q[0] == c'"':
        guess[0] = q - p
        return q + 1
    return NULL


cdef inline cptr digit_run(cptr p, cptr e, Py_ssize_t most, uint64_t* value) noexcept:
    # At most `most` digits at p into value, where they stop returned. A longer run stops at a
    # digit, which no caller accepts; `most` (<= 18) bounds the value, so no check per digit
    cdef uint64_t v = 0
    cdef unsigned int d
    cdef cptr stop = p + most if e - p > most else e
    while p < stop:
        d = p[0] - 48  # ord('0') == 48; other bytes wrap above 9
        if d > 9:
            break
        v = v * 10 + d
        p += 1
    value[0] = v
    return p


cdef inline cptr quoted_units(cptr p, cptr e, int decimals, Py_ssize_t int_digits, uint64_t units_max,
                              int64_t* out) noexcept:
    # One pass over a valid plain number string with at most int_digits integer digits: p just
    # after the opening quote; returns just after the closing quote with the units in out, or
    # NULL for anything else (the caller then takes the general route, which also decides
    # bad_number and reads longer integer parts)
    cdef uint64_t ip, fp = 0, units
    cdef cptr start = p, frac
    cdef Py_ssize_t whole, fd = 0
    p = digit_run(p, e, int_digits, &ip)
    whole = p - start
    if p < e and p[0] == c'.':
        frac = p + 1
        p = digit_run(frac, e, decimals, &fp)
        fd = p - frac
    if p >= e or p[0] != c'"' or whole + fd == 0:
        return NULL
    units = ip * POW10[decimals] + fp * POW10[decimals - fd]
    if units > units_max:
        return NULL
    out[0] = <int64_t>units
    return p + 1


cdef inline cptr quoted_fraction(cptr p, cptr e, int64_t* out) noexcept:
    # The usual price shape "0.D" .. "0.DDDD", p just after its '0.': no integer part to
    # accumulate and no range check (always < 1.0). NULL for anything else (see quoted_units)
    cdef uint64_t fp = 0
    cdef unsigned int d
    cdef int fd = 0
    while p < e:
        d = p[0] - 48
        if d > 9:
            break
        if fd == PM_PRICE_DECIMALS:
            return NULL
        fp = fp * 10 + d
        fd += 1
        p += 1
    if p >= e or p[0] != c'"':
        return NULL
    out[0] = <int64_t>(fp * POW10[PM_PRICE_DECIMALS - fd])
    return p + 1


cdef inline cptr quoted_digits(cptr p, cptr e, int64_t* out) noexcept:
    # A timestamp string of 1..18 digits, p just after its opening quote (see quoted_units)
    cdef int64_t v = 0
    cdef unsigned int d
    cdef cptr start = p
    # at most PM_MAX_TIMESTAMP_DIGITS digits are read (19 may overflow): a longer run stops at a digit,
    # not at the closing quote, and is refused below
    cdef cptr stop = p + PM_MAX_TIMESTAMP_DIGITS if e - p > PM_MAX_TIMESTAMP_DIGITS else e
    while p < stop:
        d = p[0] - 48
        if d > 9:
            break
        v = v * 10 + d
        p += 1
    if p == start or p >= e or p[0] != c'"':
        return NULL
    out[0] = v
    return p + 1


cdef cptr slow_number(cptr p, cptr e, int k, pm_fields_t* f) noexcept:
    # The general route for a number value the one-pass parsers did not take: p just after the
    # opening quote; NULL when the string is not a plain run of digits and dots
    cdef cptr q = plain_number_end(p, e)
    if q >= e or q[0] != c'"':
        return NULL
    store_field(f, k, <const char*>p, q - p)
    return q + 1


cdef inline cptr plain_price(cptr p, cptr e, int64_t* out) noexcept:
    # A price string in one pass, p just after its opening quote: the usual "0.D" .. "0.DDDD"
    # first, then any plain shape (see quoted_units)
    cdef cptr q = NULL
    if e - p >= 2 and p[0] == c'0' and p[1] == c'.':
        q = quoted_fraction(p + 2, e, out)
    if q == NULL:
        q = quoted_units(p, e, PM_PRICE_DECIMALS, 1, PM_PRICE_SCALE, out)
    return q


cdef inline cptr fast_price(cptr p, cptr e, int k, pm_fields_t* f) noexcept:
    # p at the opening quote of price key k's value (never last_trade_price, which may be "")
    cdef cptr q
    if p >= e or p[0] != c'"':
        return NULL
    q = plain_price(p + 1, e, &f.val[k])
    if q == NULL or (f.val[k] == 0 and key_value(k) == V_TICK):
        return slow_number(p + 1, e, k, f)  # also records a zero tick as bad_number
    set_fresh_ok(f, k)
    return q


cdef inline cptr fast_size(cptr p, cptr e, pm_fields_t* f) noexcept:
    cdef cptr q
    if p >= e or p[0] != c'"':
        return NULL
    q = quoted_units(p + 1, e, PM_SIZE_DECIMALS, SIZE_FAST_DIGITS, INT64_MAX, &f.val[K_SIZE])
    if q == NULL:
        return slow_number(p + 1, e, K_SIZE, f)
    set_fresh_ok(f, K_SIZE)
    return q


cdef inline cptr fast_timestamp(cptr p, cptr e, pm_fields_t* f) noexcept:
    cdef cptr q
    if p >= e or p[0] != c'"':
        return NULL
    q = quoted_digits(p + 1, e, &f.val[K_TIMESTAMP])
    if q == NULL:
        return slow_number(p + 1, e, K_TIMESTAMP, f)
    set_fresh_ok(f, K_TIMESTAMP)
    return q


cdef inline cptr fast_asset(cptr p, cptr e, pm_fields_t* f, Py_ssize_t* guess) noexcept:
    # p at the opening quote of an asset_id value
    cdef cptr q
    if p >= e or p[0] != c'"':
        return NULL
    q = plain_str_end(p + 1, e, guess)
    if q != NULL:
        store_field(f, K_ASSET_ID, <const char*>(p + 1), q - p - 2)
    return q


cdef inline cptr fast_other(cptr p, cptr e, Py_ssize_t* guess) noexcept:
    # p at the opening quote of a plain string value nobody reads (market, hash)
    if p >= e or p[0] != c'"':
        return NULL
    return plain_str_end(p + 1, e, guess)


cdef cptr fast_level(cptr p, cptr e, pm_fields_t* lf) noexcept:
    # {"price":"0.5","size":"100"} at p
    lf.has = 0
    lf.bad_shape = 0
    lf.bad_num = 0
    p = lit(p, e, b'{"price":', 9)
    if p != NULL:
        p = fast_price(p, e, K_PRICE, lf)
    if p != NULL:
        p = lit(p, e, b',"size":', 8)
    if p != NULL:
        p = fast_size(p, e, lf)
    if p != NULL and p < e and p[0] == c'}':
        return p + 1
    return NULL


cdef enum:
    LEVEL_MIN_BYTES = 25  # the shortest level, {"price":"1","size":"1"}, and its comma


cdef cptr fast_levels(pm_stage_t* s, cptr p, bint bids, bint* sorted_run) noexcept:
    # Levels in the server's layout, {"price":"0.5","size":"100"} joined by bare commas, p at the
    # first '{': stages each one straight into s.lv while the layout holds and returns just after
    # the last one staged; p itself when none was (the caller scans that level generically and
    # tries here again from the next), NULL out of memory. Every level staged here is valid.
    # sorted_run: whether the levels staged come strictly worst -> best (bids ascending, asks
    # descending) with none of size 0, which spares the side's build its checks (sorted_levels);
    # counted here on the way, the levels are not read again for it
    cdef cptr e = s.end, q, done = p
    cdef pm_level_t* lv
    cdef pm_level_t* first
    cdef Py_ssize_t taken
    cdef int64_t sign = 1 if bids else -1  # signed prices rise along the wire order on both sides
    cdef int64_t last = -PM_PRICE_SCALE - 1  # the previous level's signed price
    cdef bint ordered = True
    if reserve_levels(s, s.lv_n + (e - p) // LEVEL_MIN_BYTES + 1) < 0:
        return NULL
    lv = first = s.lv + s.lv_n
    while True:
        # the usual shapes in one C loop (pm_level_t is two int64s: px, sz), then the level it
        # stopped at, if any, by the one-pass parsers, then the C loop again from the next
        q = pm_levels_layout(p, e, <int64_t*>lv, &taken, sign, &last, &ordered)
        if taken:
            lv += taken
            done = q
            if q[0] != c',':  # q < e: a level taken there ends at least 16 bytes before e
                break
            p = q + 1
        q = lit(p, e, b'{"price":"', 10)
        if q != NULL:
            q = plain_price(q, e, &lv.px)
        if q != NULL:
            q = lit(q, e, b',"size":"', 9)
        if q != NULL:
            q = quoted_units(q, e, PM_SIZE_DECIMALS, SIZE_FAST_DIGITS, INT64_MAX, &lv.sz)
        if q == NULL or e - q < 2 or q[0] != c'}':
            break
        ordered = ordered & (lv.px * sign > last) & (lv.sz != 0)
        last = lv.px * sign
        lv += 1
        done = q + 1
        if q[1] != c',':
            break
        p = q + 2
    s.lv_n += lv - first
    sorted_run[0] = ordered
    return done


cdef cptr fast_entry(cptr p, cptr e, pm_fields_t* lf, Py_ssize_t* guess) noexcept:
    # {"asset_id":..,"price":..,"size":..,"side":..,"hash":..,"best_bid":..,"best_ask":..} at p
    cdef cptr q
    lf.has = 0
    lf.bad_shape = 0
    lf.bad_num = 0
    p = lit(p, e, b'{"asset_id":', 12)
    if p != NULL:
        p = fast_asset(p, e, lf, &guess[GUESS_ASSET])
    if p != NULL:
        p = lit(p, e, b',"price":', 9)
    if p != NULL:
        p = fast_price(p, e, K_PRICE, lf)
    if p != NULL:
        p = lit(p, e, b',"size":', 8)
    if p != NULL:
        p = fast_size(p, e, lf)
    if p != NULL:
        p = lit(p, e, b',"side":"', 9)
    if p == NULL:
        return NULL
    q = lit(p, e, b'BUY"', 4)
    if q != NULL:
        lf.val[K_SIDE] = PM_SIDE_BUY
    else:
        q = lit(p, e, b'SELL"', 5)
        if q == NULL:
            return NULL
        lf.val[K_SIDE] = PM_SIDE_SELL
    set_fresh_ok(lf, K_SIDE)
    p = lit(q, e, b',"hash":', 8)
    if p != NULL:
        p = fast_other(p, e, &guess[GUESS_HASH])
    if p != NULL:
        p = lit(p, e, b',"best_bid":', 12)
    if p != NULL:
        p = fast_price(p, e, K_BEST_BID, lf)
    if p != NULL:
        p = lit(p, e, b',"best_ask":', 12)
    if p != NULL:
        p = fast_price(p, e, K_BEST_ASK, lf)
    if p != NULL and p < e and p[0] == c'}':
        return p + 1
    return NULL


cdef inline cptr try_price(cptr p, cptr e, const char* key, Py_ssize_t n, int k, pm_fields_t* f) noexcept:
    # Past member key (n bytes, a price) when it comes next and is plain, else p itself
    cdef cptr q = lit(p, e, key, n)
    if q != NULL:
        q = fast_price(q, e, k, f)
    return q if q != NULL else p


cdef inline cptr try_size(cptr p, cptr e, pm_fields_t* f) noexcept:
    cdef cptr q = lit(p, e, b',"size":', 8)
    if q != NULL:
        q = fast_size(q, e, f)
    return q if q != NULL else p


cdef inline cptr try_timestamp(cptr p, cptr e, pm_fields_t* f) noexcept:
    cdef cptr q = lit(p, e, b',"timestamp":', 13)
    if q != NULL:
        q = fast_timestamp(q, e, f)
    return q if q != NULL else p


cdef inline cptr try_other(cptr p, cptr e, const char* key, Py_ssize_t n, Py_ssize_t* guess) noexcept:
    # Past member key when it comes next with a plain string value nobody reads, else p
    cdef cptr q = lit(p, e, key, n)
    if q != NULL:
        q = fast_other(q, e, guess)
    return q if q != NULL else p


cdef inline cptr try_side(cptr p, cptr e, pm_fields_t* f) noexcept:
    cdef cptr q = lit(p, e, b',"side":"', 9), r
    if q == NULL:
        return p
    r = lit(q, e, b'BUY"', 4)
    if r != NULL:
        f.val[K_SIDE] = PM_SIDE_BUY
    else:
        r = lit(q, e, b'SELL"', 5)
        if r == NULL:
            return p
        f.val[K_SIDE] = PM_SIDE_SELL
    set_fresh_ok(f, K_SIDE)
    return r


cdef inline cptr try_kind(cptr p, cptr e, const char* member, Py_ssize_t n, int kind, pm_fields_t* f) noexcept:
    # Past the whole member ',"event_type":"<kind>"' when it comes next, else p
    cdef cptr q = lit(p, e, member, n)
    if q == NULL:
        return p
    f.val[K_EVENT_TYPE] = kind
    set_fresh_ok(f, K_EVENT_TYPE)
    return q


cdef cptr fast_event(pm_stage_t* s, cptr p, int depth, pm_fields_t* f) noexcept:
    # An event object at p ('{'): the server's usual members fast, whatever follows generic
    cdef cptr e = s.end, q
    f.has = 0
    f.bad_shape = 0
    f.bad_num = 0
    q = lit(p, e, b'{"market":', 10)
    if q != NULL:
        q = fast_other(q, e, &s.guess[GUESS_MARKET])
    if q == NULL:
        return scan_fields(s, p + 1, depth, EVENT_KEYS, f)
    p = q
    q = lit(p, e, b',"price_changes":[', 18)
    if q != NULL:
        p = scan_list(s, q, depth + 1, K_PRICE_CHANGES, f)
        if p == NULL:
            return NULL
        p = try_timestamp(p, e, f)
        p = try_kind(p, e, b',"event_type":"price_change"', 28, EV_PRICE_CHANGE, f)
        return fields_tail(s, p, depth, EVENT_KEYS, f)
    q = lit(p, e, b',"asset_id":', 12)
    if q != NULL:
        q = fast_asset(q, e, f, &s.guess[GUESS_ASSET])
    if q == NULL:
        return fields_tail(s, p, depth, EVENT_KEYS, f)
    p = q
    if lit(p, e, b',"timestamp":', 13) != NULL:  # book
        p = try_timestamp(p, e, f)
        p = try_other(p, e, b',"hash":', 8, &s.guess[GUESS_HASH])
        q = lit(p, e, b',"bids":[', 9)
        if q != NULL:
            p = scan_list(s, q, depth + 1, K_BIDS, f)
            if p == NULL:
                return NULL
        q = lit(p, e, b',"asks":[', 9)
        if q != NULL:
            p = scan_list(s, q, depth + 1, K_ASKS, f)
            if p == NULL:
                return NULL
        p = try_price(p, e, b',"tick_size":', 13, K_TICK_SIZE, f)
        p = try_price(p, e, b',"last_trade_price":', 20, K_LAST_TRADE_PRICE, f)
        p = try_kind(p, e, b',"event_type":"book"', 20, EV_BOOK, f)
    elif lit(p, e, b',"price":', 9) != NULL:  # last_trade_price
        p = try_price(p, e, b',"price":', 9, K_PRICE, f)
        p = try_size(p, e, f)
        p = try_other(p, e, b',"fee_rate_bps":', 16, &s.guess[GUESS_SHORT])
        p = try_side(p, e, f)
        p = try_timestamp(p, e, f)
        p = try_kind(p, e, b',"event_type":"last_trade_price"', 32, EV_LAST_TRADE_PRICE, f)
    else:  # best_bid_ask
        p = try_price(p, e, b',"best_bid":', 12, K_BEST_BID, f)
        p = try_price(p, e, b',"best_ask":', 12, K_BEST_ASK, f)
        p = try_other(p, e, b',"spread":', 10, &s.guess[GUESS_SHORT])
        p = try_timestamp(p, e, f)
        p = try_kind(p, e, b',"event_type":"best_bid_ask"', 28, EV_BEST_BID_ASK, f)
    return fields_tail(s, p, depth, EVENT_KEYS, f)
