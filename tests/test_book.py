"""BookStore: slots, rows, books, stale marking and the exported read-only view."""

from __future__ import annotations

import gc
import struct

import numpy
import pytest

from pm_ws.errors import CapacityError
from pm_ws.row import (
    ASK_LEVELS,
    ASK_PX,
    ASK_SZ,
    BID_LEVELS,
    BID_PX,
    BID_SZ,
    EPOCH,
    N_FIELDS,
    PRICE_SCALE,
    SEQ,
    STATE,
    TOKEN_TAG,
    State,
    Top,
    token_tag,
)

from builders import NO, OTHER, YES, book_event, frame, tick_size_change_event


def row_of(store, token_id):
    return numpy.asarray(store.view)[store.slot(token_id)].tolist()


def buffer_address(store):
    return numpy.asarray(store.view).__array_interface__["data"][0]


def test_bookstore_default_capacity_1024(impl):
    assert impl.BookStore().capacity == 1024


def test_bookstore_capacity_read_only(impl):
    store = impl.BookStore(4)
    with pytest.raises(AttributeError):
        store.capacity = 8


def test_view_layout_int64_rows_read_only(impl):
    view = impl.BookStore(5).view
    assert view.format == "q"
    assert view.itemsize == 8
    assert view.ndim == 2
    assert view.shape == (5, N_FIELDS)
    assert view.nbytes == 5 * N_FIELDS * 8
    assert view.readonly
    assert view.c_contiguous


def test_view_write_type_error(impl):
    store = impl.BookStore(2)
    store.add(YES)
    with pytest.raises(TypeError):
        store.view[0, BID_PX] = 1


def test_view_obj_not_writable_row_stays_subscribing(impl):
    # A reader holding the view (or what it exports) cannot make a row LIVE
    store = impl.BookStore(2)
    store.add(YES)
    before = bytes(store.view)
    obj = store.view.obj
    with pytest.raises(TypeError):
        struct.pack_into("q", obj, STATE * 8, State.LIVE)
    with pytest.raises(TypeError):
        memoryview(obj)[:8] = bytes(8)
    assert memoryview(obj).readonly
    assert bytes(store.view) == before
    assert store.top(YES).state == State.SUBSCRIBING


def test_view_new_store_all_zero(impl):
    assert bytes(impl.BookStore(3).view) == bytes(3 * N_FIELDS * 8)


def test_view_numpy_asarray_int64_matrix(impl):
    store = impl.BookStore(3)
    store.add(YES)
    array = numpy.asarray(store.view)
    assert array.dtype == numpy.int64
    assert array.shape == (3, N_FIELDS)
    assert not array.flags.writeable
    assert array[0, ASK_PX] == PRICE_SCALE


def test_view_same_buffer_after_many_operations_updated_in_place(impl):
    # Arrange
    store = impl.BookStore(4)
    dispatcher = impl.Dispatcher(store)
    early_view = store.view
    address = buffer_address(store)
    # Act
    for round_number in range(50):
        for token_id in (YES, NO, OTHER):
            store.add(token_id)
        dispatcher.feed(frame(book_event(YES, [("0.4", "10"), ("0.5", str(round_number + 1))], [("0.6", "5")])))
        store.mark_stale([NO])
        store.remove(OTHER)
        store.remove(NO)
    # Assert
    assert buffer_address(store) == address
    assert early_view[store.slot(YES), BID_SZ] == 50_000_000
    assert bytes(early_view) == bytes(store.view)


def test_view_outlives_store_readable(impl):
    store = impl.BookStore(2)
    store.add(YES)
    view = store.view
    del store
    gc.collect()
    assert view[0, ASK_PX] == PRICE_SCALE
    assert numpy.asarray(view)[0, STATE] == State.SUBSCRIBING


def test_add_new_token_lowest_slot_initial_row(impl):
    store = impl.BookStore(4)
    assert [store.add(t) for t in (YES, NO, OTHER)] == [0, 1, 2]
    expected = [0] * N_FIELDS
    expected[ASK_PX] = PRICE_SCALE
    expected[STATE] = State.SUBSCRIBING
    expected[TOKEN_TAG] = token_tag(NO)
    expected[SEQ] = 2  # the add is a change: SEQ steps by 2 (odd while the row is written)
    assert row_of(store, NO) == expected


def test_add_existing_token_same_slot_row_untouched(impl):
    store = impl.BookStore(4)
    store.add(YES)
    impl.Dispatcher(store).feed(frame(book_event(YES, [("0.4", "10")], [("0.6", "5")])), 7)
    before = bytes(store.view)
    assert store.add(YES) == 0
    assert store.add(YES.encode()) == 0
    assert bytes(store.view) == before
    assert len(store) == 1


