"""The event vocabulary (pm_ws._events) is the one source: the compiled core's tables equal it,
the counters derive from it, and the limits both cores share have one value."""

from __future__ import annotations

from typing import Any

import pytest

from pm_ws import _events, row
from pm_ws._events import EVENTS, KEYS, STAT_KEYS, EventType, ValueKind
from tests.builders import TS, YES, frame


@pytest.fixture(scope="module")
def core_c():
    """The compiled module itself: these tests are about its tables, not the shared contract."""
    import pm_ws._core_c

    return pm_ws._core_c


# --- the vocabulary itself ---------------------------------------------------------------------


def test_every_event_key_is_a_known_key_listed_in_key_order():
    order = list(KEYS)
    for event in EVENTS:
        for group in (event.required, event.optional):
            assert all(key in KEYS for key in group), event.name
            assert list(group) == sorted(group, key=order.index), event.name
        assert not set(event.required) & set(event.optional), event.name


def test_hot_events_come_before_cold_ones_and_cold_ones_read_no_keys():
    hot = [event.hot for event in EVENTS]
    assert hot == sorted(hot, reverse=True)
    assert all(not (event.required or event.optional) for event in EVENTS if not event.hot)


def test_array_keys_are_last_in_key_order():
    # the compiled core stages the array keys by their position after K_FIRST_ARRAY
    kinds = list(KEYS.values())
    first_array = kinds.index(ValueKind.LEVELS)
    assert all(kind in (ValueKind.LEVELS, ValueKind.ENTRIES) for kind in kinds[first_array:])
    assert ValueKind.ENTRIES not in kinds[:first_array]


def test_element_keys_are_known_keys():
    for key in _events.LEVEL_KEYS + _events.ENTRY_REQUIRED + _events.ENTRY_OPTIONAL:
        assert key in KEYS


def test_stat_keys_have_one_event_counter_per_event_type_in_order():
    counters = [key for key in STAT_KEYS if key.startswith("ev_")]
    assert counters == [f"ev_{event.name}" for event in EVENTS]
    assert len(set(STAT_KEYS)) == len(STAT_KEYS)
    assert row.STAT_KEYS is STAT_KEYS  # still importable from its old home


# --- the compiled tables equal it --------------------------------------------------------------


@pytest.mark.c_extension
def test_compiled_event_table_equals_events(core_c):
    expected = tuple(
        (event.name, kind, event.hot, event.required, event.optional) for kind, event in enumerate(EVENTS, start=1)
    )
    assert core_c.EVENT_TABLE == expected


@pytest.mark.c_extension
def test_compiled_key_table_equals_keys(core_c):
    # each key is recognised by the generic scanner and by the fast path, as the same pm_key
    expected = tuple((name, k, k, str(kind)) for k, (name, kind) in enumerate(KEYS.items()))
    assert core_c.KEY_TABLE == expected


@pytest.mark.c_extension
def test_compiled_element_keys_equal_events(core_c):
    assert core_c.ELEMENT_KEYS == {
        "level": _events.LEVEL_KEYS,
        "entry_required": _events.ENTRY_REQUIRED,
        "entry_optional": _events.ENTRY_OPTIONAL,
    }


@pytest.mark.c_extension
def test_compiled_value_kinds_are_the_python_ones(core_c):
    assert set(core_c.VALUE_NAMES[1:]) == {str(kind) for kind in ValueKind}


@pytest.mark.c_extension
def test_compiled_limits_equal_the_python_ones(core_c):
    assert core_c.C_LIMITS == {
        "PRICE_DECIMALS": row.PRICE_DECIMALS,
        "SIZE_DECIMALS": row.SIZE_DECIMALS,
        "TOKEN_ID_MAX": row.TOKEN_ID_MAX,
        "MAX_JSON_DEPTH": row.MAX_JSON_DEPTH,
        "MAX_TIMESTAMP_DIGITS": _events.MAX_TIMESTAMP_DIGITS,
    }


# --- every event type reaches its handler -------------------------------------------------------

# A well-formed value of each kind, for YES's live book; an entry holds one of each of its keys
VALUE_OF_KIND: dict[ValueKind, Any] = {
    ValueKind.ID: YES,
    ValueKind.TIMESTAMP: TS,
    ValueKind.PRICE: "0.5",
    ValueKind.PRICE_OR_EMPTY: "",
    ValueKind.TICK: "0.01",
    ValueKind.SIZE: "10",
    ValueKind.SIDE: "BUY",
    ValueKind.LEVELS: [],  # an empty side: a valid book of any tick
}
VALUE_OF_KIND[ValueKind.ENTRIES] = [{key: VALUE_OF_KIND[KEYS[key]] for key in _events.ENTRY_REQUIRED}]


def minimal_event(event: EventType) -> dict[str, Any]:
    """``event`` with only the keys it requires, each holding a valid value of its kind (a cold one: its name)."""
    return {"event_type": event.name} | {key: VALUE_OF_KIND[KEYS[key]] for key in event.required}


def test_every_value_kind_but_the_name_has_a_test_value():
    assert set(VALUE_OF_KIND) == set(ValueKind) - {ValueKind.NAME}


@pytest.mark.parametrize("event", EVENTS, ids=[event.name for event in EVENTS])
def test_every_event_type_is_dispatched_to_its_handler(live, event):
    # Built from the vocabulary alone, so an event type added there is covered at once: the
    # compiled core must recognise it, validate it and reach a handler that counts it
    before = live.stats()
    live.feed(frame(minimal_event(event)), 2)
    after = live.stats()
    changed = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert changed.get(f"ev_{event.name}") == 1, changed
    assert not {key for key in changed if key.startswith("rej_")}, changed


# --- one token-id grammar, one wording ---------------------------------------------------------


@pytest.mark.parametrize("token_id", ["", "a" * (row.TOKEN_ID_MAX + 1), "bad id!", "é"])
def test_invalid_token_id_error_names_the_grammar(impl, token_id):
    store = impl.BookStore(4)
    with pytest.raises(ValueError, match="invalid token id ") as raised:
        store.add(token_id)
    assert str(raised.value).endswith(f": {row.TOKEN_ID_EXPECTED}")


def test_longest_token_id_is_accepted(impl):
    store = impl.BookStore(4)
    assert store.add("7" * row.TOKEN_ID_MAX) == 0
