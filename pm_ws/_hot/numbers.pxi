# Exact numbers: fixed-point prices and sizes, timestamps, and the Python-facing parsers.
# Included by _core_c.pyx; no float or Decimal anywhere.

cdef enum:
    SIZE_INT_MAX = 9223372036854  # INT64_MAX // PM_SIZE_SCALE
    SIZE_FAST_DIGITS = 12  # integer digits of a size the one-pass parsers read: fewer than SIZE_INT_MAX has

cdef uint64_t POW10[7]
POW10[:] = [1, 10, 100, 1000, 10000, 100000, 1000000]


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
    if n < 1 or n > PM_MAX_TIMESTAMP_DIGITS:
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


cdef str shown_text(object text):
    # The input as quoted in an error: bytes decoded as latin-1, one character per byte
    return text if isinstance(text, str) else bytes(text).decode("latin-1")


cdef object number_error(str field, object text, cptr s, Py_ssize_t n, int decimals, bint is_price):
    return parse_error(field, shown_text(text), number_reason(s, n, decimals, is_price))


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
        raise parse_error("price", shown_text(text), "not a whole cent")
    return v // 100