def test_add_bytes_id_held_as_str(impl):
    store = impl.BookStore(2)
    slot = store.add(YES.encode())
    assert store.slot(YES) == slot
    assert store.tokens() == [YES]
    assert YES in store and YES.encode() in store


@pytest.mark.parametrize("token_id", ["a", "x" * 100, "0xAb_c.d:e-f", b"123"])
def test_add_valid_id_shapes_accepted(impl, token_id):
    store = impl.BookStore(2)
    assert store.add(token_id) == 0


@pytest.mark.parametrize("token_id", ["", "x" * 101, "a b", "é", "12\n", "1/2", '"1"', b"\xff", b""])
def test_add_invalid_id_value_error(impl, token_id):
    store = impl.BookStore(2)
    with pytest.raises(ValueError):
        store.add(token_id)
    assert len(store) == 0


NOT_IDS = [None, 123, 1.5, ["1"], bytearray(b"1"), memoryview(b"1")]
NOT_ID_NAMES = ["None", "int", "float", "list", "bytearray", "memoryview"]


@pytest.mark.parametrize("token_id", NOT_IDS, ids=NOT_ID_NAMES)
@pytest.mark.parametrize(
    "method, more",
    [("add", ()), ("remove", ()), ("slot", ()), ("top", ()), ("book", ()), ("owner", ()), ("set_owner", (1,)),
     ("load_book", ([], [], 100, 1, 2)), ("resolve", (True,)), ("resolution", ())],
    ids=lambda value: value if isinstance(value, str) else "",
)  # fmt: skip
def test_non_string_id_type_error_store_unchanged(impl, method, more, token_id):
    store = impl.BookStore(2)
    store.add(YES)
    before = bytes(store.view)
    with pytest.raises(TypeError, match="token id must be str or bytes"):
        getattr(store, method)(token_id, *more)
    assert bytes(store.view) == before
    assert store.tokens() == [YES]


@pytest.mark.parametrize("token_id", NOT_IDS, ids=NOT_ID_NAMES)
def test_contains_non_string_id_false(impl, token_id):
    store = impl.BookStore(2)
    store.add("1")
    assert token_id not in store


class _Id(str):
    """A str subclass with its own equality and hash: the store must hold the plain value."""

    def __eq__(self, other):
        return False

    def __hash__(self):
        return 0


@pytest.mark.parametrize("make", [numpy.str_, _Id], ids=["numpy.str_", "subclass"])
def test_str_subclass_id_same_token_as_str(impl, make):
    store = impl.BookStore(2)
    slot = store.add(make(YES))
    assert store.add(YES) == slot
    assert store.slot(make(YES)) == store.slot(YES) == slot
    assert make(YES) in store and store.top(make(YES)) == store.top(YES)
    assert [type(token) for token in store.tokens()] == [str]
    store.remove(make(YES))
    assert len(store) == 0


def test_non_ascii_str_subclass_not_an_id(impl):
    store = impl.BookStore(2)
    with pytest.raises(ValueError):
        store.add(_Id("é"))
    assert _Id("é") not in store


def test_add_full_store_capacity_error(impl):
    store = impl.BookStore(2)
    store.add(YES)
    store.add(NO)
    with pytest.raises(CapacityError, match=rf"full \(2 slots\): no slot for token {OTHER!r}"):
        store.add(OTHER.encode())
    assert store.add(NO) == 1  # a held token still answers when full


def test_remove_row_zeroed_token_gone(impl):
    # Arrange
    store = impl.BookStore(3)
    store.add(YES)
    slot = store.add(NO)
    impl.Dispatcher(store).feed(frame(book_event(NO, [("0.4", "10")], [("0.6", "5")])), 7)
    # Act
    store.remove(NO)
    # Assert
    expected = [0] * N_FIELDS
    expected[SEQ], expected[EPOCH] = 6, 1  # add, book, remove: kept for the slot (SEQ bumped): they never go back
    assert numpy.asarray(store.view)[slot].tolist() == expected
    assert NO not in store
    assert len(store) == 1
    assert store.tokens() == [YES]


def test_remove_unknown_or_invalid_id_no_op(impl):
    store = impl.BookStore(2)
    store.add(YES)
    before = bytes(store.view)
    store.remove(NO)
    store.remove("not valid!")
    assert bytes(store.view) == before
    assert len(store) == 1


def test_add_after_remove_reuses_lowest_free_slot(impl):
    store = impl.BookStore(4)
    for token_id in (YES, NO, OTHER, "spare"):
        store.add(token_id)
    store.remove(OTHER)
    store.remove(YES)
    assert store.add("new1") == 0
    assert store.add("new2") == 2
    with pytest.raises(CapacityError):
        store.add("new3")


