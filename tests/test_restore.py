"""BookStore.export_token / restore_token: a token's whole state as a versioned blob, restored exactly.

Checked in both cores and across them: after random histories a restored token has the source's row
(SEQ and EPOCH by the max rule), book, owner and resolution, and it goes on exactly like the source
under the same frames (the hidden tick flags included). Malformed blobs are a ValueError and change
nothing.
"""

from __future__ import annotations

import importlib
import random
import struct
import uuid
from types import ModuleType
from typing import Any

import pytest

import framegen
from builders import NO, OTHER, YES, book_event, frame
import pm_ws
from pm_ws.row import EPOCH, N_FIELDS, PRICE_SCALE, SEQ, SEQ_STEP, STATE, TICK, TOKEN_TAG, State

# The documented layout, restated here on purpose: a change of the format must show up as a failing test
HEADER = struct.Struct("<4sBBBBiII")
ROW = struct.Struct(f"<{N_FIELDS}q")
LEVEL = struct.Struct("<Hq")
TOKENS = framegen.SUBSCRIBED


def core(tag: str) -> ModuleType:
    return importlib.import_module(f"pm_ws._core_{tag}")


CORE_PAIRS = [
    pytest.param(source, target, marks=pytest.mark.c_extension) if "c" in (source, target) else (source, target)
    for source in ("c", "py")
    for target in ("c", "py")
]


