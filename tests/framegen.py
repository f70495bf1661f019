"""Random market-channel frames for the differential and crash fuzzers (not a test module).

Everything is drawn from a ``random.Random``-like object, so the same generator serves hypothesis
(``st.randoms()``, which shrinks), the seeded crash fuzzer and the atheris seed corpus. Frames are
mostly well-formed events on random tick grids, dressed in wire noise that must not change their
meaning (key order, whitespace, escapes, duplicate keys, unknown keys), plus mutations that must be
rejected (wrong types, bad numbers, missing keys, truncation, corrupted bytes, deep nesting).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Protocol

# Subscribed ids: a real-length decimal id, a short one, one using every allowed punctuation byte
SUBSCRIBED = (
    "65818619657568813474341868652308942079804919287380422192892211131408793125422",
    "42",
    "tok-A_1.b:c",
)
UNSUBSCRIBED = (
    "71321045679252212594626385532706912750332728571942532289631379312455583992563",
    "43",
    "4",
)
OWNERS = (0, 0, 1, 2)  # owners of tokens and frames in the differential streams; 0 = none (applies to all)
TICK_UNITS = (1000, 100, 10, 1)  # 0.1, 0.01, 0.001, 0.0001 in price units
CONTROL_WORDS = ("PONG", "INVALID OPERATION", "NO NEW ASSETS")
EVENT_TYPES = ("book", "price_change", "last_trade_price", "tick_size_change", "best_bid_ask",
               "new_market", "market_resolved")  # fmt: skip
# Weighted towards the hot events; tick changes are rarer because each one makes the book STALE
_EVENT_MIX = (("book",) * 4 + ("price_change",) * 6 + ("last_trade_price", "best_bid_ask") * 2
              + EVENT_TYPES[3:4] + EVENT_TYPES[5:])  # fmt: skip
MAX_DEPTH = 32  # the core's limit: deeper documents are invalid JSON
# A number token that overflows a double: orjson rejects it, the compiled scanner accepts it (documented)
_BIG_NUMBER = re.compile(rb"[0-9]+(?:\.[0-9]+)?[eE][+-]?[0-9]+|[0-9]{309,}")

BooksOf = Callable[[str], "Book | None"]


class Rng(Protocol):
    def random(self) -> float: ...
    def randint(self, a: int, b: int) -> int: ...
    def choice(self, seq: Any) -> Any: ...
    def shuffle(self, x: list[Any]) -> None: ...


class Obj(list):
    """A JSON object as (key, value) pairs, so key order and duplicates are explicit."""


def overflows_double(frame: bytes | str | bytearray | memoryview) -> bool:
    """Tell whether ``frame`` may hold a number that overflows a double (the documented divergence)."""
    data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else bytes(frame)
    return any(math.isinf(float(m.group())) for m in _BIG_NUMBER.finditer(data))


# ---------------------------------------------------------------- numbers on the wire


def price_text(rng: Rng, units: int) -> str:
    """Render a price in units of 1e-4 in one of the spellings the grammar accepts."""
    whole, frac = divmod(units, 10_000)
    digits = f"{frac:04d}".rstrip("0")
    style = rng.randint(0, 9)
    if style == 0:
        digits = f"{frac:04d}"  # trailing zeros up to the 4 allowed
    head = "00" + str(whole) if style == 1 else ("" if style == 2 and whole == 0 else str(whole))
    if not digits:
        return head + "." if style == 3 else (head or "0")
    return f"{head}.{digits}"


def size_text(rng: Rng, units: int) -> str:
    whole, frac = divmod(units, 1_000_000)
    digits = f"{frac:06d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


BAD_NUMBERS = ("", ".", " 1", "1 ", "+1", "-0.5", "1e2", "0x1", "1,5", "\u00bd", "0.12345", "1.0001",
               "2", "9223372036854.775808", "99999999999999999999", "0.5.1", "NaN", "\u0660")  # fmt: skip


def random_price(rng: Rng, tick: int) -> int:
    price = tick * rng.randint(1, 10_000 // tick - 1)
    return price + 1 if tick > 1 and rng.random() < 0.01 else price  # sometimes off the tick grid


def random_size(rng: Rng) -> int:
    kind = rng.randint(0, 9)
    if kind == 0:
        return 0
    if kind == 1:
        return 9_223_372_036_854_775_807  # the largest size that fits int64
    return rng.randint(1, 10**6) * rng.choice((1, 10, 10_000, 1_000_000))


def timestamp_text(rng: Rng) -> str:
    return str(rng.randint(1, 10**18 - 1)) if rng.random() < 0.1 else str(1786728400000 + rng.randint(0, 99999))


# ---------------------------------------------------------------- events


def _token(rng: Rng) -> str:
    return rng.choice(SUBSCRIBED) if rng.random() < 0.8 else rng.choice(UNSUBSCRIBED)


def _levels(rng: Rng, tick: int, low: int, high: int, ascending: bool) -> list[Obj]:
    count = rng.randint(60, 300) if rng.random() < 0.03 else rng.randint(0, 6)  # deep books grow the level arrays
    prices = sorted({tick * rng.randint(low, high) for _ in range(count)}, reverse=not ascending)
    if prices and rng.random() < 0.15:
        rng.shuffle(prices)
    if prices and rng.random() < 0.05:
        prices.append(rng.choice(prices))  # duplicate price: bad_event
    return [Obj([("price", price_text(rng, p)), ("size", size_text(rng, random_size(rng)))]) for p in prices]


def book_event(rng: Rng, token: str) -> Obj:
    tick = rng.choice(TICK_UNITS)
    n = 10_000 // tick
    cross = rng.random() < 0.1
    mid = rng.randint(1, n - 1)
    bids = _levels(rng, tick, 1, max(1, (n - 1) if cross else mid - 1), ascending=True)
    asks = _levels(rng, tick, 1 if cross else mid, n - 1, ascending=False)
    ev = Obj([("market", "0x" + "ab" * 32), ("asset_id", token), ("timestamp", timestamp_text(rng)),
              ("hash", "924ec9bc1c6dd89f5db9b7b2b68cdab458cc2dc6"), ("bids", bids), ("asks", asks)])  # fmt: skip
    if rng.random() < 0.6:
        ev.append(("tick_size", price_text(rng, tick)))
    if rng.random() < 0.5:
        ev.append(("last_trade_price", "" if rng.random() < 0.3 else price_text(rng, random_price(rng, tick))))
    ev.append(("event_type", "book"))
    return ev


Book = tuple[list[tuple[int, int]], list[tuple[int, int]]]  # (bids, asks) as BookStore.book returns them


def _best_after(book: Book, changes: list[tuple[int, int, str]]) -> tuple[int, int]:
    bids, asks = dict(book[0]), dict(book[1])
    for price, size, side in changes:
        levels = bids if side == "BUY" else asks
        if size:
            levels[price] = size
        else:
            levels.pop(price, None)
    return max(bids, default=0), min(asks, default=10_000)


def price_change_event(rng: Rng, books_of: BooksOf | None) -> Obj:
    tick = rng.choice(TICK_UNITS)
    entries: list[Obj] = []
    applied: dict[str, list[tuple[int, int, str]]] = {}
    for _ in range(rng.randint(1, 4)):
        token = _token(rng)
        price, size = random_price(rng, tick), (0 if rng.random() < 0.3 else random_size(rng))
        side = "BUY" if rng.random() < 0.5 else "SELL"
        applied.setdefault(token, []).append((price, size, side))
        entry = Obj([("asset_id", token), ("price", price_text(rng, price)), ("size", size_text(rng, size)),
                     ("side", side), ("hash", "f3285de052f887d0ce2847581636a69c1046178d")])  # fmt: skip
        book = books_of(token) if books_of else None
        if rng.random() < 0.6:
            if book is not None and rng.random() < 0.8:
                best_bid, best_ask = _best_after(book, applied[token])  # what the server would say
            else:
                best_bid, best_ask = random_price(rng, tick), random_price(rng, tick)
            entry += [("best_bid", price_text(rng, best_bid)), ("best_ask", price_text(rng, best_ask))]
        entries.append(entry)
    return Obj([("market", "0x" + "cd" * 32), ("price_changes", entries), ("timestamp", timestamp_text(rng)),
                ("event_type", "price_change")])  # fmt: skip


def small_event(rng: Rng, kind: str, books_of: BooksOf | None) -> Obj:
    token = _token(rng)
    tick = rng.choice(TICK_UNITS)
    if kind == "last_trade_price":
        ev = Obj([("asset_id", token), ("price", price_text(rng, random_price(rng, tick))),
                  ("size", size_text(rng, random_size(rng))), ("fee_rate_bps", "0")])  # fmt: skip
        if rng.random() < 0.8:
            ev.append(("side", rng.choice(("BUY", "SELL"))))
    elif kind == "tick_size_change":
        ev = Obj([("asset_id", token), ("new_tick_size", price_text(rng, tick)), ("old_tick_size", "0.01")])
    elif kind == "best_bid_ask":
        book = books_of(token) if books_of else None
        if book is not None and rng.random() < 0.6:
            best_bid, best_ask = _best_after(book, [])
        else:
            best_bid, best_ask = random_price(rng, tick), random_price(rng, tick)
        ev = Obj([("asset_id", token), ("best_bid", price_text(rng, best_bid)),
                  ("best_ask", price_text(rng, best_ask)), ("spread", "0.01")])  # fmt: skip
    else:  # new_market / market_resolved: cold path, deduplicated on market / condition_id / id
        ev = Obj([("id", rng.choice(("1031769", "7", 7, None))), ("question", "Will it? \u2013 \U0001f600")])
        for key in ("market", "condition_id"):
            if rng.random() < 0.6:
                ev.append((key, rng.choice(("0x" + "ef" * 32, "0x01", ["0x01"], 3))))
        ev.append(("assets_ids", list(SUBSCRIBED[:2])))
    if rng.random() < 0.8:
        ev.append(("timestamp", timestamp_text(rng)))
    ev.append(("event_type", kind))
    return ev


def event(rng: Rng, books_of: BooksOf | None = None) -> Obj:
    """Draw one plausible event object, before any noise or mutation."""
    kind = rng.choice(_EVENT_MIX)
    if kind == "book":
        return book_event(rng, _token(rng))
    if kind == "price_change":
        return price_change_event(rng, books_of)
    return small_event(rng, kind, books_of)


# ---------------------------------------------------------------- mutations that must be rejected


def junk_value(rng: Rng, depth: int = 0) -> Any:
    """Draw any JSON value (no double-overflowing numbers), nested at most ``depth`` levels more."""
    kind = rng.randint(0, 9 if depth > 0 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**70), 2**70)
    if kind == 3:
        return RawNumber(rng.choice(("0.5", "-1.25e-7", "6.02E+23", "0e0", "-0", "1E308", "4.9e-324")))
    if kind in (4, 5, 6):
        return rng.choice(("", "x", "book", "0.5", "\u00e9\u4e2d", "\U0001f600", "a\"b\\c\n", "\x00\x1f"))
    if kind in (7, 8):
        return [junk_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return Obj((rng.choice(("k", "event_type", "asset_id", "price")), junk_value(rng, depth - 1))
               for _ in range(rng.randint(0, 3)))  # fmt: skip


class RawNumber(str):
    """Number text rendered verbatim (exponents, '-0', huge integers as text)."""


def nested(depth: int) -> Any:
    """A value that is ``depth`` containers deep (alternating arrays and objects)."""
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else Obj([("n", value)])
    return value


def _objects(value: Any, found: list[Obj]) -> list[Obj]:
    if isinstance(value, Obj):
        found.append(value)
        for _, v in value:
            _objects(v, found)
    elif isinstance(value, list):
        for v in value:
            _objects(v, found)
    return found


def mutate_event(rng: Rng, ev: Obj) -> None:
    """Break one thing in ``ev`` (or one of its nested objects) in place."""
    target = rng.choice(_objects(ev, []))
    if not target:
        return
    i = rng.randint(0, len(target) - 1)
    key, value = target[i]
    kind = rng.randint(0, 5)
    if kind == 0:
        del target[i]  # missing key
    elif kind == 1:
        target[i] = (key, junk_value(rng, 2))  # wrong type (or a surprising right one)
    elif kind == 2:
        target[i] = (key, rng.choice(BAD_NUMBERS))
    elif kind == 3:
        target[i] = (key, rng.choice(("BUY", "SELL", "buy", "Book", "book ", "", "price_change", "book")))
    elif kind == 4:
        target.insert(rng.randint(0, len(target)), (rng.choice(("transaction_hash", "x", "")), junk_value(rng, 3)))
    else:
        target[i] = (key, None)


# ---------------------------------------------------------------- rendering with wire noise


# Noise levels: the server's compact layout, the same with escapes and shadowed duplicate keys
# (the compiled fast paths must notice and fall back), and anything goes (whitespace, key order)
PLAIN, ESCAPED, NOISY = 0, 1, 2


def _ws(rng: Rng, noise: int) -> str:
    return rng.choice((" ", "\n", "\t", "\r\n", "  ")) if noise == NOISY and rng.random() < 0.2 else ""


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _u_escape(rng: Rng, code: int) -> str:
    text = f"\\u{code:04x}"
    return text.upper().replace("\\U", "\\u") if rng.random() < 0.5 else text


def render_string(rng: Rng, text: str, noise: int) -> str:
    escape_some = noise != PLAIN and rng.random() < 0.15
    out = ['"']
    for ch in text:
        code = ord(ch)
        if escape_some and rng.random() < 0.3:
            if ch == "/":
                out.append("\\/")
            elif code > 0xFFFF:
                code -= 0x10000
                out.append(_u_escape(rng, 0xD800 + (code >> 10)) + _u_escape(rng, 0xDC00 + (code & 0x3FF)))
            else:
                out.append(_u_escape(rng, code))
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20:
            out.append(_u_escape(rng, code))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render(rng: Rng, value: Any, noise: int) -> str:
    """Render a JSON value at a noise level (PLAIN, ESCAPED or NOISY)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return render_string(rng, value, noise)
    if isinstance(value, Obj):
        pairs = list(value)
        if noise == NOISY and rng.random() < 0.5:
            rng.shuffle(pairs)  # duplicates keep their meaning only if each keeps its last position
            pairs = _last_wins(value, pairs)
        if noise != PLAIN and pairs and rng.random() < 0.1:
            i = rng.randint(0, len(pairs) - 1)
            pairs.insert(i, (pairs[i][0], junk_value(rng, 1)))  # an earlier duplicate: the last one wins
        body = ",".join(f"{_ws(rng, noise)}{render_string(rng, k, noise)}{_ws(rng, noise)}:{_ws(rng, noise)}"
                        f"{render(rng, v, noise)}{_ws(rng, noise)}" for k, v in pairs)  # fmt: skip
        return "{" + body + "}"
    items = ",".join(f"{_ws(rng, noise)}{render(rng, v, noise)}{_ws(rng, noise)}" for v in value)
    return "[" + items + "]"