def test_add_after_remove_fresh_row_and_empty_book(impl):
    store = impl.BookStore(2)
    store.add(YES)
    impl.Dispatcher(store).feed(frame(book_event(YES, [("0.4", "10")], [("0.6", "5")])))
    store.remove(YES)
    store.add(YES)
    assert store.top(YES).state == State.SUBSCRIBING
    assert (store.top(YES).epoch, store.top(YES).seq) == (2, 8)  # add: SEQ 2; book: 1, 4; remove: SEQ 6; add: both
    assert store.book(YES) == ([], [])


def test_tokens_slot_order(impl):
    store = impl.BookStore(4)
    for token_id in (YES, NO, OTHER):
        store.add(token_id)
    store.remove(YES)
    store.add("late")
    assert store.tokens() == ["late", NO, OTHER]


@pytest.mark.parametrize("method", ["slot", "top", "book"])
def test_lookup_unknown_id_key_error(impl, method):
    store = impl.BookStore(2)
    store.add(YES)
    with pytest.raises(KeyError):
        getattr(store, method)(NO)


def test_contains_unknown_or_foreign_type_false(impl):
    store = impl.BookStore(2)
    store.add(YES)
    assert NO not in store
    assert 5 not in store
    assert YES in store


def test_top_new_token_subscribing_empty_sides(impl):
    store = impl.BookStore(2)
    store.add(YES)
    top = store.top(YES)
    assert isinstance(top, Top)
    assert top.state is State.SUBSCRIBING
    assert (top.bid_px, top.bid_sz, top.ask_px, top.ask_sz) == (0, 0, PRICE_SCALE, 0)


def test_top_matches_view_row(impl):
    store = impl.BookStore(2)
    store.add(YES)
    impl.Dispatcher(store).feed(frame(book_event(YES, [("0.45", "3"), ("0.5", "2")], [("0.55", "1")])), 99)
    assert list(store.top(YES)) == row_of(store, YES)[: len(Top._fields)]
    assert store.top(YES).state is State.LIVE


def test_book_best_first_limited_by_depth(impl):
    # Arrange
    store = impl.BookStore(2)
    store.add(YES)
    bids = [(f"0.{n:02d}", str(n)) for n in range(10, 40)]  # ascending: best (0.39) last
    asks = [(f"0.{n:02d}", str(n)) for n in range(70, 40, -1)]  # descending: best (0.41) last
    impl.Dispatcher(store).feed(frame(book_event(YES, bids, asks)))
    # Act
    top_bids, top_asks = store.book(YES)
    all_bids, all_asks = store.book(YES, depth=None)
    # Assert
    assert top_bids == [(3900 - 100 * i, (39 - i) * 1_000_000) for i in range(10)]
    assert top_asks == [(4100 + 100 * i, (41 + i) * 1_000_000) for i in range(10)]
    assert len(all_bids) == 30 and len(all_asks) == 30
    assert store.book(YES, depth=2) == (top_bids[:2], top_asks[:2])
    assert store.book(YES, depth=0) == ([], [])


def test_book_levels_are_int_tuples(impl):
    store = impl.BookStore(2)
    store.add(YES)
    impl.Dispatcher(store).feed(frame(book_event(YES, [("0.5", "1304.72")], [])))
    bids, asks = store.book(YES)
    assert bids == [(5000, 1_304_720_000)] and asks == []
    assert all(type(value) is int for value in bids[0])


def test_mark_stale_held_tokens_stale_epoch_and_seq_bumped(impl):
    # Arrange
    store = impl.BookStore(3)
    store.add(YES)
    store.add(NO)
    impl.Dispatcher(store).feed(frame(book_event(YES, [("0.4", "10")], [("0.6", "5")])))
    before = store.top(YES)
    # Act
    store.mark_stale([YES, NO, OTHER])
    # Assert
    after = store.top(YES)
    assert after.state is State.STALE and store.top(NO).state is State.STALE
    assert (after.epoch, after.seq) == (before.epoch + 1, before.seq + 2)
    assert (store.top(NO).epoch, store.top(NO).seq) == (1, 4)
    assert OTHER not in store


def test_mark_stale_book_kept_for_inspection(impl):
    store = impl.BookStore(2)
    store.add(YES)
    impl.Dispatcher(store).feed(frame(book_event(YES, [("0.4", "10")], [("0.6", "5")])))
    store.mark_stale([YES])
    row = row_of(store, YES)
    assert store.book(YES) == ([(4000, 10_000_000)], [(6000, 5_000_000)])
    assert (row[BID_PX], row[ASK_SZ], row[BID_LEVELS], row[ASK_LEVELS]) == (4000, 5_000_000, 1, 1)


