/* Inline C for the compiled core pm_ws._core_c: byte scanning (SSE2 where the compiler has it),
   token-id compare and hash. Included once, by _core_c.pyx (cdef extern from "pm_bytes.h"). */
#ifndef PM_WS_BYTES_H
#define PM_WS_BYTES_H

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* First byte at or after p that ends a plain run inside a JSON string: a quote, a
   backslash, a control byte or a non-ASCII byte; e when there is none. */
static inline const unsigned char* pm_skip_plain(const unsigned char* p, const unsigned char* e) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\');
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
    while (p < e && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80) p++;
    return p;
}

/* Whether p[0..n) (n >= 16) holds no quote, backslash, control or non-ASCII byte. The loop
   count depends only on n, so a string as long as the previous one costs no mispredict. */
static inline int pm_plain_span(const unsigned char* p, Py_ssize_t n) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\');
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

/* The TOKEN_TAG of a token id (pm_ws.row.token_tag): FNV-1a 64 over its bytes, masked to a
   positive int64, never 0 (0 marks an empty slot). Computed once per add, never per frame. */
static inline int64_t pm_token_tag(const unsigned char* p, Py_ssize_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    Py_ssize_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
    h &= 0x7FFFFFFFFFFFFFFFull;
    return h ? (int64_t)h : 1;
}

/* The digits at p as a number and where they stop; the caller knows a non-digit byte comes
   before the end of the buffer, so the loop needs no bound. A run longer than 19 digits wraps
   the value: callers refuse such a length before using it. */
static inline const unsigned char* pm_digits(const unsigned char* p, uint64_t* value) {
    uint64_t v = 0;
    unsigned d;
    while ((d = (unsigned)*p - '0') <= 9) {
        v = v * 10 + d;
        p++;
    }
    *value = v;
    return p;
}

/* pm_digits two digits a step: fewer instructions on a long run (a size's integer part) */
static inline const unsigned char* pm_digit_pairs(const unsigned char* p, uint64_t* value) {
    uint64_t v = 0;
    unsigned d, d1;
    for (;;) {
        d = (unsigned)p[0] - '0';
        if (d > 9)
            break;
        d1 = (unsigned)p[1] - '0';  /* p[0] is a digit, so the non-digit comes at p[1] or later */
        if (d1 > 9) {
            v = v * 10 + d;
            p++;
            break;
        }
        v = v * 100 + d * 10 + d1;
        p += 2;
    }
    *value = v;
    return p;
}

enum { PM_LEVEL_SPAN = 64 };  /* pm_levels_layout takes a level only this far or more from the end */

/* Book levels in the server's usual shape from p, {"price":"0.D","size":"I.F"} joined by bare
   commas, with 1..4 price decimals D, 1..12 integer size digits I and none or 1..6 size
   decimals F (".F" absent): each one's price in 1e-4 and size in 1e-6 units into out[0], out[1],
   out[2], ... while the shape holds, their count in *taken, and the position just after the
   last one's '}' returned (p when none was taken). The level stopped at is left to the caller,
   which parses it the general way (that also takes the shapes refused here), and the levels
   taken are exactly the ones the general way would take.
   *ordered stays 1 while the signed prices (price * sign) rise strictly from *last on and no
   size is 0; *last ends as the last one's.
   Why not the general parsers: every digit loop here runs without a bounds check, stopped by
   the non-digit e[-1] (checked once), and every length is checked before the bytes after it
   are read (a level that starts PM_LEVEL_SPAN or more from e ends at most 48 bytes in), and
   the run's state stays in locals. Parsing levels is most of what a deep book costs. */
static inline const unsigned char* pm_levels_layout(const unsigned char* p, const unsigned char* e, int64_t* out,
                                                    Py_ssize_t* taken, int64_t sign, int64_t* last, int* ordered) {
    static const uint64_t scale[7] = {1000000, 100000, 10000, 1000, 100, 10, 1};  /* 10**(6 - decimals) */
    const unsigned char *q, *s, *done = p;
    uint64_t px, ip, fp;
    size_t n, fd;
    int64_t* first = out;
    int64_t prev = *last;
    int in_order = *ordered;
    if ((unsigned)e[-1] - '0' > 9) {
        while (e - p >= PM_LEVEL_SPAN && memcmp(p, "{\"price\":\"0.", 12) == 0) {
            q = pm_digits(p + 12, &px);
            n = (size_t)(q - (p + 12));
            if (n - 1 > 3 || memcmp(q, "\",\"size\":\"", 10) != 0)  /* n == 0 wraps: refused */
                break;
            px *= scale[n + 2];
            s = q + 10;  /* at most p + 26 */
            q = pm_digit_pairs(s, &ip);
            n = (size_t)(q - s);
            if (n - 1 > 11)
                break;
            fp = 0;
            fd = 0;
            if (*q == '.') {
                s = q + 1;
                q = pm_digits(s, &fp);
                fd = (size_t)(q - s);
                if (fd - 1 > 5)
                    break;
            }
            if (q[0] != '"' || q[1] != '}')  /* q <= p + 45 */
                break;
            out[0] = (int64_t)px;
            out[1] = (int64_t)(ip * 1000000 + fp * scale[fd]);
            in_order &= ((int64_t)px * sign > prev) & (out[1] != 0);
            prev = (int64_t)px * sign;
            out += 2;
            done = q + 2;
            if (q[2] != ',')
                break;
            p = q + 3;
        }
    }
    *taken = (out - first) / 2;
    *last = prev;
    *ordered = in_order;
    return done;
}

#endif  /* PM_WS_BYTES_H */