def _last_wins(original: Obj, shuffled: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    last = {k: v for k, v in original}
    seen: set[str] = set()
    out = [(k, v) for k, v in reversed(shuffled) if not (k in seen or seen.add(k))]  # type: ignore[func-returns-value]
    return [(k, last[k]) for k, _ in reversed(out)]


# ---------------------------------------------------------------- frames


def corrupt(rng: Rng, data: bytes) -> bytes:
    """Damage raw bytes: truncate, flip, insert or delete, or splice in invalid UTF-8."""
    if not data:
        return rng.choice((b"\xff", b"{", b"["))
    i = rng.randint(0, len(data) - 1)
    kind = rng.randint(0, 4)
    if kind == 0:
        return data[:i]
    if kind == 1:
        return data[:i] + bytes([data[i] ^ (1 << rng.randint(0, 7))]) + data[i + 1 :]
    if kind == 2:
        return data[:i] + bytes([rng.randint(0, 255)]) + data[i:]
    if kind == 3:
        return data[:i] + data[i + 1 :]
    return data[:i] + rng.choice((b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe4\xb8", b"\x00", b"\x1f")) + data[i:]


_TWEAKABLE = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyz")


def tweak(rng: Rng, data: bytes) -> bytes:
    """Change digits or letters in place, which usually keeps the JSON valid and moves numbers and ids."""
    if not data:
        return data
    for _ in range(32):  # probe instead of listing every digit: frames can be megabytes
        i = rng.randint(0, len(data) - 1)
        if data[i] in _TWEAKABLE:
            break
    else:
        return data
    kind = rng.randint(0, 3)
    if kind == 0:
        return data[:i] + bytes([rng.choice(b"0123456789.")]) + data[i + 1 :]
    if kind == 1:
        return data[:i] + data[i + 1 :]
    if kind == 2:
        return data[:i] + bytes([data[i]]) * rng.randint(1, 25) + data[i:]  # long digit runs: overflow checks
    return data[:i] + bytes([rng.choice(b"abeEz-")]) + data[i + 1 :]


def control_frame(rng: Rng) -> str:
    word = rng.choice(CONTROL_WORDS + ("PONGX", "", "PING", "INVALID  OPERATION", "pong\x00", "\u00e9"))
    if rng.random() < 0.3:
        word = word.lower() if rng.random() < 0.5 else word.title()
    return _ws(rng, True) + word + _ws(rng, True)


def snapshot_frame(rng: Rng) -> bytes:
    """The initial dump the server sends after subscribing: one book per subscribed token, array-wrapped."""
    return render(rng, [book_event(rng, token) for token in SUBSCRIBED], rng.choice((PLAIN, ESCAPED, NOISY))).encode()


def frame(rng: Rng, books_of: BooksOf | None = None) -> bytes | str | bytearray | memoryview:
    """Draw one frame in any of the accepted Python types.

    ``books_of(token)`` may return the reference book (best first) so that ``price_change``
    checksums and ``best_bid_ask`` usually agree with the local book, as they do on the wire.
    """
    roll = rng.random()
    if roll < 0.07:
        text = control_frame(rng)
    else:
        noise = rng.choice((PLAIN, ESCAPED, NOISY, NOISY))
        if roll < 0.6:
            doc: Any = event(rng, books_of)
        else:
            doc = [event(rng, books_of) if rng.random() < 0.9 else junk_value(rng, 1) for _ in range(rng.randint(0, 4))]
        for ev in _objects(doc, []) if rng.random() < 0.25 else []:
            if rng.random() < 0.3:
                mutate_event(rng, ev)
        if rng.random() < 0.04:
            # Nesting around the limit, in an unknown key of the first object
            outer = 1 if isinstance(doc, Obj) else 2
            holder = doc if isinstance(doc, Obj) else next(iter(_objects(doc, [])), None)
            if holder is not None:
                holder.append(("deep", nested(MAX_DEPTH - outer + rng.randint(-1, 1))))
        text = _ws(rng, noise) + render(rng, doc, noise) + _ws(rng, noise)
    data = text.encode("utf-8")
    if rng.random() < 0.08:
        for _ in range(rng.randint(1, 3)):
            data = corrupt(rng, data)
        return data
    kind = rng.randint(0, 9)
    if kind == 0:
        return text
    if kind == 1:
        return bytearray(data)
    if kind == 2:
        return memoryview(data)
    return data


def as_bytes(frame: bytes | str | bytearray | memoryview) -> bytes:
    return frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else bytes(frame)


def seed_frames(seed: int = 0, count: int = 300) -> list[bytes]:
    """Real-format frames to mutate: the repo's recordings, the shared captures if present, generated ones."""
    import random
    from pathlib import Path

    here = Path(__file__).resolve().parent
    frames = [line for path in sorted((here / "fixtures").glob("*.jsonl")) for line in path.read_bytes().splitlines()]
    shared = here.parent.parent / "shared" / "fixtures" / "polymarket"
    frames += [path.read_bytes() for path in sorted(shared.glob("*/*.json"))]
    rng = random.Random(seed)
    frames += [as_bytes(frame(rng)) for _ in range(count)]
    return [f for f in frames if f and not overflows_double(f)]


def asset_ids(frames: list[bytes]) -> tuple[str, ...]:
    """Every token id the frames name (so fuzzing reaches the apply code), plus the generator's own."""
    named = re.compile(rb'"(?:asset_id|winning_asset_id)"\s*:\s*"([0-9A-Za-z_.:-]{1,100})"')
    found = {m.decode() for f in frames for m in named.findall(f)}
    return SUBSCRIBED + tuple(sorted(found - set(SUBSCRIBED) - set(UNSUBSCRIBED)))