def stale_after_snapshot(impl, tick_size="0.01"):
    """YES LIVE on a book naming ``tick_size`` (None: a book without it), then marked STALE."""
    store = impl.BookStore(2)
    store.add(YES)
    dispatcher = impl.Dispatcher(store)
    snapshot = book_event(YES, [("0.4", "10")], [("0.6", "5")])
    if tick_size is not None:
        snapshot["tick_size"] = tick_size
    dispatcher.feed(frame(snapshot))
    store.mark_stale([YES])
    return store, dispatcher, snapshot


REFRESH = frame(book_event(YES, [("0.41", "10")], [("0.6", "5")]))  # a post-trade refresh: no tick_size


def test_mark_stale_then_only_a_book_naming_the_tick_turns_live(impl):
    # A tick change may be missed while the connection is down, and a post-trade book refresh has no
    # tick_size: it replaces the levels but must not make the row LIVE with a tick nobody confirmed
    store, dispatcher, snapshot = stale_after_snapshot(impl)
    epoch = store.top(YES).epoch
    dispatcher.feed(REFRESH)
    top = store.top(YES)
    assert (top.state, top.tick, top.bid_px, top.epoch) == (State.STALE, 100, 4100, epoch + 1)
    dispatcher.feed(frame(snapshot | {"tick_size": "0.001"}))
    assert (store.top(YES).state, store.top(YES).tick) == (State.LIVE, 10)
    # A tick_size_change confirms the tick: the next book, with or without tick_size, turns it LIVE
    store.mark_stale([YES])
    dispatcher.feed(frame(tick_size_change_event(YES, new="0.01", old="0.001")))
    assert (store.top(YES).state, store.top(YES).tick) == (State.STALE, 100)
    dispatcher.feed(REFRESH)
    assert store.top(YES).state is State.LIVE


def test_mark_stale_books_never_named_the_tick_any_book_turns_live(impl):
    # Servers whose books never carry tick_size (2024 captures) must not leave rows STALE forever,
    # even when a tick_size_change told the tick
    store, dispatcher, _ = stale_after_snapshot(impl, tick_size=None)
    dispatcher.feed(REFRESH)
    assert (store.top(YES).state, store.top(YES).tick) == (State.LIVE, 0)
    dispatcher.feed(frame(tick_size_change_event(YES, new="0.001", old="0.01")))
    dispatcher.feed(REFRESH)
    store.mark_stale([YES])
    dispatcher.feed(frame(book_event(YES, [("0.412", "10")], [("0.6", "5")])))
    assert (store.top(YES).state, store.top(YES).tick) == (State.LIVE, 10)


def test_mark_stale_crossed_refresh_invalid_then_next_refresh_back_to_stale(impl):
    # While the tick is unconfirmed a crossed refresh is INVALID (resync queued), and a later sane
    # refresh without tick_size leaves it STALE, never stuck INVALID with a good book
    store, dispatcher, snapshot = stale_after_snapshot(impl)
    dispatcher.feed(frame(book_event(YES, [("0.61", "10")], [("0.6", "5")])))
    assert store.top(YES).state is State.INVALID and dispatcher.pending_resync() == [YES]
    dispatcher.feed(REFRESH)
    assert store.top(YES).state is State.STALE
    dispatcher.feed(frame(snapshot))
    assert store.top(YES).state is State.LIVE


@pytest.mark.parametrize("token_ids", ["12", b"12", bytearray(b"12")], ids=repr)
def test_mark_stale_bare_string_type_error(impl, token_ids):
    store = impl.BookStore(3)
    for token_id in ("1", "2", "12"):
        store.add(token_id)
    before = bytes(store.view)
    with pytest.raises(TypeError, match="collection of token ids"):
        store.mark_stale(token_ids)
    assert bytes(store.view) == before


@pytest.mark.parametrize("token_id", NOT_IDS, ids=NOT_ID_NAMES)
def test_mark_stale_non_string_id_type_error_nothing_marked(impl, token_id):
    store = impl.BookStore(2)
    store.add(YES)
    before = bytes(store.view)
    with pytest.raises(TypeError, match="token id must be str or bytes"):
        store.mark_stale([YES, token_id])
    assert bytes(store.view) == before


def test_mark_stale_bytes_ids_accepted(impl):
    store = impl.BookStore(2)
    store.add(YES)
    store.mark_stale([YES.encode()])
    assert store.top(YES).state is State.STALE
    assert row_of(store, YES)[EPOCH] == 1 and row_of(store, YES)[SEQ] == 4
