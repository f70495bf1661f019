"""The compiled core's loop for levels in the server's usual shape, edge by edge, against the pure twin.

The loop takes {"price":"0.D","size":"I.F"} with 1..4 price decimals, 1..12 integer size digits
and none or 1..6 size decimals, joined by bare commas, starting at least 64 bytes before the
frame's end, in a frame whose last byte is not a digit; its digit loops run without a bounds
check and every length is checked before the bytes after it are read. Anything else goes to the
general parsers, which decide exactly as before. Each case checks the exact integers the book
ends with and that both cores end equal (books, rows, counters, events).
"""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # differential is a plain helper beside the tests
from differential import Twin  # noqa: E402
from test_deep_books import LEVELS, TOKEN, ask_levels, bid_levels, book_frame, level  # noqa: E402

pytestmark = pytest.mark.c_extension


@pytest.fixture(scope="module")
def modules() -> dict[str, ModuleType]:
    return {"c": importlib.import_module("pm_ws._core_c"), "py": importlib.import_module("pm_ws._core_py")}


def fed(modules: dict[str, ModuleType], *frames: str | bytes) -> Twin:
    twin = Twin(modules, (TOKEN,))
    for i, frame in enumerate(frames):
        twin.feed(frame, recv_ts_ns=i + 1)
    return twin


def bids_with(odd: str, where: int) -> list[str]:
    # the bids on 0.400 .. 0.449 with one level put at where; odd levels sit between 0.3 and 0.4
    bids = bid_levels()
    bids.insert(where, odd)
    return bids