def random_frames(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    """Frames with receive times and owners, and now and then a store call, as ``(kind, ...)`` steps."""
    steps: list[tuple[Any, ...]] = [("feed", framegen.snapshot_frame(rng), 1, 0)]
    for _ in range(count):
        roll, token = rng.random(), rng.choice(TOKENS)
        if roll < 0.05:
            steps.append(("stale", token))
        elif roll < 0.07:
            steps.append(("resolve", token, rng.choice((True, False, None))))
        elif roll < 0.10:
            steps.append(("load", token))
        else:
            data = framegen.as_bytes(framegen.frame(rng))
            steps.append(("feed", data, rng.randint(0, 2**62), rng.choice(framegen.OWNERS)))
    return steps


def run(store: Any, dispatcher: Any, steps: list[tuple[Any, ...]]) -> None:
    for kind, *args in steps:
        if kind == "feed":
            dispatcher.feed(args[0], args[1], args[2])
        elif kind == "stale":
            store.mark_stale([args[0]])
        elif kind == "resolve":
            store.resolve(args[0], args[1])
        else:
            try:
                store.load_book(args[0], [(4000, 10_000_000)], [(6000, 5_000_000)], 0, 7, 9)
            except ValueError:
                pass  # off the token's tick grid


def new_store(module: ModuleType, rng: random.Random) -> Any:
    store = module.BookStore(8)
    for token in TOKENS:
        store.add(token, rng.choice(framegen.OWNERS))
    return store


def row_of(store: Any, token: str) -> list[int]:
    return list(store.view.tolist()[store.slot(token)])


def state_of(store: Any, token: str) -> tuple[Any, ...]:
    return row_of(store, token), store.book(token, None), store.owner(token), store.resolution(token)


def without_counters(row: list[int]) -> list[int]:
    return [0 if field in (SEQ, EPOCH) else value for field, value in enumerate(row)]


@pytest.mark.parametrize(("source_tag", "target_tag"), CORE_PAIRS)
@pytest.mark.parametrize("seed", range(40))
def test_restored_token_equals_the_source_and_goes_on_like_it(source_tag: str, target_tag: str, seed: int) -> None:
    rng = random.Random(seed)
    steps = random_frames(rng, rng.randint(5, 80))
    split = rng.randint(1, len(steps))
    source = new_store(core(source_tag), rng)
    source_dispatcher = core(source_tag).Dispatcher(source)
    run(source, source_dispatcher, steps[:split])
    target = core(target_tag).BookStore(8)
    for token in TOKENS:
        target.add(token)
    exact = set()
    for token in TOKENS:
        before = row_of(target, token)
        blob = source.export_token(token)
        target.restore_token(token, blob)
        row, want = row_of(target, token), row_of(source, token)
        assert row[SEQ] == max(want[SEQ], before[SEQ] + SEQ_STEP) and row[EPOCH] == max(want[EPOCH], before[EPOCH] + 1)
        assert without_counters(row) == without_counters(want), token
        assert state_of(target, token)[1:] == state_of(source, token)[1:], token
        assert target.export_token(token)[HEADER.size + ROW.size :] == blob[HEADER.size + ROW.size :]
        if row == want:
            exact.add(token)
        elif want[SEQ] > before[SEQ] + SEQ_STEP and want[EPOCH] > before[EPOCH]:
            pytest.fail(f"{token}: a source ahead of the slot must give the identical row")
    # the same frames from here on: the hidden flags must make the restored tokens behave the same
    target_dispatcher = core(target_tag).Dispatcher(target)
    for step in steps[split:]:
        run(source, source_dispatcher, [step])
        run(target, target_dispatcher, [step])
        for token in TOKENS:
            row, want = row_of(target, token), row_of(source, token)
            if token not in exact:
                row, want = without_counters(row), without_counters(want)
            assert (row, *state_of(target, token)[1:]) == (want, *state_of(source, token)[1:]), (token, step)


@pytest.mark.c_extension
@pytest.mark.parametrize("seed", range(40))
def test_both_cores_export_the_same_bytes(seed: int) -> None:
    stores = {}
    for tag in ("c", "py"):
        rng = random.Random(seed)
        steps = random_frames(rng, rng.randint(5, 80))
        stores[tag] = new_store(core(tag), rng)
        run(stores[tag], core(tag).Dispatcher(stores[tag]), steps)
    for token in TOKENS:
        assert stores["c"].export_token(token) == stores["py"].export_token(token)


def test_blob_layout_is_the_documented_one(impl: ModuleType) -> None:
    store = impl.BookStore(4)
    store.add(YES, 7)
    dispatcher = impl.Dispatcher(store)
    dispatcher.feed(frame(book_event(tick_size="0.01")), 5)
    store.mark_stale([YES])
    store.resolve(YES, True)
    blob = store.export_token(YES)
    magic, version, flags, resolution, fields, owner, n_bids, n_asks = HEADER.unpack_from(blob)
    assert (magic, version, flags, resolution, fields, owner, n_bids, n_asks) == (b"PMTK", 1, 3, 3, N_FIELDS, 7, 3, 3)
    assert list(ROW.unpack_from(blob, HEADER.size)) == row_of(store, YES)
    levels = list(LEVEL.iter_unpack(blob[HEADER.size + ROW.size :]))
    bids, asks = store.book(YES, None)
    assert levels == bids[::-1] + asks[::-1]  # worst to best, as the cores keep them
    assert len(blob) == HEADER.size + ROW.size + LEVEL.size * 6


def test_hidden_tick_flags_travel(impl: ModuleType) -> None:
    # After mark_stale, a token whose books named tick_size turns LIVE only on a book naming it
    source = impl.BookStore(4)
    source.add(YES)
    impl.Dispatcher(source).feed(frame(book_event(tick_size="0.01")), 1)
    source.mark_stale([YES])
    target = impl.BookStore(4)
    target.add(YES)
    target.restore_token(YES, source.export_token(YES))
    dispatcher = impl.Dispatcher(target)
    dispatcher.feed(frame(book_event()), 2)
    assert target.top(YES).state is State.STALE
    dispatcher.feed(frame(book_event(tick_size="0.01")), 3)
    assert target.top(YES).state is State.LIVE


def test_seq_and_epoch_never_go_back(impl: ModuleType) -> None:
    store = impl.BookStore(4)
    store.add(YES)
    dispatcher = impl.Dispatcher(store)
    dispatcher.feed(frame(book_event()), 1)
    blob = store.export_token(YES)
    for _ in range(5):
        dispatcher.feed(frame(book_event()), 2)
    before = row_of(store, YES)
    store.restore_token(YES, blob)  # an older state of the same token
    after = row_of(store, YES)
    assert after[SEQ] == before[SEQ] + SEQ_STEP and after[EPOCH] == before[EPOCH] + 1
    assert without_counters(after) == without_counters(list(ROW.unpack_from(blob, HEADER.size)))
    assert store.top(YES).state is State.LIVE


def test_resolution_and_owner_are_restored_and_cleared(impl: ModuleType) -> None:
    source = impl.BookStore(4)
    source.add(YES, 3)
    plain = source.export_token(YES)
    source.resolve(YES, False)
    target = impl.BookStore(4)
    target.add(YES)
    target.restore_token(YES, source.export_token(YES))
    assert (target.owner(YES), target.resolution(YES), target.top(YES).state) == (3, False, State.RESOLVED)
    target.restore_token(YES, plain)  # not resolved in that blob: the resolution goes
    assert (target.resolution(YES), target.top(YES).state) == (None, State.SUBSCRIBING)
    target.resolve(YES, True)
    assert target.resolution(YES) is True


def test_blob_kinds_and_errors_of_the_call(impl: ModuleType) -> None:
    store = impl.BookStore(4)
    store.add(YES)
    blob = store.export_token(YES)
    store.restore_token(YES, bytearray(blob))
    store.restore_token(YES.encode(), memoryview(blob))
    with pytest.raises(KeyError):
        store.export_token(OTHER)
    with pytest.raises(KeyError):
        store.restore_token(OTHER, blob)
    with pytest.raises(TypeError):
        store.restore_token(YES, blob.decode("latin-1"))


def _parts(blob: bytes) -> tuple[list[Any], list[int], list[tuple[int, int]]]:
    return list(HEADER.unpack_from(blob)), list(ROW.unpack_from(blob, HEADER.size)), list(
        LEVEL.iter_unpack(blob[HEADER.size + ROW.size :])
    )


def _blob(header: list[Any], row: list[int], levels: list[tuple[int, int]]) -> bytes:
    return HEADER.pack(*header) + ROW.pack(*row) + b"".join(LEVEL.pack(*level) for level in levels)


def _edit(header: int | None = None, value: Any = None, field: int | None = None, number: int = 0,
          level: int | None = None, new_level: tuple[int, int] = (0, 0)) -> Any:  # fmt: skip
    def edited(blob: bytes) -> bytes:
        head, row, levels = _parts(blob)
        if header is not None:
            head[header] = value
        if field is not None:
            row[field] = number
        if level is not None:
            levels[level] = new_level
        return _blob(head, row, levels)

    return edited


MALFORMED = {
    "empty": lambda blob: b"",
    "cut short": lambda blob: blob[:-1],
    "padded": lambda blob: blob + b"\0",
    "header only": lambda blob: blob[: HEADER.size],
    "foreign magic": _edit(0, b"PMTX"),
    "version 2": _edit(1, 2),
    "unknown flag": _edit(2, 4),
    "resolution 4": _edit(3, 4),
    "row fields": _edit(4, N_FIELDS + 1),
    "owner negative": _edit(5, -1),
    "more bids than sent": _edit(6, 4),
    "another token": _edit(field=TOKEN_TAG, number=12345),
    "odd SEQ": _edit(field=SEQ, number=7),
    "EPOCH negative": _edit(field=EPOCH, number=-1),
    "state EMPTY": _edit(field=STATE, number=0),
    "state 7": _edit(field=STATE, number=7),
    "tick above 1": _edit(field=TICK, number=PRICE_SCALE + 1),
    "spare field": _edit(field=N_FIELDS - 1, number=1),
    "row best bid differs": _edit(field=0, number=4900),
    "bids out of order": _edit(level=0, new_level=(5000, 1)),
    "size 0": _edit(level=1, new_level=(4900, 0)),
    "price above 1": _edit(level=3, new_level=(PRICE_SCALE + 1, 1)),
}


@pytest.mark.parametrize("damage", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_blob_is_a_value_error_and_changes_nothing(impl: ModuleType, damage: Any) -> None:
    source = impl.BookStore(4)
    source.add(YES)
    impl.Dispatcher(source).feed(frame(book_event(tick_size="0.01")), 1)
    blob = damage(source.export_token(YES))
    store = impl.BookStore(4)
    store.add(NO, 2)
    store.add(YES, 1)
    impl.Dispatcher(store).feed(frame(book_event(bids=[("0.3", "1")], asks=[("0.7", "2")])), 4)
    store.mark_stale([YES])
    before = bytes(store.view), state_of(store, YES), store.export_token(YES)
    with pytest.raises(ValueError):
        store.restore_token(YES, blob)
    assert (bytes(store.view), state_of(store, YES), store.export_token(YES)) == before


def test_restore_into_a_shared_table(impl: ModuleType) -> None:
    source = impl.BookStore(4)
    source.add(YES)
    impl.Dispatcher(source).feed(frame(book_event()), 11)
    name = f"pmws-test-{uuid.uuid4().hex[:12]}"
    table = impl.BookStore(4, shared=name)
    try:
        table.add(NO)
        table.add(YES)
        table.restore_token(YES, source.export_token(YES))
        with pm_ws.TopReader(name) as reader:
            assert reader.top(YES) == source.top(YES) and reader.top(YES).state is State.LIVE
            assert reader.snapshot().tolist()[reader.slot(YES)] == row_of(source, YES)
    finally:
        table.close_shared()
