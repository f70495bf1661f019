"""A resolved market's outcome in the row (``OUTCOME``): both cores alike, in ``Top``, and read from another process."""

from __future__ import annotations

import importlib
import multiprocessing
import uuid
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

import pytest

from pm_ws.row import (
    EPOCH, N_FIELDS, OUTCOME, OUTCOME_LOST, OUTCOME_UNKNOWN, OUTCOME_WON, SEQ, STATE, State,
)  # fmt: skip

from builders import NO, OTHER, YES, book_event, frame, row
from differential import Twin

CONTEXT = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing shared but the table


def fields(store: Any, slot: int) -> list[int]:
    return [store.view[slot, index] for index in range(N_FIELDS)]


def test_resolve_writes_the_outcome_of_each_token(store: Any) -> None:
    store.add(OTHER)
    store.resolve(YES, True)
    store.resolve(NO, False)
    store.resolve(OTHER, None)
    assert [store.top(t).outcome for t in (YES, NO, OTHER)] == [OUTCOME_WON, OUTCOME_LOST, OUTCOME_UNKNOWN]
    assert [store.top(t).state for t in (YES, NO, OTHER)] == [State.RESOLVED] * 3
    assert [store.resolution(t) for t in (YES, NO, OTHER)] == [True, False, None]  # the API is unchanged


def test_an_unresolved_row_has_no_outcome(live: Any) -> None:
    assert row(live)[OUTCOME] == OUTCOME_UNKNOWN
    assert live.store.top(YES).outcome == OUTCOME_UNKNOWN


def test_a_winner_learned_later_sets_the_outcome_without_a_new_epoch(store: Any) -> None:
    store.resolve(YES, None)
    first = fields(store, store.slot(YES))
    store.resolve(YES, True)
    second = fields(store, store.slot(YES))
    assert (second[OUTCOME], second[EPOCH], second[STATE]) == (OUTCOME_WON, first[EPOCH], State.RESOLVED)
    assert second[SEQ] > first[SEQ]
    store.resolve(YES, True)  # again: nothing changes, not even SEQ
    assert fields(store, store.slot(YES)) == second


def test_frames_do_not_change_a_resolved_outcome(live: Any) -> None:
    live.store.resolve(YES, False)
    before = row(live)
    live.feed(frame(book_event()), 99)
    assert row(live) == before and before[OUTCOME] == OUTCOME_LOST


def test_remove_clears_the_outcome_and_a_reused_slot_starts_without_one(store: Any) -> None:
    slot = store.slot(YES)
    store.resolve(YES, True)
    store.remove(YES)
    assert store.view[slot, OUTCOME] == 0
    store.add(OTHER)
    assert store.slot(OTHER) == slot and store.top(OTHER).outcome == OUTCOME_UNKNOWN


def test_export_and_restore_carry_the_outcome(impl: ModuleType) -> None:
    source, target = impl.BookStore(4), impl.BookStore(4)
    for store in (source, target):
        store.add(YES)
    impl.Dispatcher(source).feed(frame(book_event()), 1)
    source.resolve(YES, False)
    target.restore_token(YES, source.export_token(YES))
    assert (target.top(YES).outcome, target.resolution(YES)) == (OUTCOME_LOST, False)


@pytest.mark.c_extension
def test_both_cores_write_the_same_rows_when_markets_resolve() -> None:
    modules = {tag: importlib.import_module(f"pm_ws._core_{tag}") for tag in ("c", "py")}
    twin = Twin(modules, (YES, NO, OTHER))
    twin.feed(frame(book_event()), 5)
    twin.call("resolve(YES, None)", lambda s, d: s.resolve(YES, None))
    twin.call("resolve(YES, True)", lambda s, d: s.resolve(YES, True))
    twin.call("resolve(NO, False)", lambda s, d: s.resolve(NO, False))
    twin.call("resolve(OTHER, None)", lambda s, d: s.resolve(OTHER, None))
    twin.feed(frame(book_event()), 6)
    twin.call("remove(NO)", lambda s, d: s.remove(NO))
    twin.call("add(NO)", lambda s, d: s.add(NO))
    twin.call("resolution", lambda s, d: [s.resolution(t) for t in (YES, NO, OTHER)])


def read_outcomes(name: str, reader: str, tokens: list[str], pipe: Connection) -> None:
    # In another process: the outcome and state as a TopReader of the shared table sees them
    with importlib.import_module(f"pm_ws._shared_{reader}").TopReader(name) as table:
        pipe.send([(int(table.top(t).state), table.top(t).outcome) for t in tokens])


@pytest.mark.parametrize("reader", [pytest.param("c", marks=pytest.mark.c_extension), "py"])
def test_a_reader_in_another_process_sees_the_winner(impl: ModuleType, reader: str) -> None:
    name = f"pmws-test-{uuid.uuid4().hex[:12]}"
    store = impl.BookStore(4, shared=name)
    try:
        for token in (YES, NO, OTHER):
            store.add(token)
        store.resolve(YES, False)
        store.resolve(NO, True)
        here, there = CONTEXT.Pipe()
        process = CONTEXT.Process(target=read_outcomes, args=(name, reader, [YES, NO, OTHER], there))
        process.start()
        assert here.poll(30), "the reader process answered nothing"
        seen = here.recv()
        process.join(10)
        assert process.exitcode == 0
    finally:
        store.close_shared()
    resolved = int(State.RESOLVED)
    assert seen == [(resolved, OUTCOME_LOST), (resolved, OUTCOME_WON), (int(State.SUBSCRIBING), OUTCOME_UNKNOWN)]
