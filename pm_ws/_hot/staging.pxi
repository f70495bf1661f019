# Staging: the keys pm_ws recognises (matched by events_tables.pxi), their values parsed into
# pm_fields_t, level and entry arrays, and one frame's events. Included by _core_c.pyx.

# Status of one recognised key (see set_status)
cdef enum:
    S_OK
    S_BAD_NUMBER
    S_BAD_SHAPE


cdef inline void set_status(pm_fields_t* f, int k, int status) noexcept:
    # Record the status of key k's latest occurrence (duplicate keys: the last one wins)
    cdef uint32_t bit = (<uint32_t>1) << k
    f.has &= ~bit
    f.bad_shape &= ~bit
    f.bad_num &= ~bit
    if status == S_OK:
        f.has |= bit
    elif status == S_BAD_NUMBER:
        f.has |= bit
        f.bad_num |= bit
    else:
        f.bad_shape |= bit


cdef inline void set_fresh_ok(pm_fields_t* f, int k) noexcept:
    # set_status(f, k, S_OK) for the fast paths: they stage each key at most once into an f
    # cleared just before, ahead of any generic member, so no earlier status needs clearing
    f.has |= (<uint32_t>1) << k


cdef inline int classify(const pm_fields_t* f, uint32_t required, uint32_t optional) noexcept:
    # Shape first (missing or wrong-typed key), then numbers
    cdef uint32_t used = required | optional
    if (required & ~f.has) or (used & f.bad_shape):
        return S_BAD_SHAPE
    if used & f.bad_num:
        return S_BAD_NUMBER
    return S_OK


cdef int ensure_arena(pm_stage_t* s) noexcept:
    # The arena grows only before its first use in a frame, to the frame's size: all unescaped
    # text of a frame fits, so pointers into it stay valid until the next frame
    cdef char* q
    if s.arena_cap >= s.frame_n:
        return 0
    q = <char*>PyMem_Realloc(s.arena, s.frame_n)
    if q == NULL:
        s.nomem = 1
        return -1
    s.arena = q
    s.arena_cap = s.frame_n
    return 0


cdef inline bint is_number_value(int value) noexcept:
    # A string value that holds a number (plain digits and dots when valid)
    return (value == V_TIMESTAMP or value == V_PRICE or value == V_PRICE_OR_EMPTY or value == V_TICK
            or value == V_SIZE)


cdef void store_field(pm_fields_t* f, int k, const char* v, Py_ssize_t n) noexcept:
    # Parse string value v[:n] of recognised key k into f, as its value kind says
    cdef int64_t x
    cdef cptr u = <cptr>v
    cdef int value = key_value(k)
    if value == V_ID:
        f.asset = v
        f.asset_n = n
        f.asset_hash = pm_hash(u, n)
        set_status(f, k, S_OK)
        return
    if value == V_NAME:
        f.val[k] = kind_of(v, n)
        set_status(f, k, S_OK)
        return
    if value == V_SIDE:
        if n == 3 and memcmp(v, b"BUY", 3) == 0:
            f.val[k] = PM_SIDE_BUY
        elif n == 4 and memcmp(v, b"SELL", 4) == 0:
            f.val[k] = PM_SIDE_SELL
        else:
            set_status(f, k, S_BAD_SHAPE)
            return
        set_status(f, k, S_OK)
        return
    if value == V_PRICE_OR_EMPTY and n == 0:
        f.val[k] = -1  # "" = no trade yet
        set_status(f, k, S_OK)
        return
    if value == V_TIMESTAMP:
        x = parse_ts_c(u, n)
    elif value == V_SIZE:
        x = parse_size_c(u, n)
    elif value == V_PRICE or value == V_PRICE_OR_EMPTY:
        x = parse_price_c(u, n)
    elif value == V_TICK:
        x = parse_price_c(u, n)
        if x == 0:
            x = -1
    else:  # unreachable: every string key has a kind above; should one not, its event is rej_bad_event
        set_status(f, k, S_BAD_SHAPE)
        return
    f.val[k] = x
    set_status(f, k, S_OK if x >= 0 else S_BAD_NUMBER)


