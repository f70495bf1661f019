# JSON scanner: validates RFC 8259 text (strings, UTF-8, numbers, literals, nesting) without
# staging anything. Included by _core_c.pyx; staging.pxi stages the keys pm_ws reads on top of it.

cdef inline cptr skip_ws(cptr p, cptr e) noexcept:
    while p < e and (p[0] == c' ' or p[0] == c'\n' or p[0] == c'\r' or p[0] == c'\t'):
        p += 1
    return p


cdef inline int hex4(cptr p, cptr e) noexcept:
    # Value of 4 hex digits at p, or -1
    cdef int v = 0, i
    cdef unsigned char c
    if e - p < 4:
        return -1
    for i in range(4):
        c = p[i]
        if c'0' <= c <= c'9':
            v = v * 16 + (c - 48)
        elif c'a' <= c <= c'f':
            v = v * 16 + (c - 87)  # ord('a') - 10
        elif c'A' <= c <= c'F':
            v = v * 16 + (c - 55)  # ord('A') - 10
        else:
            return -1
    return v


cdef cptr scan_escape(cptr p, cptr e) noexcept:
    # p just after a backslash; a \u high surrogate must be followed by a \u low surrogate
    cdef int cp, lo
    if p >= e:
        return NULL
    cdef unsigned char c = p[0]
    if (c == c'"' or c == c'\\' or c == c'/' or c == c'b' or c == c'f' or c == c'n' or c == c'r'
            or c == c't'):
        return p + 1
    if c != c'u':
        return NULL
    cp = hex4(p + 1, e)
    if cp < 0:
        return NULL
    p += 5
    if 0xD800 <= cp <= 0xDBFF:
        if e - p < 6 or p[0] != c'\\' or p[1] != c'u':
            return NULL
        lo = hex4(p + 2, e)
        if lo < 0xDC00 or lo > 0xDFFF:
            return NULL
        return p + 6
    if 0xDC00 <= cp <= 0xDFFF:
        return NULL
    return p


cdef cptr scan_utf8(cptr p, cptr e) noexcept:
    # One UTF-8 sequence starting at a byte >= 0x80 (RFC 3629: no overlongs, no surrogates)
    cdef unsigned char c = p[0], c1
    if c < 0xC2:
        return NULL
    if c < 0xE0:
        if e - p < 2 or (p[1] & 0xC0) != 0x80:
            return NULL
        return p + 2
    if c < 0xF0:
        if e - p < 3:
            return NULL
        c1 = p[1]
        if (c1 & 0xC0) != 0x80 or (p[2] & 0xC0) != 0x80:
            return NULL
        if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F):
            return NULL
        return p + 3
    if c < 0xF5:
        if e - p < 4:
            return NULL
        c1 = p[1]
        if (c1 & 0xC0) != 0x80 or (p[2] & 0xC0) != 0x80 or (p[3] & 0xC0) != 0x80:
            return NULL
        if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
            return NULL
        return p + 4
    return NULL


cdef inline cptr scan_str(cptr p, cptr e, bint* esc) noexcept:
    # p just after the opening quote; returns just after the closing quote, NULL when invalid;
    # sets esc when the string holds a backslash escape. Plain ASCII strings stay inline.
    p = pm_skip_plain(p, e)
    if p < e and p[0] == c'"':
        return p + 1
    return scan_str_rest(p, e, esc)


cdef cptr scan_str_rest(cptr p, cptr e, bint* esc) noexcept:
    # scan_str after its first stop at an escape, a control byte or a non-ASCII byte
    cdef unsigned char c
    while True:
        if p >= e:
            return NULL
        c = p[0]
        if c == c'"':
            return p + 1
        if c == c'\\':
            esc[0] = True
            p = scan_escape(p + 1, e)
        elif c < 0x20:
            return NULL
        else:
            p = scan_utf8(p, e)
        if p == NULL:
            return NULL
        p = pm_skip_plain(p, e)


