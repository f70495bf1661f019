# cython: language_level=3
"""Compiled core of pm_ws: exact number parsing, the frame dispatcher, L2 books and top-of-book rows.

One pass over a frame's bytes validates the whole JSON text (RFC 8259, depth <= 32) and stages
every recognised field into reusable C buffers; only then are the staged events applied, so a
frame that is not valid JSON changes nothing. Members in the server's usual order and spelling
take a fast path that checks each key as it goes and hands the rest of an object to the generic
scanner on the first surprise. Behaviour is the contract stated by the pure
twin ``_core_py`` (its docstring and the shared tests); the C layout lives in ``_core_c.pxd``.

Compiler directives that depend on the build mode (bounds and wraparound checks, C division)
are set by setup.py, so a ``PM_WS_CYTHON_DEBUG=1`` build really turns the checks back on.
"""

cimport cython
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_1BYTE_DATA, PyUnicode_CheckExact, PyUnicode_GET_LENGTH
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcmp, memcpy, memmove, memset

import orjson

from pm_ws.errors import CapacityError, ParseError
from pm_ws.row import SEEN_MARKET_ID_MAX, SEEN_MARKETS_MAX, STAT_KEYS, Top

__all__ = ["parse_price", "parse_size", "price_to_cents", "BookStore", "Dispatcher"]