cdef inline cptr plain_number_end(cptr p, cptr e) noexcept:
    # End of a run of digits and dots: a number string without escapes ends at a quote there
    while p < e and (is_digit(p[0]) or p[0] == c'.'):
        p += 1
    return p


cdef cptr scan_field_str(pm_stage_t* s, cptr p, int k, pm_fields_t* f) noexcept:
    # p just after the opening quote of recognised key k's string value
    cdef bint esc = False
    cdef cptr start = p, q
    cdef Py_ssize_t n
    cdef char* out
    if is_number_value(key_value(k)):  # most numbers are short runs of digits and dots
        q = plain_number_end(p, s.end)
        if q < s.end and q[0] == c'"':
            store_field(f, k, <const char*>p, q - p)
            return q + 1
    p = scan_str(p, s.end, &esc)
    if p == NULL:
        return NULL
    if not esc:
        store_field(f, k, <const char*>start, p - 1 - start)
        return p
    if ensure_arena(s) < 0:
        return NULL
    out = s.arena + s.arena_n
    n = decode_str(start, p - 1, out)
    if k == K_ASSET_ID:
        s.arena_n += n  # asset ids are read again at apply time; numbers are parsed right here
    store_field(f, k, out, n)
    return p


cdef int reserve_levels(pm_stage_t* s, Py_ssize_t n) noexcept:
    # Room for n staged levels in all
    cdef pm_level_t* q
    cdef Py_ssize_t cap
    if n <= s.lv_cap:
        return 0
    cap = s.lv_cap * 2 if s.lv_cap else 64
    if cap < n:
        cap = n
    q = <pm_level_t*>PyMem_Realloc(s.lv, cap * sizeof(pm_level_t))
    if q == NULL:
        s.nomem = 1
        return -1
    s.lv = q
    s.lv_cap = cap
    return 0


cdef int push_level(pm_stage_t* s, const pm_fields_t* lf) noexcept:
    if reserve_levels(s, s.lv_n + 1) < 0:
        return -1
    # a price that did not parse is staged as -1: the duplicate check skips it
    s.lv[s.lv_n].px = lf.val[K_PRICE] if lf.has & (1 << K_PRICE) else -1
    s.lv[s.lv_n].sz = lf.val[K_SIZE] if lf.has & (1 << K_SIZE) else -1
    s.lv_n += 1
    return 0


cdef int push_entry(pm_stage_t* s, const pm_fields_t* lf) noexcept:
    cdef pm_entry_t* q
    cdef Py_ssize_t cap
    if s.pc_n == s.pc_cap:
        cap = s.pc_cap * 2 if s.pc_cap else 16
        q = <pm_entry_t*>PyMem_Realloc(s.pc, cap * sizeof(pm_entry_t))
        if q == NULL:
            s.nomem = 1
            return -1
        s.pc = q
        s.pc_cap = cap
    q = &s.pc[s.pc_n]
    s.pc_n += 1
    q.asset = lf.asset
    q.asset_n = lf.asset_n
    q.asset_hash = lf.asset_hash
    q.px = lf.val[K_PRICE]
    q.sz = lf.val[K_SIZE]
    q.side = <int>lf.val[K_SIDE]
    q.best_bid = lf.val[K_BEST_BID] if lf.has & (1 << K_BEST_BID) else -1
    q.best_ask = lf.val[K_BEST_ASK] if lf.has & (1 << K_BEST_ASK) else -1
    return 0


