# Validation: an event's keys against its type (shape first, then numbers), duplicate book
# prices, token ids.
# Included by _core_c.pyx.

cdef int has_duplicate_price(pm_stage_t* s, const pm_level_t* lv, Py_ssize_t n) noexcept:
    # 1 when two staged levels of one side share a price, 0 when not, -1 out of memory
    cdef Py_ssize_t i, m = 0
    cdef bint up = True, down = True
    cdef PxRaw* q
    for i in range(1, n):
        up = up and lv[i - 1].px < lv[i].px
        down = down and lv[i - 1].px > lv[i].px
    if up or down:
        return 0
    if s.tmp_cap < n:
        q = <PxRaw*>PyMem_Realloc(s.tmp, n * sizeof(PxRaw))
        if q == NULL:
            return -1
        s.tmp = q
        s.tmp_cap = n
    for i in range(n):
        if lv[i].px >= 0:
            s.tmp[m] = lv[i].px
            m += 1
    qsort(s.tmp, m, sizeof(PxRaw), cmp_i64)
    for i in range(1, m):
        if s.tmp[i - 1] == s.tmp[i]:
            return 1
    return 0


cdef int validate_event(pm_stage_t* s, const pm_fields_t* f, int kind) noexcept:
    # S_OK, S_BAD_SHAPE (rej_bad_event) or S_BAD_NUMBER; -1 out of memory.
    # Duplicate prices are only knowable once every price parsed, so a bad number wins
    cdef uint32_t required, optional
    cdef int status, dup
    if not required_keys(kind, &required, &optional):
        return S_BAD_SHAPE  # unreachable: only hot kinds are validated, and each has its keys
    status = classify(f, required, optional)
    if kind == EV_BOOK and status == S_OK:  # the V_LEVELS keys, bids and asks; strictly sorted ones have none
        dup = 0 if f.sorted_levels & (1 << A_BIDS) else has_duplicate_price(s, s.lv + f.off[A_BIDS], f.cnt[A_BIDS])
        if dup == 0 and not f.sorted_levels & (1 << A_ASKS):
            dup = has_duplicate_price(s, s.lv + f.off[A_ASKS], f.cnt[A_ASKS])
        if dup < 0:
            return -1
        if dup:
            return S_BAD_SHAPE
    return status


cdef bint token_view(object token_id, cptr* p, Py_ssize_t* n) except -1:
    # Read an id's bytes in place: False for a str that cannot be an id (not ASCII), TypeError unless str or
    # bytes. Subclasses count (numpy.str_): PyUnicode_DATA also finds the characters of a non-compact str
    if PyUnicode_Check(token_id):
        if not PyUnicode_IS_ASCII(token_id):
            return False
        p[0] = <cptr>PyUnicode_DATA(token_id)
        n[0] = PyUnicode_GET_LENGTH(token_id)
        return True
    if PyBytes_Check(token_id):
        p[0] = <cptr>PyBytes_AS_STRING(token_id)
        n[0] = PyBytes_GET_SIZE(token_id)
        return True
    raise token_id_type_error(token_id)


cdef bint valid_token(cptr p, Py_ssize_t n) noexcept:
    # 1..100 bytes of [0-9A-Za-z_.:-]
    cdef Py_ssize_t i
    cdef unsigned char c
    if n < 1 or n > PM_TOKEN_ID_MAX:
        return False
    for i in range(n):
        c = p[i]
        if not (c'0' <= c <= c'9' or c'a' <= c <= c'z' or c'A' <= c <= c'Z'
                or c == c'_' or c == c'.' or c == c':' or c == c'-'):
            return False
    return True