cdef Py_ssize_t decode_str(cptr p, cptr e, char* out) noexcept:
    # Unescape a string body already validated by scan_str into out (never longer than e - p)
    cdef Py_ssize_t n = 0
    cdef unsigned char c
    cdef int cp
    while p < e:
        c = p[0]
        if c != c'\\':
            out[n] = <char>c
            n += 1
            p += 1
            continue
        c = p[1]
        p += 2
        if c == c'u':
            cp = hex4(p, e)
            p += 4
            if 0xD800 <= cp <= 0xDBFF:
                cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(p + 2, e) - 0xDC00)
                p += 6
            if cp < 0x80:
                out[n] = <char>cp
                n += 1
            elif cp < 0x800:
                out[n] = <char>(0xC0 | (cp >> 6))
                out[n + 1] = <char>(0x80 | (cp & 0x3F))
                n += 2
            elif cp < 0x10000:
                out[n] = <char>(0xE0 | (cp >> 12))
                out[n + 1] = <char>(0x80 | ((cp >> 6) & 0x3F))
                out[n + 2] = <char>(0x80 | (cp & 0x3F))
                n += 3
            else:
                out[n] = <char>(0xF0 | (cp >> 18))
                out[n + 1] = <char>(0x80 | ((cp >> 12) & 0x3F))
                out[n + 2] = <char>(0x80 | ((cp >> 6) & 0x3F))
                out[n + 3] = <char>(0x80 | (cp & 0x3F))
                n += 4
        elif c == c'b':
            out[n] = 8
            n += 1
        elif c == c'f':
            out[n] = 12
            n += 1
        elif c == c'n':
            out[n] = 10
            n += 1
        elif c == c'r':
            out[n] = 13
            n += 1
        elif c == c't':
            out[n] = 9
            n += 1
        else:  # '"', '\\' or '/' stand for themselves
            out[n] = <char>c
            n += 1
    return n


cdef inline bint is_digit(unsigned char c) noexcept:
    return c'0' <= c <= c'9'


cdef cptr scan_number(cptr p, cptr e) noexcept:
    # -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    if p[0] == c'-':
        p += 1
        if p >= e:
            return NULL
    if p[0] == c'0':
        p += 1
    elif is_digit(p[0]):
        p += 1
        while p < e and is_digit(p[0]):
            p += 1
    else:
        return NULL
    if p < e and p[0] == c'.':
        p += 1
        if p >= e or not is_digit(p[0]):
            return NULL
        while p < e and is_digit(p[0]):
            p += 1
    if p < e and (p[0] == c'e' or p[0] == c'E'):
        p += 1
        if p < e and (p[0] == c'+' or p[0] == c'-'):
            p += 1
        if p >= e or not is_digit(p[0]):
            return NULL
        while p < e and is_digit(p[0]):
            p += 1
    return p


cdef inline cptr scan_literal(cptr p, cptr e, const char* word, Py_ssize_t n) noexcept:
    if e - p < n or memcmp(p, word, n) != 0:
        return NULL
    return p + n


cdef cptr scan_value(pm_stage_t* s, cptr p, int depth) noexcept:
    # Any JSON value at p; depth is the value's own depth if it is a container
    cdef cptr e = s.end
    cdef bint esc = False
    if p >= e:
        return NULL
    cdef unsigned char c = p[0]
    if c == c'"':
        return scan_str(p + 1, e, &esc)
    if c == c'{':
        return scan_object(s, p + 1, depth)
    if c == c'[':
        return scan_array(s, p + 1, depth)
    if c == c'-' or is_digit(c):
        return scan_number(p, e)
    if c == c't':
        return scan_literal(p, e, b"true", 4)
    if c == c'f':
        return scan_literal(p, e, b"false", 5)
    if c == c'n':
        return scan_literal(p, e, b"null", 4)
    return NULL


cdef cptr scan_object(pm_stage_t* s, cptr p, int depth) noexcept:
    # p just after '{' of an object nobody reads
    cdef cptr e = s.end
    cdef bint esc = False
    if depth > PM_MAX_JSON_DEPTH:
        return NULL
    p = skip_ws(p, e)
    if p < e and p[0] == c'}':
        return p + 1
    while True:
        if p >= e or p[0] != c'"':
            return NULL
        p = scan_str(p + 1, e, &esc)
        if p == NULL:
            return NULL
        p = skip_ws(p, e)
        if p >= e or p[0] != c':':
            return NULL
        p = scan_value(s, skip_ws(p + 1, e), depth + 1)
        if p == NULL:
            return NULL
        p = skip_ws(p, e)
        if p >= e:
            return NULL
        if p[0] == c'}':
            return p + 1
        if p[0] != c',':
            return NULL
        p = skip_ws(p + 1, e)


cdef cptr scan_array(pm_stage_t* s, cptr p, int depth) noexcept:
    # p just after '[' of an array nobody reads
    cdef cptr e = s.end
    if depth > PM_MAX_JSON_DEPTH:
        return NULL
    p = skip_ws(p, e)
    if p < e and p[0] == c']':
        return p + 1
    while True:
        p = scan_value(s, p, depth + 1)
        if p == NULL:
            return NULL
        p = skip_ws(p, e)
        if p >= e:
            return NULL
        if p[0] == c']':
            return p + 1
        if p[0] != c',':
            return NULL
        p = skip_ws(p + 1, e)