cdef cptr scan_list(pm_stage_t* s, cptr p, int depth, int k, pm_fields_t* f) noexcept:
    # p just after '[' of bids/asks (levels) or price_changes (entries); stages the elements
    cdef cptr e = s.end, q
    cdef bint entries = k == K_PRICE_CHANGES
    cdef uint32_t element_keys = ENTRY_REQUIRED | ENTRY_OPTIONAL if entries else LEVEL_KEYS
    cdef Py_ssize_t first = s.pc_n if entries else s.lv_n
    cdef int status = S_OK, el
    cdef bint sorted_run = False, run_sorted  # the whole array so far one sorted fast run (fast_levels)
    cdef Py_ssize_t staged
    cdef pm_fields_t lf
    if depth > PM_MAX_JSON_DEPTH:
        return NULL
    p = skip_ws(p, e)
    if p < e and p[0] == c']':
        p += 1
    else:
        while True:
            if p >= e:
                return NULL
            if p[0] == c'{':
                if depth + 1 > PM_MAX_JSON_DEPTH:
                    return NULL
                staged = s.lv_n
                q = fast_levels(s, p, k == K_BIDS, &run_sorted) if not entries else p
                if q == NULL:
                    return NULL
                if q != p:  # a run of levels, all staged and valid
                    sorted_run = run_sorted and staged == first
                    p = q
                    el = S_OK
                else:
                    sorted_run = False
                    q = fast_entry(p, e, &lf, s.guess) if entries else fast_level(p, e, &lf)
                    if q == NULL:
                        q = scan_fields(s, p + 1, depth + 1, element_keys, &lf)
                        if q == NULL:
                            return NULL
                    p = q
                    if entries:
                        el = classify(&lf, ENTRY_REQUIRED, ENTRY_OPTIONAL)
                        if push_entry(s, &lf) < 0:
                            return NULL
                    else:
                        el = classify(&lf, LEVEL_KEYS, 0)
                        if push_level(s, &lf) < 0:
                            return NULL
            else:
                p = scan_value(s, p, depth + 1)
                if p == NULL:
                    return NULL
                el = S_BAD_SHAPE
                sorted_run = False
            if el > status:  # S_BAD_SHAPE > S_BAD_NUMBER > S_OK
                status = el
            p = skip_ws(p, e)
            if p >= e:
                return NULL
            if p[0] == c']':
                p += 1
                break
            if p[0] != c',':
                return NULL
            p = skip_ws(p + 1, e)
    f.off[k - K_FIRST_ARRAY] = first
    f.cnt[k - K_FIRST_ARRAY] = (s.pc_n if entries else s.lv_n) - first
    if sorted_run:
        f.sorted_levels |= (<uint32_t>1) << (k - K_FIRST_ARRAY)
    else:
        f.sorted_levels &= ~((<uint32_t>1) << (k - K_FIRST_ARRAY))
    set_status(f, k, status)
    return p


cdef cptr scan_member(pm_stage_t* s, cptr p, int depth, uint32_t keys, pm_fields_t* f) noexcept:
    # One '"key": value' member of an object at depth, p at its opening quote; returns just
    # after the value. Recognised keys (those in keys) are staged into f
    cdef cptr e = s.end, ks, q
    cdef bint esc
    cdef int k
    cdef char scratch[KEY_SCRATCH]
    cdef Py_ssize_t kn
    if p >= e or p[0] != c'"':
        return NULL
    ks = p + 1
    q = raw_key(ks, &k) if e - ks >= RAW_KEY_SPAN else NULL
    if q != NULL:
        p = q
    else:
        esc = False
        p = scan_str(ks, e, &esc)
        if p == NULL:
            return NULL
        kn = p - 1 - ks
        if not esc:
            k = key_of(<const char*>ks, kn)
        elif kn <= KEY_SCRATCH:
            k = key_of(scratch, decode_str(ks, p - 1, scratch))
        else:
            k = K_OTHER
    if k != K_OTHER and not (keys >> k) & 1:
        k = K_OTHER
    p = skip_ws(p, e)
    if p >= e or p[0] != c':':
        return NULL
    p = skip_ws(p + 1, e)
    if p >= e:
        return NULL
    if k == K_OTHER:
        return scan_value(s, p, depth + 1)
    if k >= K_FIRST_ARRAY:  # V_LEVELS or V_ENTRIES
        if p[0] == c'[':
            return scan_list(s, p + 1, depth + 1, k, f)
    elif p[0] == c'"':
        return scan_field_str(s, p + 1, k, f)
    set_status(f, k, S_BAD_SHAPE)
    return scan_value(s, p, depth + 1)