cdef extern from *:
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif

    /* First byte at or after p that ends a plain run inside a JSON string: a quote, a
       backslash, a control byte or a non-ASCII byte; e when there is none. */
    static inline const unsigned char* pm_skip_plain(const unsigned char* p, const unsigned char* e) {
    #if defined(__SSE2__)
        const __m128i quote = _mm_set1_epi8('"');
        const __m128i bslash = _mm_set1_epi8('\\\\');
        const __m128i space = _mm_set1_epi8(0x20);
        while (e - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i*)p);
            /* signed compare: bytes >= 0x80 are negative, so "< 0x20" also catches non-ASCII */
            __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                       _mm_cmplt_epi8(v, space));
            int mask = _mm_movemask_epi8(hit);
            if (mask) return p + __builtin_ctz((unsigned)mask);
            p += 16;
        }
    #endif
        while (p < e && *p != '"' && *p != '\\\\' && *p >= 0x20 && *p < 0x80) p++;
        return p;
    }

    /* Whether p[0..n) (n >= 16) holds no quote, backslash, control or non-ASCII byte. The loop
       count depends only on n, so a string as long as the previous one costs no mispredict. */
    static inline int pm_plain_span(const unsigned char* p, Py_ssize_t n) {
    #if defined(__SSE2__)
        const __m128i quote = _mm_set1_epi8('"');
        const __m128i bslash = _mm_set1_epi8('\\\\');
        const __m128i space = _mm_set1_epi8(0x20);
        __m128i acc = _mm_setzero_si128(), v;
        Py_ssize_t i;
        for (i = 0; i + 16 < n; i += 16) {
            v = _mm_loadu_si128((const __m128i*)(p + i));
            acc = _mm_or_si128(acc, _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                                 _mm_cmplt_epi8(v, space)));
        }
        v = _mm_loadu_si128((const __m128i*)(p + n - 16));  /* the last 16 bytes, overlapping */
        acc = _mm_or_si128(acc, _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                             _mm_cmplt_epi8(v, space)));
        return _mm_movemask_epi8(acc) == 0;
    #else
        return pm_skip_plain(p, p + n) == p + n;
    #endif
    }

    static inline uint64_t pm_load64(const unsigned char* p) {
        uint64_t w;
        memcpy(&w, p, 8);
        return w;
    }

    /* a[0..n) == b[0..n) for token ids: whole 16-byte blocks with a fixed trip count instead
       of a library call (an id of 77 bytes is 5 loads per side), differences OR-ed together */
    static inline int pm_same_bytes(const unsigned char* a, const unsigned char* b, Py_ssize_t n) {
        Py_ssize_t i;
    #if defined(__SSE2__)
        __m128i diff = _mm_setzero_si128();
        if (n < 16) return memcmp(a, b, (size_t)n) == 0;
        for (i = 0; i + 16 < n; i += 16)
            diff = _mm_or_si128(diff, _mm_xor_si128(_mm_loadu_si128((const __m128i*)(a + i)),
                                                    _mm_loadu_si128((const __m128i*)(b + i))));
        /* the last block, overlapping */
        diff = _mm_or_si128(diff, _mm_xor_si128(_mm_loadu_si128((const __m128i*)(a + n - 16)),
                                                _mm_loadu_si128((const __m128i*)(b + n - 16))));
        return _mm_movemask_epi8(_mm_cmpeq_epi8(diff, _mm_setzero_si128())) == 0xFFFF;
    #else
        uint64_t diff = 0;
        if (n < 8) return memcmp(a, b, (size_t)n) == 0;
        for (i = 0; i + 8 < n; i += 8) diff |= pm_load64(a + i) ^ pm_load64(b + i);
        diff |= pm_load64(a + n - 8) ^ pm_load64(b + n - 8);  /* the last word, overlapping */
        return diff == 0;
    #endif
    }

    /* Token ids are ~77 random decimal digits: the head, middle and tail words separate them
       well, and every hit is confirmed by a full compare anyway. */
    static inline uint64_t pm_hash(const unsigned char* p, Py_ssize_t n) {
        uint64_t a = 0, b = 0, c = 0, h;
        if (n >= 8) {
            a = pm_load64(p);
            b = pm_load64(p + (n >> 1) - 4);
            c = pm_load64(p + n - 8);
        } else if (n > 0) {
            memcpy(&a, p, (size_t)n);
        }
        h = (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full) ^ (c * 0x165667B19E3779F9ull) ^ (uint64_t)n;
        h ^= h >> 32;
        h *= 0xD6E8FEB86659FD93ull;
        h ^= h >> 32;
        return h;
    }
    """
    const unsigned char* pm_skip_plain(const unsigned char* p, const unsigned char* e) noexcept nogil
    bint pm_plain_span(const unsigned char* p, Py_ssize_t n) noexcept nogil
    uint64_t pm_hash(const unsigned char* p, Py_ssize_t n) noexcept nogil
    bint pm_same_bytes(const unsigned char* a, const unsigned char* b, Py_ssize_t n) noexcept nogil

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)

# Status of one recognised key (see set_status)
cdef enum:
    S_OK
    S_BAD_NUMBER
    S_BAD_SHAPE

cdef enum:
    KEY_SCRATCH = 96  # longest escaped key worth decoding: 16 chars, each written as \uXXXX
    RAW_KEY_SPAN = 24  # raw_key reads up to 18 bytes; keep a margin before the frame's end
    SIZE_INT_MAX = 9223372036854  # INT64_MAX // PM_SIZE_SCALE
    TS_MAX_DIGITS = 18
    NEAR_BEST = 8  # levels side_set walks from the best before searching by halves

# Keys each kind of object reads; a key outside its object's set is skipped like any unknown key
cdef uint32_t LEVEL_KEYS = (1 << K_PRICE) | (1 << K_SIZE)
cdef uint32_t ENTRY_REQUIRED = (1 << K_ASSET_ID) | (1 << K_PRICE) | (1 << K_SIZE) | (1 << K_SIDE)
cdef uint32_t ENTRY_OPTIONAL = (1 << K_BEST_BID) | (1 << K_BEST_ASK)
cdef uint32_t EVENT_KEYS = (1 << K_COUNT) - 1

cdef uint64_t POW10[7]
POW10[:] = [1, 10, 100, 1000, 10000, 100000, 1000000]


# ---------------------------------------------------------------------------------------------
# Exact numbers

cdef inline int64_t parse_units(cptr s, Py_ssize_t n, int decimals, uint64_t int_max,
                                uint64_t units_max) noexcept:
    # DIGITS? ('.' DIGITS?)? with >= 1 digit, <= decimals fractional digits, value <= units_max;
    # -1 for anything else
    cdef Py_ssize_t i = 0
    cdef uint64_t ip = 0, fp = 0, units
    cdef unsigned int d
    cdef int fd = 0
    while i < n:
        d = s[i] - 48  # ord('0') == 48; other bytes wrap above 9
        if d > 9:
            break
        ip = ip * 10 + d
        if ip > int_max:  # checked per digit, so ip * 10 never overflows
            return -1
        i += 1
    cdef Py_ssize_t int_digits = i
    if i < n:
        if s[i] != c'.':
            return -1
        i += 1
        while i < n:
            d = s[i] - 48
            if d > 9 or fd == decimals:
                return -1
            fp = fp * 10 + d
            fd += 1
            i += 1
    if int_digits + fd == 0:
        return -1
    units = ip * POW10[decimals] + fp * POW10[decimals - fd]
    if units > units_max:
        return -1
    return <int64_t>units


cdef inline PxRaw parse_price_c(cptr s, Py_ssize_t n) noexcept:
    return parse_units(s, n, PM_PRICE_DECIMALS, 1, PM_PRICE_SCALE)


cdef inline SzRaw parse_size_c(cptr s, Py_ssize_t n) noexcept:
    return parse_units(s, n, PM_SIZE_DECIMALS, SIZE_INT_MAX, INT64_MAX)


cdef inline int64_t parse_ts_c(cptr s, Py_ssize_t n) noexcept:
    # 1..18 ASCII digits, so no overflow is possible
    cdef int64_t v = 0
    cdef unsigned int d
    cdef Py_ssize_t i
    if n < 1 or n > TS_MAX_DIGITS:
        return -1
    for i in range(n):
        d = s[i] - 48
        if d > 9:
            return -1
        v = v * 10 + d
    return v


cdef str number_reason(cptr s, Py_ssize_t n, int decimals, bint is_price):
    # The first rule the text breaks, checked grammar -> precision -> range (as the twin does)
    cdef Py_ssize_t i, digits = 0, dots = 0, frac = 0
    for i in range(n):
        if s[i] == c'.':
            dots += 1
            if dots > 1:
                return "not a decimal number"
        elif c'0' <= s[i] <= c'9':
            digits += 1
            frac += dots
        else:
            return "not a decimal number"
    if digits == 0:
        return "not a decimal number"
    if frac > decimals:
        return f"more than {decimals} fractional digits"
    return "greater than 1" if is_price else "does not fit in int64"


cdef object text_bytes(object text, cptr* p, Py_ssize_t* n):
    # The bytes of a number's text, read in place; returns the object that owns them
    if PyUnicode_CheckExact(text) and PyUnicode_IS_COMPACT_ASCII(text):
        p[0] = <cptr>PyUnicode_1BYTE_DATA(text)
        n[0] = PyUnicode_GET_LENGTH(text)
        return text
    if isinstance(text, str):
        text = (<str>text).encode("utf-8", "surrogatepass")  # non-ASCII never parses; keep it visible
    elif isinstance(text, bytearray):
        p[0] = <cptr>PyByteArray_AS_STRING(text)
        n[0] = PyByteArray_GET_SIZE(text)
        return text
    elif not isinstance(text, bytes):
        raise TypeError(f"a number must be str, bytes or bytearray, was {type(text).__name__}")
    p[0] = <cptr>PyBytes_AS_STRING(text)
    n[0] = PyBytes_GET_SIZE(text)
    return text


cdef object number_error(str field, object text, cptr s, Py_ssize_t n, int decimals, bint is_price):
    shown = text if isinstance(text, str) else bytes(text).decode("latin-1")
    return ParseError(f"invalid {field} {shown[:40]!r}: {number_reason(s, n, decimals, is_price)}")


def parse_price(text):
    """Parse a decimal price into integer units of 1e-4, exactly.

    Parameters
    ----------
    text : str, bytes or bytearray
        ``DIGITS? ('.' DIGITS?)?`` with at least one digit, at most 4 fractional digits
        and a value of at most 1, for example ``"0.5"``, ``".48"``, ``"1"``.

    Returns
    -------
    int
        The price times ``PRICE_SCALE`` (``"0.514"`` -> 5140).

    Raises
    ------
    ParseError
        The text breaks the grammar, has a 5th fractional digit or is above 1.
    TypeError
        ``text`` is not str, bytes or bytearray.
    """
    cdef cptr s
    cdef Py_ssize_t n
    owner = text_bytes(text, &s, &n)  # keeps an encoded copy alive while s points into it
    cdef PxRaw v = parse_price_c(s, n)
    if v < 0:
        raise number_error("price", text, s, n, PM_PRICE_DECIMALS, True)
    return v


def parse_size(text):
    """Parse a decimal size into integer micro-shares (units of 1e-6), exactly.

    Parameters
    ----------
    text : str, bytes or bytearray
        ``DIGITS? ('.' DIGITS?)?`` with at least one digit and at most 6 fractional digits,
        for example ``"219.217767"`` or ``"100"``.

    Returns
    -------
    int
        The size times ``SIZE_SCALE``; always fits int64.

    Raises
    ------
    ParseError
        The text breaks the grammar, has a 7th fractional digit or overflows int64.
    TypeError
        ``text`` is not str, bytes or bytearray.
    """
    cdef cptr s
    cdef Py_ssize_t n
    owner = text_bytes(text, &s, &n)  # keeps an encoded copy alive while s points into it
    cdef SzRaw v = parse_size_c(s, n)
    if v < 0:
        raise number_error("size", text, s, n, PM_SIZE_DECIMALS, False)
    return v


def price_to_cents(text):
    """Parse a price that must be a whole number of cents, for code ported from cent-based bots.

    Parameters
    ----------
    text : str, bytes or bytearray
        A price as accepted by :func:`parse_price`.

    Returns
    -------
    int
        The price in cents (``"0.29"`` -> 29, exactly).

    Raises
    ------
    ParseError
        The text is not a valid price, or the price is not a whole cent (``"0.005"``).
    TypeError
        ``text`` is not str, bytes or bytearray.
    """
    cdef PxRaw v = parse_price(text)
    if v % 100:
        shown = text if isinstance(text, str) else bytes(text).decode("latin-1")
        raise ParseError(f"invalid price {shown[:40]!r}: not a whole cent")
    return v // 100


# ---------------------------------------------------------------------------------------------
# JSON scanner: validates RFC 8259 text and stages the keys pm_ws reads

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
    if depth > PM_MAX_DEPTH:
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
    if depth > PM_MAX_DEPTH:
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


cdef inline int key_of(const char* k, Py_ssize_t n) noexcept:
    # The recognised key spelled by k[:n] (after unescaping), else K_OTHER
    if n == 4:
        if memcmp(k, b"size", 4) == 0:
            return K_SIZE
        if memcmp(k, b"side", 4) == 0:
            return K_SIDE
        if memcmp(k, b"bids", 4) == 0:
            return K_BIDS
        if memcmp(k, b"asks", 4) == 0:
            return K_ASKS
    elif n == 5:
        if memcmp(k, b"price", 5) == 0:
            return K_PRICE
    elif n == 8:
        if memcmp(k, b"asset_id", 8) == 0:
            return K_ASSET_ID
        if memcmp(k, b"best_bid", 8) == 0:
            return K_BEST_BID
        if memcmp(k, b"best_ask", 8) == 0:
            return K_BEST_ASK
    elif n == 9:
        if memcmp(k, b"timestamp", 9) == 0:
            return K_TIMESTAMP
        if memcmp(k, b"tick_size", 9) == 0:
            return K_TICK_SIZE
    elif n == 10:
        if memcmp(k, b"event_type", 10) == 0:
            return K_EVENT_TYPE
    elif n == 13:
        if memcmp(k, b"price_changes", 13) == 0:
            return K_PRICE_CHANGES
        if memcmp(k, b"new_tick_size", 13) == 0:
            return K_NEW_TICK_SIZE
    elif n == 16:
        if memcmp(k, b"last_trade_price", 16) == 0:
            return K_LAST_TRADE_PRICE
    return K_OTHER


cdef inline cptr raw_key(cptr p, int* k) noexcept:
    # Fast path for a key written plainly: p just after its opening quote, at least
    # RAW_KEY_SPAN bytes readable. Returns just after the closing quote with the key in k, or
    # NULL when the bytes spell no key pm_ws knows (the caller then scans the key generically)
    cdef unsigned char c = p[0]
    if c == c'p':
        if memcmp(p, b'price"', 6) == 0:
            k[0] = K_PRICE
            return p + 6
        if memcmp(p, b'price_changes"', 14) == 0:
            k[0] = K_PRICE_CHANGES
            return p + 14
    elif c == c's':
        if memcmp(p, b'size"', 5) == 0:
            k[0] = K_SIZE
            return p + 5
        if memcmp(p, b'side"', 5) == 0:
            k[0] = K_SIDE
            return p + 5
    elif c == c'a':
        if memcmp(p, b'asset_id"', 9) == 0:
            k[0] = K_ASSET_ID
            return p + 9
        if memcmp(p, b'asks"', 5) == 0:
            k[0] = K_ASKS
            return p + 5
    elif c == c'b':
        if memcmp(p, b'best_bid"', 9) == 0:
            k[0] = K_BEST_BID
            return p + 9
        if memcmp(p, b'best_ask"', 9) == 0:
            k[0] = K_BEST_ASK
            return p + 9
        if memcmp(p, b'bids"', 5) == 0:
            k[0] = K_BIDS
            return p + 5
    elif c == c'h':
        if memcmp(p, b'hash"', 5) == 0:
            k[0] = K_OTHER
            return p + 5
    elif c == c'm':
        if memcmp(p, b'market"', 7) == 0:
            k[0] = K_OTHER
            return p + 7
    elif c == c't':
        if memcmp(p, b'timestamp"', 10) == 0:
            k[0] = K_TIMESTAMP
            return p + 10
        if memcmp(p, b'tick_size"', 10) == 0:
            k[0] = K_TICK_SIZE
            return p + 10
    elif c == c'e':
        if memcmp(p, b'event_type"', 11) == 0:
            k[0] = K_EVENT_TYPE
            return p + 11
    elif c == c'l':
        if memcmp(p, b'last_trade_price"', 17) == 0:
            k[0] = K_LAST_TRADE_PRICE
            return p + 17
    elif c == c'n':
        if memcmp(p, b'new_tick_size"', 14) == 0:
            k[0] = K_NEW_TICK_SIZE
            return p + 14
    return NULL


cdef inline int kind_of(const char* v, Py_ssize_t n) noexcept:
    if n == 4 and memcmp(v, b"book", 4) == 0:
        return EV_BOOK
    if n == 12:
        if memcmp(v, b"price_change", 12) == 0:
            return EV_PRICE_CHANGE
        if memcmp(v, b"best_bid_ask", 12) == 0:
            return EV_BEST_BID_ASK
    if n == 16:
        if memcmp(v, b"last_trade_price", 16) == 0:
            return EV_LAST_TRADE_PRICE
        if memcmp(v, b"tick_size_change", 16) == 0:
            return EV_TICK_SIZE_CHANGE
    if n == 10 and memcmp(v, b"new_market", 10) == 0:
        return EV_NEW_MARKET
    if n == 15 and memcmp(v, b"market_resolved", 15) == 0:
        return EV_MARKET_RESOLVED
    return EV_UNKNOWN


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


cdef void store_field(pm_fields_t* f, int k, const char* v, Py_ssize_t n) noexcept:
    # Parse string value v[:n] of recognised key k into f
    cdef int64_t x
    cdef cptr u = <cptr>v
    if k == K_ASSET_ID:
        f.asset = v
        f.asset_n = n
        f.asset_hash = pm_hash(u, n)
        set_status(f, k, S_OK)
        return
    if k == K_EVENT_TYPE:
        f.val[k] = kind_of(v, n)
        set_status(f, k, S_OK)
        return
    if k == K_SIDE:
        if n == 3 and memcmp(v, b"BUY", 3) == 0:
            f.val[k] = PM_SIDE_BUY
        elif n == 4 and memcmp(v, b"SELL", 4) == 0:
            f.val[k] = PM_SIDE_SELL
        else:
            set_status(f, k, S_BAD_SHAPE)
            return
        set_status(f, k, S_OK)
        return
    if k == K_TIMESTAMP:
        x = parse_ts_c(u, n)
    elif k == K_SIZE:
        x = parse_size_c(u, n)
    elif k == K_LAST_TRADE_PRICE and n == 0:
        f.val[k] = -1  # "" = no trade yet
        set_status(f, k, S_OK)
        return
    else:
        x = parse_price_c(u, n)
        if x == 0 and (k == K_TICK_SIZE or k == K_NEW_TICK_SIZE):
            x = -1
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
    if k >= K_TIMESTAMP and k != K_SIDE:  # a number: most are short runs of digits and dots
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


cdef int push_level(pm_stage_t* s, const pm_fields_t* lf) noexcept:
    cdef pm_level_t* q
    cdef Py_ssize_t cap
    if s.lv_n == s.lv_cap:
        cap = s.lv_cap * 2 if s.lv_cap else 64
        q = <pm_level_t*>PyMem_Realloc(s.lv, cap * sizeof(pm_level_t))
        if q == NULL:
            s.nomem = 1
            return -1
        s.lv = q
        s.lv_cap = cap
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
    cdef pm_fields_t lf
    if depth > PM_MAX_DEPTH:
        return NULL
    p = skip_ws(p, e)
    if p < e and p[0] == c']':
        p += 1
    else:
        while True:
            if p >= e:
                return NULL
            if p[0] == c'{':
                if depth + 1 > PM_MAX_DEPTH:
                    return NULL
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
    f.off[k - K_BIDS] = first
    f.cnt[k - K_BIDS] = (s.pc_n if entries else s.lv_n) - first
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
    if k >= K_BIDS:
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


# Fast paths for the server's usual layout: compact JSON, keys in the order the server writes
# them, plain values. Each one either consumes a whole member (or element) exactly as the
# generic scanner would, or returns NULL having changed nothing, and the caller scans that
# member generically from the same position: a surprise costs one retry, never a wrong result.

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


cdef inline cptr quoted_units(cptr p, cptr e, int decimals, uint64_t int_max, uint64_t units_max,
                              int64_t* out) noexcept:
    # One pass over a valid plain number string: p just after the opening quote; returns just
    # after the closing quote with the units in out, or NULL for anything else (the caller then
    # takes the general route, which also decides bad_number)
    cdef uint64_t ip = 0, fp = 0, units
    cdef unsigned int d
    cdef int fd = 0
    cdef cptr start = p
    while p < e:
        d = p[0] - 48  # ord('0') == 48
        if d > 9:
            break
        ip = ip * 10 + d
        if ip > int_max:
            return NULL
        p += 1
    cdef Py_ssize_t int_digits = p - start
    if p < e and p[0] == c'.':
        p += 1
        while p < e:
            d = p[0] - 48
            if d > 9:
                break
            if fd == decimals:
                return NULL
            fp = fp * 10 + d
            fd += 1
            p += 1
    if p >= e or p[0] != c'"' or int_digits + fd == 0:
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
    # at most TS_MAX_DIGITS digits are read (19 may overflow): a longer run stops at a digit,
    # not at the closing quote, and is refused below
    cdef cptr stop = p + TS_MAX_DIGITS if e - p > TS_MAX_DIGITS else e
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


cdef inline cptr fast_price(cptr p, cptr e, int k, pm_fields_t* f) noexcept:
    # p at the opening quote of price key k's value (never last_trade_price, which may be "")
    cdef cptr q
    if p >= e or p[0] != c'"':
        return NULL
    q = NULL
    if e - p >= 3 and p[1] == c'0' and p[2] == c'.':
        q = quoted_fraction(p + 3, e, &f.val[k])
    if q == NULL:
        q = quoted_units(p + 1, e, PM_PRICE_DECIMALS, 1, PM_PRICE_SCALE, &f.val[k])
    if q == NULL or (f.val[k] == 0 and (k == K_TICK_SIZE or k == K_NEW_TICK_SIZE)):
        return slow_number(p + 1, e, k, f)  # also records a zero tick as bad_number
    set_fresh_ok(f, k)
    return q


cdef inline cptr fast_size(cptr p, cptr e, pm_fields_t* f) noexcept:
    cdef cptr q
    if p >= e or p[0] != c'"':
        return NULL
    q = quoted_units(p + 1, e, PM_SIZE_DECIMALS, SIZE_INT_MAX, INT64_MAX, &f.val[K_SIZE])
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


cdef int control_word(cptr b, Py_ssize_t n) noexcept:
    # Counter for a non-JSON text frame (already stripped), matched ASCII case-insensitively
    if ascii_iequal(b, n, b"PONG", 4):
        return ST_CTL_PONG
    if ascii_iequal(b, n, b"INVALID OPERATION", 17):
        return ST_CTL_INVALID_OPERATION
    if ascii_iequal(b, n, b"NO NEW ASSETS", 13):
        return ST_CTL_NO_NEW_ASSETS
    return ST_REJ_UNKNOWN_TEXT


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


# ---------------------------------------------------------------------------------------------
# Book sides: sorted C arrays, worst -> best (bids ascending, asks descending)

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


cdef inline void touch_row(int64_t* row, const pm_book_t* b, const pm_fields_t* f, int64_t recv_ts_ns) noexcept:
    # Recompute the top of book from the book and stamp the row (exactly once per token per event).
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
    if f.has & (1 << K_TIMESTAMP):
        row[PM_EXCH_TS_MS] = f.val[K_TIMESTAMP]
    row[PM_RECV_TS_NS] = recv_ts_ns
    row[PM_SEQ] += 1


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


cdef inline void required_keys(int kind, uint32_t* required, uint32_t* optional) noexcept:
    optional[0] = 1 << K_TIMESTAMP
    if kind == EV_BOOK:
        required[0] = (1 << K_ASSET_ID) | (1 << K_BIDS) | (1 << K_ASKS)
        optional[0] |= (1 << K_TICK_SIZE) | (1 << K_LAST_TRADE_PRICE)
    elif kind == EV_PRICE_CHANGE:
        required[0] = 1 << K_PRICE_CHANGES
    elif kind == EV_LAST_TRADE_PRICE:
        required[0] = (1 << K_ASSET_ID) | (1 << K_PRICE) | (1 << K_SIZE)
        optional[0] |= 1 << K_SIDE
    elif kind == EV_TICK_SIZE_CHANGE:
        required[0] = (1 << K_ASSET_ID) | (1 << K_NEW_TICK_SIZE)
    else:  # EV_BEST_BID_ASK
        required[0] = (1 << K_ASSET_ID) | (1 << K_BEST_BID) | (1 << K_BEST_ASK)


cdef int validate_event(pm_stage_t* s, const pm_fields_t* f, int kind) noexcept:
    # S_OK, S_BAD_SHAPE (rej_bad_event) or S_BAD_NUMBER; -1 out of memory.
    # Duplicate prices are only knowable once every price parsed, so a bad number wins
    cdef uint32_t required, optional
    cdef int status, dup
    required_keys(kind, &required, &optional)
    status = classify(f, required, optional)
    if kind == EV_BOOK and status == S_OK:
        dup = has_duplicate_price(s, s.lv + f.off[0], f.cnt[0])
        if dup == 0:
            dup = has_duplicate_price(s, s.lv + f.off[1], f.cnt[1])
        if dup < 0:
            return -1
        if dup:
            return S_BAD_SHAPE
    return status


# ---------------------------------------------------------------------------------------------
# Public classes

cdef bint token_view(object token_id, cptr* p, Py_ssize_t* n) noexcept:
    # Read an id's bytes in place; False when it cannot be an id (not str/bytes, not ASCII)
    if PyUnicode_CheckExact(token_id) and PyUnicode_IS_COMPACT_ASCII(token_id):
        p[0] = <cptr>PyUnicode_1BYTE_DATA(token_id)
        n[0] = PyUnicode_GET_LENGTH(token_id)
        return True
    if isinstance(token_id, bytes):
        p[0] = <cptr>PyBytes_AS_STRING(token_id)
        n[0] = PyBytes_GET_SIZE(token_id)
        return True
    return False


cdef bint valid_token(cptr p, Py_ssize_t n) noexcept:
    # 1..100 bytes of [0-9A-Za-z_.:-]
    cdef Py_ssize_t i
    cdef unsigned char c
    if n < 1 or n > PM_TOKEN_MAX:
        return False
    for i in range(n):
        c = p[i]
        if not (c'0' <= c <= c'9' or c'a' <= c <= c'z' or c'A' <= c <= c'Z'
                or c == c'_' or c == c'.' or c == c':' or c == c'-'):
            return False
    return True


@cython.final
@cython.auto_pickle(False)
cdef class BookStore:
    """Order books and top-of-book rows for up to ``capacity`` tokens.

    Parameters
    ----------
    capacity : int
        Number of token slots; fixed for the store's life.

    Raises
    ------
    ValueError
        ``capacity`` is below 1 (or above 2**28).
    """

    def __cinit__(self, Py_ssize_t capacity=1024):
        cdef Py_ssize_t size = 16
        if capacity < 1 or capacity > (1 << 28):
            raise ValueError(f"capacity must be at least 1 (and at most {1 << 28}), was {capacity}")
        self._capacity = capacity
        self._rows = <int64_t*>PyMem_Calloc(capacity * PM_N_FIELDS, sizeof(int64_t))
        self._books = <pm_book_t*>PyMem_Calloc(capacity, sizeof(pm_book_t))
        self._ids = <pm_token_t*>PyMem_Calloc(capacity, sizeof(pm_token_t))
        while size < 2 * capacity:
            size <<= 1
        self._table = <int32_t*>PyMem_Malloc(size * sizeof(int32_t))
        if not (self._rows and self._books and self._ids and self._table):
            raise MemoryError()
        memset(self._table, 0xFF, size * sizeof(int32_t))  # every cell -1
        self._mask = size - 1
        self._shape[0] = capacity
        self._shape[1] = PM_N_FIELDS
        self._strides[0] = PM_N_FIELDS * sizeof(int64_t)
        self._strides[1] = sizeof(int64_t)
        self._names = [None] * capacity
        self._resync = {}

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._books != NULL:
            for i in range(self._capacity):
                PyMem_Free(self._books[i].bids.lv)
                PyMem_Free(self._books[i].asks.lv)
        PyMem_Free(self._books)
        PyMem_Free(self._rows)
        PyMem_Free(self._ids)
        PyMem_Free(self._table)

    def __getbuffer__(self, Py_buffer* buf, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("BookStore.view is read-only")
        buf.buf = self._rows
        buf.obj = self
        buf.len = self._capacity * PM_N_FIELDS * sizeof(int64_t)
        buf.readonly = 1
        buf.itemsize = sizeof(int64_t)
        buf.format = NULL
        if flags & PyBUF_FORMAT:
            buf.format = b"q"
        buf.ndim = 2
        buf.shape = self._shape if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buf.strides = self._strides if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer* buf):
        pass

    @property
    def capacity(self):
        """Number of token slots."""
        return self._capacity

    @property
    def view(self):
        """Read-only ``memoryview`` of all rows: format ``"q"``, shape ``(capacity, N_FIELDS)``.

        Index it as ``view[slot, FIELD]``; ``numpy.asarray(view)`` gives an int64 array without
        copying. The buffer is the same for the store's whole life.

        .. warning:: values change under the reader whenever a frame is applied; read ``SEQ``
           before and after a multi-field read to detect a concurrent update.
        """
        return memoryview(self)

    cdef int32_t lookup(self, const char* p, Py_ssize_t n, uint64_t h) noexcept:
        # Slot of the id p[:n] with hash h, or -1; never allocates
        cdef Py_ssize_t i
        cdef int32_t slot
        cdef pm_token_t* t
        if n < 1 or n > PM_TOKEN_MAX:
            return -1
        i = <Py_ssize_t>(h & <uint64_t>self._mask)
        while True:
            slot = self._table[i]
            if slot < 0:
                return -1
            t = &self._ids[slot]
            if t.hash == h and t.n == n and pm_same_bytes(<cptr>t.id, <cptr>p, n):
                return slot
            i = (i + 1) & self._mask

    cdef int32_t _slot_of(self, object token_id) noexcept:
        cdef cptr p
        cdef Py_ssize_t n
        if not token_view(token_id, &p, &n):
            return -1
        return self.lookup(<const char*>p, n, pm_hash(p, n))

    def add(self, token_id):
        """Hold a token: give it the lowest free slot and a fresh row (SUBSCRIBING).

        Parameters
        ----------
        token_id : str or bytes
            1..100 ASCII characters of ``[0-9A-Za-z_.:-]``.

        Returns
        -------
        int
            The token's slot; a token already held keeps its slot and row.

        Raises
        ------
        ValueError
            The id is not a valid token id.
        CapacityError
            Every slot is taken.
        """
        cdef cptr p
        cdef Py_ssize_t n, i
        cdef int32_t slot
        cdef uint64_t h
        cdef int64_t* row
        if not (token_view(token_id, &p, &n) and valid_token(p, n)):
            raise ValueError(f"invalid token id {token_id!r}: need 1..{PM_TOKEN_MAX} characters of [0-9A-Za-z_.:-]")
        h = pm_hash(p, n)
        slot = self.lookup(<const char*>p, n, h)
        if slot >= 0:
            return slot
        if self._count >= self._capacity:
            raise CapacityError(f"BookStore is full: all {self._capacity} slots hold a token")
        slot = 0
        while self._ids[slot].n:
            slot += 1
        self._ids[slot].hash = h
        self._ids[slot].n = n
        memcpy(self._ids[slot].id, p, n)
        row = self._rows + slot * PM_N_FIELDS
        memset(row, 0, PM_N_FIELDS * sizeof(int64_t))
        row[PM_ASK_PX] = PM_PRICE_SCALE
        row[PM_STATE] = PM_SUBSCRIBING
        self._books[slot].bids.n = 0
        self._books[slot].asks.n = 0
        self._books[slot].books_name_tick = False
        self._books[slot].tick_unconfirmed = False
        i = <Py_ssize_t>(h & <uint64_t>self._mask)
        while self._table[i] >= 0:
            i = (i + 1) & self._mask
        self._table[i] = slot
        self._names[slot] = (<bytes>PyBytes_FromStringAndSize(<const char*>p, n)).decode("ascii")
        self._count += 1
        return slot

    cdef void _free_slot(self, int32_t slot) noexcept:
        # Remove slot from the table (backward-shift deletion keeps probe chains whole)
        cdef Py_ssize_t i, j, home
        cdef Py_ssize_t mask = self._mask
        i = <Py_ssize_t>(self._ids[slot].hash & <uint64_t>mask)
        while self._table[i] != slot:
            i = (i + 1) & mask
        j = i
        while True:
            self._table[i] = -1
            while True:
                j = (j + 1) & mask
                if self._table[j] < 0:
                    break
                home = <Py_ssize_t>(self._ids[self._table[j]].hash & <uint64_t>mask)
                # the entry at j may fill the hole at i unless its home lies cyclically in (i, j]
                if (i <= j and (i < home <= j)) or (i > j and (home > i or home <= j)):
                    continue
                self._table[i] = self._table[j]
                i = j
                break
            if self._table[j] < 0:
                break
        PyMem_Free(self._books[slot].bids.lv)
        PyMem_Free(self._books[slot].asks.lv)
        memset(&self._books[slot], 0, sizeof(pm_book_t))
        memset(self._rows + slot * PM_N_FIELDS, 0, PM_N_FIELDS * sizeof(int64_t))
        self._ids[slot].n = 0
        self._count -= 1

    def remove(self, token_id):
        """Stop holding a token: free its slot and book, zero its row. Unknown ids are ignored.

        Parameters
        ----------
        token_id : str or bytes
            The token to drop.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot >= 0:
            self._free_slot(slot)
            self._resync.pop(self._names[slot], None)  # a removed token leaves the resync queue
            self._names[slot] = None

    def slot(self, token_id):
        """Return the slot (row index in ``view``) of a held token.

        Raises
        ------
        KeyError
            The token is not held.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        return slot

    def __contains__(self, token_id):
        return self._slot_of(token_id) >= 0

    def __len__(self):
        return self._count

    def tokens(self):
        """Return the held token ids, in slot order."""
        return [name for name in self._names if name is not None]

    def top(self, token_id):
        """Return a held token's row as a :class:`pm_ws.row.Top`.

        Raises
        ------
        KeyError
            The token is not held.
        """
        cdef int32_t slot = self._slot_of(token_id)
        cdef int64_t* row
        cdef Py_ssize_t i
        if slot < 0:
            raise KeyError(token_id)
        row = self._rows + slot * PM_N_FIELDS
        return Top.from_row([row[i] for i in range(PM_N_FIELDS)])

    def book(self, token_id, depth=10):
        """Return a held token's levels, best first.

        Parameters
        ----------
        token_id : str or bytes
            The token.
        depth : int or None
            At most this many levels per side; None for all.

        Returns
        -------
        tuple of (list of (int, int), list of (int, int))
            ``(bids, asks)``, each a list of ``(price, size)`` in pm_ws units, best level first.

        Raises
        ------
        KeyError
            The token is not held.
        ValueError
            ``depth`` is negative.
        """
        cdef int32_t slot = self._slot_of(token_id)
        if slot < 0:
            raise KeyError(token_id)
        cdef Py_ssize_t limit = -1 if depth is None else depth
        if limit < 0 and depth is not None:
            raise ValueError(f"depth must be None or at least 0, was {depth}")
        return (side_list(&self._books[slot].bids, limit), side_list(&self._books[slot].asks, limit))

    def mark_stale(self, token_ids):
        """Mark held tokens STALE (after a disconnect): bump EPOCH and SEQ, keep the levels and TICK.

        A tick change may have been missed meanwhile: a token whose books have carried ``tick_size``
        turns LIVE again only on a ``book`` that carries it (a snapshot), not on a post-trade refresh
        without one (that refresh still replaces the levels, the row stays STALE); a
        ``tick_size_change`` confirms the tick, and the next book of any kind turns it LIVE.

        Parameters
        ----------
        token_ids : iterable of str or bytes
            Tokens to mark; ids not held are ignored.
        """
        cdef int32_t slot
        cdef int64_t* row
        for token_id in token_ids:
            slot = self._slot_of(token_id)
            if slot >= 0:
                row = self._rows + slot * PM_N_FIELDS
                row[PM_STATE] = PM_STALE
                self._books[slot].tick_unconfirmed = self._books[slot].books_name_tick
                row[PM_EPOCH] += 1
                row[PM_SEQ] += 1


cdef list side_list(const pm_side_t* side, Py_ssize_t limit):
    cdef Py_ssize_t i, n = side.n
    if 0 <= limit < n:
        n = limit
    return [(side.lv[side.n - 1 - i].px, side.lv[side.n - 1 - i].sz) for i in range(n)]


@cython.final
@cython.auto_pickle(False)
cdef class Dispatcher:
    """Apply market-channel frames to a :class:`BookStore` and count what happened.

    Parameters
    ----------
    store : BookStore
        The books and rows to update.
    on_event : callable or None
        Called as ``on_event(event_type, payload)`` for ``new_market`` (deduplicated) and
        ``market_resolved`` events, and for trades when ``emit_trades`` is set.
    emit_trades : bool
        Also hand every applied ``last_trade_price`` to ``on_event``.
    max_frame_bytes : int
        Frames longer than this are rejected unread.

    Notes
    -----
    ``on_event`` runs in the middle of a frame, after the events before it were applied. It may
    feed this dispatcher again (that frame is staged apart and applied at once) or change the
    store; the rest of the outer frame then applies to the store as it finds it. An exception
    raised by ``on_event`` propagates out of ``feed`` and the rest of that frame is not applied:
    keep the callback exception-free (``MarketClient`` wraps its own and counts failures).
    """

    def __cinit__(self, BookStore store not None, *, on_event=None, bint emit_trades=False,
                  Py_ssize_t max_frame_bytes=16 * 1024 * 1024):
        cdef Py_ssize_t cells = store._capacity
        self.store = store
        self._on_event = on_event
        self._emit_trades = emit_trades
        self._max_frame_bytes = max_frame_bytes
        self._mark = <int32_t*>PyMem_Malloc(cells * sizeof(int32_t))
        self._touched = <int32_t*>PyMem_Malloc(cells * sizeof(int32_t))
        self._last_entry = <Py_ssize_t*>PyMem_Malloc(cells * sizeof(Py_ssize_t))
        if not (self._mark and self._touched and self._last_entry):
            raise MemoryError()
        memset(self._mark, 0xFF, cells * sizeof(int32_t))  # every slot -1
        self._seen_markets = {}

    def __dealloc__(self):
        PyMem_Free(self._mark)
        PyMem_Free(self._touched)
        PyMem_Free(self._last_entry)
        free_stage(&self._st)

    @cython.binding(False)  # a method descriptor: ~5 ns less per call than a cyfunction
    @cython.embedsignature.format("clinic")  # keeps inspect.signature() working
    def feed(self, frame, int64_t recv_ts_ns=0):
        """Apply one WebSocket text frame.

        Parameters
        ----------
        frame : str, bytes, bytearray or memoryview
            The frame as received; an ASCII ``str`` is read in place.
        recv_ts_ns : int
            Receive time (``time.time_ns()``) stamped into every row the frame changes.

        Returns
        -------
        int
            Number of events applied (the ``ev_*`` counters this frame incremented).

        Raises
        ------
        TypeError
            ``frame`` has another type.
        """
        if PyUnicode_CheckExact(frame) and PyUnicode_IS_COMPACT_ASCII(frame):
            return self._feed_c(<cptr>PyUnicode_1BYTE_DATA(frame), PyUnicode_GET_LENGTH(frame), recv_ts_ns)
        if not PyBytes_CheckExact(frame):
            if isinstance(frame, str):
                frame = (<str>frame).encode("utf-8", "surrogatepass")  # lone surrogates fail validation
            elif isinstance(frame, (bytes, bytearray, memoryview)):
                # a copy: an on_event callback may write into a mutable buffer mid-frame
                frame = bytes(frame)
            else:
                raise TypeError(f"a frame must be str, bytes, bytearray or memoryview, was {type(frame).__name__}")
        return self._feed_c(<cptr>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), recv_ts_ns)

    cdef Py_ssize_t _feed_c(self, cptr data, Py_ssize_t n, int64_t recv_ts_ns) except -1:
        cdef cptr b = data, e = data + n
        cdef pm_stage_t nested
        self._stats[ST_FRAMES] += 1
        self._stats[ST_BYTES] += n
        if n > self._max_frame_bytes:
            self._stats[ST_REJ_OVERSIZED] += 1
            return 0
        b = skip_ws(b, e)
        while e > b and (e - 1)[0] in b" \t\n\r":
            e -= 1
        if b < e and (b[0] == c'{' or b[0] == c'['):
            if self._cur == NULL:
                return self._scan_apply(&self._st, b, e, recv_ts_ns)
            # on_event fed a frame while another is being applied: stage it apart, the outer
            # frame's staged events are not applied yet
            memset(&nested, 0, sizeof(pm_stage_t))
            try:
                return self._scan_apply(&nested, b, e, recv_ts_ns)
            finally:
                free_stage(&nested)
        self._stats[control_word(b, e - b)] += 1
        return 0

    cdef Py_ssize_t _scan_apply(self, pm_stage_t* st, cptr b, cptr e, int64_t recv_ts_ns) except -1:
        cdef int r = scan_frame(st, b, e)
        cdef pm_stage_t* outer = self._cur
        if r < 0:
            raise MemoryError()
        if r == 0:
            self._stats[ST_REJ_INVALID_JSON] += 1
            return 0
        self._cur = st
        try:
            return self._apply_all(recv_ts_ns)
        finally:
            self._cur = outer

    cdef Py_ssize_t _apply_all(self, int64_t recv_ts_ns) except -1:
        cdef Py_ssize_t i, applied = 0
        cdef pm_event_t* e
        cdef int kind, status
        cdef pm_stage_t* st = self._cur
        for i in range(st.ev_n):
            e = &st.ev[i]
            if not e.is_object:
                self._stats[ST_REJ_BAD_EVENT] += 1
                continue
            kind = <int>e.f.val[K_EVENT_TYPE] if e.f.has & (1 << K_EVENT_TYPE) else EV_UNKNOWN
            if kind == EV_UNKNOWN:
                self._stats[ST_REJ_UNKNOWN_EVENT] += 1
                continue
            if kind >= EV_NEW_MARKET:
                applied += self._apply_cold(e, kind)
                continue
            status = validate_event(st, &e.f, kind)
            if status < 0:
                raise MemoryError()
            if status == S_BAD_SHAPE:
                self._stats[ST_REJ_BAD_EVENT] += 1
            elif status == S_BAD_NUMBER:
                self._stats[ST_REJ_BAD_NUMBER] += 1
            elif kind == EV_PRICE_CHANGE:
                applied += self._apply_price_change(e, recv_ts_ns)
            elif kind == EV_BOOK:
                applied += self._apply_book(e, recv_ts_ns)
            elif kind == EV_LAST_TRADE_PRICE:
                applied += self._apply_last_trade(e, recv_ts_ns)
            elif kind == EV_TICK_SIZE_CHANGE:
                applied += self._apply_tick_size(e, recv_ts_ns)
            else:
                applied += self._apply_best_bid_ask(e)
        return applied

    cdef int32_t _slot(self, const pm_fields_t* f) noexcept:
        # Slot of the event's asset_id; counts skip_unsubscribed when nobody holds it
        cdef int32_t slot = self.store.lookup(f.asset, f.asset_n, f.asset_hash)
        if slot < 0:
            self._stats[ST_SKIP_UNSUBSCRIBED] += 1
        return slot

    cdef void _count(self, int stat) noexcept:
        self._stats[stat] += 1
        self._stats[ST_EVENTS] += 1

    cdef int _apply_book(self, pm_event_t* e, int64_t recv_ts_ns) except -1:
        cdef pm_fields_t* f = &e.f
        cdef int32_t slot = self._slot(f)
        cdef pm_book_t* book
        cdef int64_t* row
        if slot < 0:
            return 0
        book = &self.store._books[slot]
        if (side_load(&book.bids, self._cur.lv + f.off[0], f.cnt[0], True) < 0
                or side_load(&book.asks, self._cur.lv + f.off[1], f.cnt[1], False) < 0):
            raise MemoryError()
        row = self.store._rows + slot * PM_N_FIELDS
        if f.has & (1 << K_TICK_SIZE):
            row[PM_TICK] = f.val[K_TICK_SIZE]
            book.books_name_tick = True
            book.tick_unconfirmed = False
        if f.has & (1 << K_LAST_TRADE_PRICE) and f.val[K_LAST_TRADE_PRICE] >= 0:
            row[PM_LAST_PX] = f.val[K_LAST_TRADE_PRICE]
        row[PM_STATE] = PM_STALE if book.tick_unconfirmed else PM_LIVE
        row[PM_EPOCH] += 1
        touch_row(row, book, f, recv_ts_ns)
        self._count(ST_EV_BOOK)
        if is_crossed(book):
            row[PM_STATE] = PM_INVALID
            row[PM_MISMATCHES] += 1
            self._stats[ST_CROSSED_BOOK] += 1
            self._queue_resync(slot)
        return 1

    cdef int _apply_price_change(self, pm_event_t* e, int64_t recv_ts_ns) except -1:
        cdef BookStore store = self.store
        cdef pm_fields_t* f = &e.f
        cdef Py_ssize_t i, t, nt = 0, first = f.off[2], end = f.off[2] + f.cnt[2]
        cdef pm_entry_t* en
        cdef int32_t slot
        cdef int64_t* row
        cdef pm_book_t* book
        cdef bint any_held = False
        cdef int failed = 0
        for i in range(first, end):
            en = &self._cur.pc[i]
            slot = store.lookup(en.asset, en.asset_n, en.asset_hash)
            if slot < 0:
                continue
            any_held = True
            if store._rows[slot * PM_N_FIELDS + PM_STATE] != PM_LIVE:
                self._stats[ST_SKIP_NOT_LIVE] += 1
                continue
            book = &store._books[slot]
            if en.side == PM_SIDE_BUY:
                failed = side_set(&book.bids, en.px, en.sz, True)
            else:
                failed = side_set(&book.asks, en.px, en.sz, False)
            t = self._mark[slot]
            if t < 0:
                self._mark[slot] = <int32_t>nt
                self._touched[nt] = slot
                t = nt
                nt += 1
            self._last_entry[t] = i
            if failed:
                break
        for t in range(nt):
            self._mark[self._touched[t]] = -1
        if failed:
            raise MemoryError()
        if not any_held:
            self._stats[ST_SKIP_UNSUBSCRIBED] += 1
            return 0
        self._count(ST_EV_PRICE_CHANGE)
        for t in range(nt):
            slot = self._touched[t]
            book = &store._books[slot]
            row = store._rows + slot * PM_N_FIELDS
            touch_row(row, book, f, recv_ts_ns)
            en = &self._cur.pc[self._last_entry[t]]
            if en.best_bid >= 0 and en.best_ask >= 0 and (
                    en.best_bid != best_bid_px(book) or en.best_ask != best_ask_px(book)):
                row[PM_STATE] = PM_INVALID
                row[PM_MISMATCHES] += 1
                self._stats[ST_CHECKSUM_MISMATCH] += 1
                self._queue_resync(slot)
            elif is_crossed(book):
                row[PM_STATE] = PM_INVALID
                row[PM_MISMATCHES] += 1
                self._stats[ST_CROSSED_BOOK] += 1
                self._queue_resync(slot)
        return 1

    cdef int _apply_last_trade(self, pm_event_t* e, int64_t recv_ts_ns) except -1:
        cdef pm_fields_t* f = &e.f
        cdef int32_t slot = self._slot(f)
        cdef int64_t* row
        if slot < 0:
            return 0
        row = self.store._rows + slot * PM_N_FIELDS
        row[PM_LAST_PX] = f.val[K_PRICE]
        row[PM_LAST_SZ] = f.val[K_SIZE]
        row[PM_LAST_SIDE] = f.val[K_SIDE] if f.has & (1 << K_SIDE) else PM_SIDE_NONE
        touch_row(row, &self.store._books[slot], f, recv_ts_ns)
        self._count(ST_EV_LAST_TRADE_PRICE)
        if self._emit_trades and self._on_event is not None:
            self._on_event("last_trade_price", {
                "asset_id": self.store._names[slot],
                "price": row[PM_LAST_PX],
                "size": row[PM_LAST_SZ],
                "side": row[PM_LAST_SIDE],
                "timestamp": f.val[K_TIMESTAMP] if f.has & (1 << K_TIMESTAMP) else 0,
            })
        return 1

    cdef int _apply_tick_size(self, pm_event_t* e, int64_t recv_ts_ns) except -1:
        cdef pm_fields_t* f = &e.f
        cdef int32_t slot = self._slot(f)
        cdef int64_t* row
        if slot < 0:
            return 0
        self._count(ST_EV_TICK_SIZE_CHANGE)
        row = self.store._rows + slot * PM_N_FIELDS
        self.store._books[slot].tick_unconfirmed = False
        if f.val[K_NEW_TICK_SIZE] == row[PM_TICK]:
            return 1
        row[PM_TICK] = f.val[K_NEW_TICK_SIZE]
        row[PM_EPOCH] += 1
        touch_row(row, &self.store._books[slot], f, recv_ts_ns)
        if row[PM_STATE] == PM_LIVE or row[PM_STATE] == PM_INVALID:
            row[PM_STATE] = PM_STALE  # levels on the old grid may be wrong until the next book
            self._queue_resync(slot)
        return 1

    cdef int _apply_best_bid_ask(self, pm_event_t* e) noexcept:
        cdef pm_fields_t* f = &e.f
        cdef int32_t slot = self._slot(f)
        cdef pm_book_t* book
        if slot < 0:
            return 0
        self._count(ST_EV_BEST_BID_ASK)
        book = &self.store._books[slot]
        if self.store._rows[slot * PM_N_FIELDS + PM_STATE] == PM_LIVE and (
                f.val[K_BEST_BID] != best_bid_px(book) or f.val[K_BEST_ASK] != best_ask_px(book)):
            self._stats[ST_BBA_MISMATCH] += 1
        return 1

    cdef int _apply_cold(self, pm_event_t* e, int kind) except -1:
        # new_market / market_resolved: rare, so decoded with orjson from the event's own bytes
        cdef str name
        try:
            payload = orjson.loads(PyBytes_FromStringAndSize(<const char*>e.span_start, e.span_end - e.span_start))
        except orjson.JSONDecodeError:  # only a number too large for orjson (e.g. 1e400), valid JSON to us
            self._stats[ST_REJ_BAD_EVENT] += 1
            return 0
        if kind == EV_NEW_MARKET:
            name = "new_market"
            key = None
            for field in ("market", "condition_id", "id"):
                if field in payload:
                    key = payload[field]
                    break
            if isinstance(key, str) and len(key) <= SEEN_MARKET_ID_MAX:
                if key in self._seen_markets:
                    self._stats[ST_SKIP_DUPLICATE] += 1
                    return 0
                self._seen_markets[key] = None
                if len(self._seen_markets) > SEEN_MARKETS_MAX:
                    del self._seen_markets[next(iter(self._seen_markets))]
            self._count(ST_EV_NEW_MARKET)
        else:
            name = "market_resolved"
            self._count(ST_EV_MARKET_RESOLVED)
        if self._on_event is not None:
            self._on_event(name, payload)
        return 1

    cdef int _queue_resync(self, int32_t slot) except -1:
        # The queue lives in the store (remove() takes a token out); a queued token is not re-counted
        cdef dict queue = self.store._resync
        token = self.store._names[slot]
        if token not in queue:
            queue[token] = None
            self._stats[ST_RESYNC_QUEUED] += 1
        return 0

    def pending_resync(self):
        """Return and forget the tokens that need a fresh snapshot, each once, first-queued first.

        Tokens removed from the store since they were queued are left out.

        Returns
        -------
        list of str
            Token ids to resubscribe.
        """
        out = list(self.store._resync)
        self.store._resync.clear()
        return out

    def stats(self):
        """Return every counter (the keys of ``pm_ws.row.STAT_KEYS``) as a new dict."""
        cdef Py_ssize_t i
        return {STAT_KEYS[i]: self._stats[i] for i in range(ST_COUNT)}


# Layout as compiled from _core_c.pxd, for the test that keeps it equal to pm_ws.row
FIELD_INDEX = {
    "BID_PX": PM_BID_PX, "BID_SZ": PM_BID_SZ, "ASK_PX": PM_ASK_PX, "ASK_SZ": PM_ASK_SZ,
    "LAST_PX": PM_LAST_PX, "LAST_SZ": PM_LAST_SZ, "LAST_SIDE": PM_LAST_SIDE,
    "EXCH_TS_MS": PM_EXCH_TS_MS, "RECV_TS_NS": PM_RECV_TS_NS, "SEQ": PM_SEQ, "EPOCH": PM_EPOCH,
    "STATE": PM_STATE, "TICK": PM_TICK, "BID_LEVELS": PM_BID_LEVELS, "ASK_LEVELS": PM_ASK_LEVELS,
    "MISMATCHES": PM_MISMATCHES,
}
C_CONSTANTS = {
    "PRICE_SCALE": PM_PRICE_SCALE, "SIZE_SCALE": PM_SIZE_SCALE, "N_FIELDS": PM_N_FIELDS,
    "SIDE_BUY": PM_SIDE_BUY, "SIDE_SELL": PM_SIDE_SELL,
    "EMPTY": PM_EMPTY, "SUBSCRIBING": PM_SUBSCRIBING, "LIVE": PM_LIVE, "STALE": PM_STALE,
    "INVALID": PM_INVALID, "N_STATS": ST_COUNT,
}

if len(STAT_KEYS) != ST_COUNT:
    raise ImportError("pm_ws._core_c: pm_stat in _core_c.pxd no longer matches pm_ws.row.STAT_KEYS")
