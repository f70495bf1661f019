"""Deep `book` frames: the level fast path of the compiled core against the pure twin.

Levels in the server's layout ({"price":"..","size":".."} joined by bare commas) are staged in
one run; anything else in a level list hands that level to the generic scanner and the run
resumes at the next one. Each case below puts one odd level (or odd bytes between levels) at
the start, the middle and the end of 50+50-level books and checks both cores end equal.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # differential is a plain helper beside the tests
from differential import Twin  # noqa: E402

from pm_ws.row import State  # noqa: E402

pytestmark = pytest.mark.c_extension

TOKEN = "42"
LEVELS = 50


@pytest.fixture(scope="module")
def modules() -> dict[str, ModuleType]:
    return {"c": importlib.import_module("pm_ws._core_c"), "py": importlib.import_module("pm_ws._core_py")}


def level(price: str, size: str) -> str:
    return f'{{"price":"{price}","size":"{size}"}}'


def size_of(i: int) -> str:
    # sizes of every length the server writes: whole shares, cents, micro-shares, large ones
    return ("152", "11039.77", "0.5", "219.217767", "1000000", "7", "12345678.1")[i % 7]


def bid_levels(n: int = LEVELS) -> list[str]:
    # worst -> best on the 0.001 grid: 0.400, 0.401, ... ("0.4", "0.401" as the server writes them)
    return [level(f"0.{400 + i:03d}".rstrip("0"), size_of(i)) for i in range(n)]


def ask_levels(n: int = LEVELS) -> list[str]:
    return [level(f"0.{600 - i:03d}".rstrip("0"), size_of(i + 3)) for i in range(n)]


def book_frame(bids: list[str], asks: list[str], *, sep: str = ",", tail: str = ',"event_type":"book"}') -> str:
    return (f'{{"market":"0x01","asset_id":"{TOKEN}","timestamp":"1786728400000","hash":"ab",'
            f'"bids":[{sep.join(bids)}],"asks":[{sep.join(asks)}]{tail}')  # fmt: skip


def test_deep_book_levels_exact(modules: dict[str, ModuleType]) -> None:
    twin = Twin(modules, (TOKEN,))
    twin.feed(book_frame(bid_levels(), ask_levels()), recv_ts_ns=1)
    bids, asks = twin.reference.book(TOKEN, depth=None)
    assert len(bids) == len(asks) == LEVELS
    assert bids[0] == (4490, 152_000_000)  # best bid 0.449, size_of(49) "152"
    assert bids[1] == (4480, 12_345_678_100_000)  # size_of(48) "12345678.1"
    assert bids[-1] == (4000, 152_000_000)
    assert asks[0] == (5510, 219_217_767)  # best ask 0.551, size_of(52) "219.217767"
    assert asks[-1] == (6000, 219_217_767)
    assert twin.reference.top(TOKEN).state == State.LIVE


ODD_LEVELS = {
    "price-one": level("1", "5"),
    "price-zero": level("0", "5"),
    "price-no-int": level(".45", "5"),
    "price-4-decimals": level("0.4512", "5"),
    "price-5-decimals": level("0.45123", "5"),
    "price-above-one": level("1.0001", "5"),
    "price-two": level("2", "5"),
    "price-leading-zeros": level("00000000000.5", "5"),
    "price-empty": level("", "5"),
    "price-dot": level(".", "5"),
    "price-two-dots": level("0.4.5", "5"),
    "price-minus": level("-0.5", "5"),
    "price-exponent": level("5e-1", "5"),
    "price-number": '{"price":0.45,"size":"5"}',
    "price-escaped": '{"price":"0.4\\u0035","size":"5"}',
    "size-zero": level("0.45", "0"),
    "size-dot-end": level("0.45", "5."),
    "size-7-decimals": level("0.45", "1.1234567"),
    "size-int64-max": level("0.45", "9223372036854.775807"),
    "size-int64-overflow": level("0.45", "9223372036854.775808"),
    "size-20-digits": level("0.45", "12345678901234567890"),
    "size-empty": level("0.45", ""),
    "size-space": level("0.45", " 5"),
    "size-missing": '{"price":"0.45"}',
    "keys-swapped": '{"size":"5","price":"0.45"}',
    "key-extra": '{"price":"0.45","size":"5","x":[1]}',
    "key-escaped": '{"pr\\u0069ce":"0.45","size":"5"}',
    "key-duplicate": '{"price":"0.45","size":"5","price":"0.46"}',
    "spaces-inside": '{ "price" : "0.45" , "size" : "5" }',
    "not-object": "[1]",
    "null": "null",
    "empty-object": "{}",
    "duplicate-price": level("0.42", "5"),  # the bids already hold 0.42
    "out-of-order": level("0.999", "5"),
}


@pytest.mark.parametrize("odd", list(ODD_LEVELS.values()), ids=list(ODD_LEVELS))
@pytest.mark.parametrize("where", [0, 1, LEVELS // 2, LEVELS - 1, LEVELS])
def test_deep_book_odd_level_same_state(modules: dict[str, ModuleType], odd: str, where: int) -> None:
    twin = Twin(modules, (TOKEN,))
    twin.feed(book_frame(bid_levels(), ask_levels()), recv_ts_ns=1)
    for side in ("bids", "asks"):
        bids, asks = bid_levels(), ask_levels()
        (bids if side == "bids" else asks).insert(where, odd)
        twin.feed(book_frame(bids, asks), recv_ts_ns=2)


@pytest.mark.parametrize("sep", [", ", ",\n", " ,", ",\t\r\n"], ids=["space", "newline", "space-before", "mixed"])
def test_deep_book_whitespace_between_levels_same_state(modules: dict[str, ModuleType], sep: str) -> None:
    twin = Twin(modules, (TOKEN,))
    twin.feed(book_frame(bid_levels(), ask_levels(), sep=sep), recv_ts_ns=1)
    bids = bid_levels()
    twin.feed(book_frame(bids[:10], ask_levels()) .replace(bids[5] + ",", bids[5] + " ,"), recv_ts_ns=2)


@pytest.mark.parametrize("cut", range(1, 120, 7))
def test_deep_book_cut_short_same_state(modules: dict[str, ModuleType], cut: int) -> None:
    # the fast path must never read past the frame: every prefix of the tail is invalid JSON
    twin = Twin(modules, (TOKEN,))
    frame = book_frame(bid_levels(), ask_levels(), tail="}")
    twin.feed(frame[:-cut], recv_ts_ns=1)
    twin.feed(frame.encode()[:-cut], recv_ts_ns=2)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 100, 150])
def test_deep_book_sizes_same_state(modules: dict[str, ModuleType], n: int) -> None:
    twin = Twin(modules, (TOKEN,))
    twin.feed(book_frame(bid_levels(n), ask_levels(n), tail="}"), recv_ts_ns=1)
    twin.feed(book_frame(bid_levels(n)[::-1], ask_levels(n)[::-1]), recv_ts_ns=2)  # best first: sorted


def _repeat_best(levels: list[str]) -> list[str]:
    return levels + levels[-1:]  # the best price twice, side by side


def _generic_first(levels: list[str]) -> list[str]:
    # the worst level again, spaced out: the generic scanner takes it, the fast run the rest
    return [levels[0].replace(":", " : ")] + levels


def _zero_best(levels: list[str]) -> list[str]:
    return levels[:-1] + [levels[-1].replace(levels[-1].split('"size":')[1], '"0"}')]


@pytest.mark.parametrize("change", [_repeat_best, _generic_first, _zero_best, lambda levels: levels[::-1]],
                         ids=["repeat-best", "generic-first", "zero-best", "reversed"])
def test_deep_book_sorted_run_broken_same_state(modules: dict[str, ModuleType], change) -> None:  # type: ignore[no-untyped-def]
    # a side whose levels are strictly worst -> best, none of size 0, is copied without the
    # duplicate, sort and drop checks: each case breaks exactly one of those conditions
    twin = Twin(modules, (TOKEN,))
    twin.feed(book_frame(bid_levels(), ask_levels()), recv_ts_ns=1)
    twin.feed(book_frame(change(bid_levels()), ask_levels()), recv_ts_ns=2)
    twin.feed(book_frame(bid_levels(), ask_levels()), recv_ts_ns=3)
    twin.feed(book_frame(bid_levels(), change(ask_levels())), recv_ts_ns=4)