cdef cptr fields_tail(pm_stage_t* s, cptr p, int depth, uint32_t keys, pm_fields_t* f) noexcept:
    # The rest of an object after one of its values: more members, then '}'
    cdef cptr e = s.end
    while True:
        p = skip_ws(p, e)
        if p >= e:
            return NULL
        if p[0] == c'}':
            return p + 1
        if p[0] != c',':
            return NULL
        p = scan_member(s, skip_ws(p + 1, e), depth, keys, f)
        if p == NULL:
            return NULL


cdef cptr scan_fields(pm_stage_t* s, cptr p, int depth, uint32_t keys, pm_fields_t* f) noexcept:
    # p just after '{' of an object whose recognised keys (those in keys) are staged into f
    cdef cptr e = s.end
    f.has = 0
    f.bad_shape = 0
    f.bad_num = 0
    p = skip_ws(p, e)
    if p < e and p[0] == c'}':
        return p + 1
    p = scan_member(s, p, depth, keys, f)
    if p == NULL:
        return NULL
    return fields_tail(s, p, depth, keys, f)


cdef pm_event_t* push_event(pm_stage_t* s, cptr start) noexcept:
    cdef pm_event_t* q
    cdef Py_ssize_t cap
    if s.ev_n == s.ev_cap:
        cap = s.ev_cap * 2 if s.ev_cap else 4
        q = <pm_event_t*>PyMem_Realloc(s.ev, cap * sizeof(pm_event_t))
        if q == NULL:
            s.nomem = 1
            return NULL
        s.ev = q
        s.ev_cap = cap
    q = &s.ev[s.ev_n]
    s.ev_n += 1
    q.span_start = start
    q.is_object = start[0] == c'{'
    return q


cdef cptr scan_event(pm_stage_t* s, cptr p, int depth) noexcept:
    # One top-level event (or array element) at p
    cdef pm_event_t* ev = push_event(s, p)
    if ev == NULL:
        return NULL
    if ev.is_object:
        p = fast_event(s, p, depth, &ev.f)
    else:
        p = scan_value(s, p, depth)
    ev.span_end = p
    return p


cdef int scan_frame(pm_stage_t* s, cptr b, cptr e) noexcept:
    # Validate b[:e] (which starts with '{' or '[') and stage its events:
    # 1 valid, 0 not valid JSON, -1 out of memory
    cdef cptr p
    s.end = e
    s.frame_n = e - b
    s.ev_n = 0
    s.lv_n = 0
    s.pc_n = 0
    s.arena_n = 0
    s.nomem = 0
    if b[0] == c'{':
        p = scan_event(s, b, 1)
    else:
        p = skip_ws(b + 1, e)
        if p < e and p[0] == c']':
            p += 1
        else:
            while True:
                if p >= e:
                    return 0
                p = scan_event(s, p, 2)
                if p == NULL:
                    break
                p = skip_ws(p, e)
                if p >= e:
                    return 0
                if p[0] == c']':
                    p += 1
                    break
                if p[0] != c',':
                    return 0
                p = skip_ws(p + 1, e)
    if p == NULL:
        return -1 if s.nomem else 0
    return 1 if skip_ws(p, e) == e else 0


cdef void free_stage(pm_stage_t* s) noexcept:
    PyMem_Free(s.ev)
    PyMem_Free(s.lv)
    PyMem_Free(s.pc)
    PyMem_Free(s.arena)
    PyMem_Free(s.tmp)


cdef bint ascii_iequal(cptr b, Py_ssize_t n, const char* upper, Py_ssize_t m) noexcept:
    cdef Py_ssize_t i
    cdef unsigned char c
    if n != m:
        return False
    for i in range(n):
        c = b[i]
        if c'a' <= c <= c'z':
            c -= 32  # ord('a') - ord('A')
        if c != <unsigned char>upper[i]:
            return False
    return True