WHERE = [0, 1, LEVELS // 2, LEVELS]

# sizes the loop takes, each with its exact units (1e-6 shares)
SIZES_TAKEN = {
    "7": 7_000_000,
    "0": 0,  # taken, then dropped by the side as a size-0 level
    "007": 7_000_000,  # leading zeros: the general parsers take them too
    "12": 12_000_000,
    "123": 123_000_000,
    "1234": 1_234_000_000,
    "12345.5": 12_345_500_000,
    "12345.67": 12_345_670_000,
    "0.000001": 1,
    "1.123456": 1_123_456,
    "99999999999.9": 99_999_999_999_900_000,  # 11 integer digits: the pairs loop's odd tail
    "999999999999.999999": 999_999_999_999_999_999,  # 12 integer digits, 6 decimals: the longest taken
}

# sizes the loop refuses: the general parsers decide (taken, or the frame rejected)
SIZES_REFUSED = [
    "1234567890123",  # 13 integer digits: taken by the general parsers (up to INT64_MAX)
    "9223372036854.775807",  # INT64_MAX units exactly
    "9223372036854.775808",  # one above: rejected
    "1" * 40,  # a digit run far past 19 digits (the loop's value wraps; the length refuses it)
    "5.",  # no decimals after the dot
    ".5",  # no integer digits
    "1.1234567",  # 7 decimals
    "1.2.3",
    "1e3",
    "1E3",
    " 5",
    "5 ",
    "-5",
    "+5",
    "",
    "\u0665",  # an Arabic-Indic digit: not ASCII
    "5\u00a0",
]

# prices the loop takes (0.D with 1..4 decimals) and refuses (the general parsers decide)
PRICES_TAKEN = {"0.3": 3000, "0.35": 3500, "0.351": 3510, "0.3512": 3512, "0.0001": 1, "0.0": 0, "0.0000": 0}
PRICES_REFUSED = ["0.", "0.35123", "0.3" + "5" * 40, "1", "1.0", "0", ".35", "00.35", "0.35e0", "0.3 ", "0,35", "-0.35"]


@pytest.mark.parametrize("text, units", list(SIZES_TAKEN.items()), ids=list(SIZES_TAKEN))
@pytest.mark.parametrize("where", WHERE)
def test_size_taken_exact(modules: dict[str, ModuleType], text: str, units: int, where: int) -> None:
    twin = fed(modules, book_frame(bids_with(level("0.3", text), where), ask_levels()))
    bids, _ = twin.reference.book(TOKEN, depth=None)
    assert ((3000, units) in bids) == (units != 0)
    assert len(bids) == LEVELS + (units != 0)


@pytest.mark.parametrize("text", SIZES_REFUSED, ids=[f"size-{i}" for i in range(len(SIZES_REFUSED))])
@pytest.mark.parametrize("where", WHERE)
def test_size_refused_same_state(modules: dict[str, ModuleType], text: str, where: int) -> None:
    fed(modules, book_frame(bid_levels(), ask_levels()), book_frame(bids_with(level("0.3", text), where), ask_levels()))


@pytest.mark.parametrize("text, units", list(PRICES_TAKEN.items()), ids=list(PRICES_TAKEN))
@pytest.mark.parametrize("where", WHERE)
def test_price_taken_exact(modules: dict[str, ModuleType], text: str, units: int, where: int) -> None:
    twin = fed(modules, book_frame(bids_with(level(text, "5"), where), ask_levels()))
    bids, _ = twin.reference.book(TOKEN, depth=None)
    assert (units, 5_000_000) in bids


@pytest.mark.parametrize("text", PRICES_REFUSED, ids=[f"price-{i}" for i in range(len(PRICES_REFUSED))])
@pytest.mark.parametrize("where", WHERE)
def test_price_refused_same_state(modules: dict[str, ModuleType], text: str, where: int) -> None:
    fed(modules, book_frame(bid_levels(), ask_levels()), book_frame(bids_with(level(text, "5"), where), ask_levels()))


FALLBACK_LAYOUTS = {
    "spaces": '{ "price":"0.3","size":"5"}',
    "space-after-colon": '{"price": "0.3","size":"5"}',
    "newline-before-brace": '{"price":"0.3","size":"5"\n}',
    "exponent-number": '{"price":"0.3","size":5e0}',
    "number-values": '{"price":0.3,"size":5}',
    "keys-reordered": '{"size":"5","price":"0.3"}',
    "key-repeated": '{"price":"0.3","size":"5","size":"6"}',
    "key-extra": '{"price":"0.3","size":"5","hash":"x"}',
    "upper-case-key": '{"Price":"0.3","size":"5"}',
    "escaped-quote": '{"price":"0.3\\"","size":"5"}',
    "brace-then-space": '{"price":"0.3","size":"5"} ',
}


@pytest.mark.parametrize("odd", list(FALLBACK_LAYOUTS.values()), ids=list(FALLBACK_LAYOUTS))
@pytest.mark.parametrize("where", WHERE)
def test_other_layouts_same_state(modules: dict[str, ModuleType], odd: str, where: int) -> None:
    fed(modules, book_frame(bid_levels(), ask_levels()), book_frame(bids_with(odd, where), ask_levels()))


@pytest.mark.parametrize("change", ["duplicate", "unsorted", "best-first", "zero-size"])
def test_order_tracking_across_the_loop_and_the_general_parsers(modules: dict[str, ModuleType], change: str) -> None:
    # the loop and the general parsers share the run's order state: a level between them that
    # breaks the order, or one the general parsers take, must leave the side built as the twin's
    bids = bid_levels()
    spaced = bids[20].replace(":", " : ")  # taken by the general parsers, in order
    if change == "duplicate":
        bids[30] = bids[29]
    elif change == "unsorted":
        bids[29], bids[30] = bids[30], bids[29]
    elif change == "best-first":
        bids = bids[::-1]
    else:
        bids[30] = bids[30].rsplit('"size":', 1)[0] + '"size":"0"}'
    bids[20] = spaced
    fed(modules, book_frame(bid_levels(), ask_levels()), book_frame(bids, ask_levels()))


@pytest.mark.parametrize("tail_bytes", range(0, 80))
def test_last_levels_near_the_end_same_state(modules: dict[str, ModuleType], tail_bytes: int) -> None:
    # a level is taken by the loop only 64 bytes or more before the end: the last asks sit at
    # every distance from it, and the frame cut inside the final level must be refused the same
    frame = book_frame(bid_levels(), ask_levels(), tail=',"event_type":"book"}' + " " * tail_bytes)
    twin = fed(modules, frame)
    assert len(twin.reference.book(TOKEN, depth=None)[1]) == LEVELS
    cut = frame[: frame.rindex("}]") - tail_bytes % 30]  # ends inside the last asks, often on a digit
    twin.feed(cut, recv_ts_ns=9)
    twin.feed(cut.encode(), recv_ts_ns=10)


def test_frame_ending_in_digits_same_state(modules: dict[str, ModuleType]) -> None:
    # the loop's digit runs are stopped by the frame's last byte: a frame that ends on a digit
    # (cut inside a long size) must be parsed without the loop and refused the same
    bids = bid_levels()
    bids[-1] = level("0.45", "1" * 200)
    frame = book_frame(bids, ask_levels())
    cut = frame[: frame.index("1" * 200) + 150]
    fed(modules, book_frame(bid_levels(), ask_levels()), cut, cut.encode())


def test_random_levels_exact(modules: dict[str, ModuleType]) -> None:
    # every shape the loop takes, in random order and length, exact to the unit
    rng = random.Random(14)
    for _ in range(40):
        book: dict[int, int] = {}
        texts = []
        for units in sorted(rng.sample(range(1, 5000), rng.randint(1, 120))):
            decimals = rng.randint(1, 4)
            units -= units % 10 ** (4 - decimals)
            if units == 0 or units in book:
                continue
            int_digits, size_decimals = rng.randint(1, 12), rng.choice([0, 0, 1, 2, 3, 6])
            whole = rng.randrange(10 ** (int_digits - 1), 10**int_digits) if int_digits > 1 else rng.randint(1, 9)
            frac = rng.randrange(10 ** (size_decimals - 1), 10**size_decimals) if size_decimals else 0
            size_text = f"{whole}.{frac:0{size_decimals}d}" if size_decimals else str(whole)
            book[units] = whole * 10**6 + frac * 10 ** (6 - size_decimals)
            texts.append(level(f"0.{units // 10 ** (4 - decimals):0{decimals}d}", size_text))
        twin = fed(modules, book_frame(texts, []))
        bids, _ = twin.reference.book(TOKEN, depth=None)
        assert bids == sorted(book.items(), reverse=True)


@pytest.mark.parametrize("sep", ["", ";", "}", "]", "{", " ,", ",,", "\x00"], ids=repr)
def test_odd_byte_between_levels_same_state(modules: dict[str, ModuleType], sep: str) -> None:
    # only a bare comma continues the loop: whatever else follows a level's '}' ends the run
    bids = bid_levels()
    frame = book_frame(bids, ask_levels()).replace(bids[10] + "," + bids[11], bids[10] + sep + bids[11])
    fed(modules, book_frame(bid_levels(), ask_levels()), frame)


FLAWED_LEVELS = {
    "off-grid": ("bids", level("0.3995", "5")),
    "off-grid-size-0": ("asks", level("0.7005", "0")),
    "bid-at-one": ("bids", level("1", "5")),
    "bid-at-one-size-0": ("bids", level("1", "0")),
    "ask-at-zero": ("asks", level("0", "5")),
    "ask-at-zero-size-0": ("asks", level("0", "0")),
    "off-grid-and-impossible": ("asks", level("0", "5") + "," + level("0.7005", "5")),
}


@pytest.mark.parametrize("side, odd", list(FLAWED_LEVELS.values()), ids=list(FLAWED_LEVELS))
@pytest.mark.parametrize("where", WHERE)
def test_flawed_level_in_deep_book_same_state(modules: dict[str, ModuleType], side: str, odd: str, where: int) -> None:
    # the book's flaw (off the 0.001 grid anywhere first, then a bid at 1 or an ask at 0 with a
    # size) is read from the whole snapshot, size-0 levels included for the grid
    bids, asks = bid_levels(), ask_levels()
    (bids if side == "bids" else asks).insert(where, odd)
    tail = ',"tick_size":"0.001","event_type":"book"}'
    fed(modules, book_frame(bid_levels(), ask_levels(), tail=tail), book_frame(bids, asks, tail=tail),
        book_frame(bid_levels(), ask_levels(), tail=tail))
