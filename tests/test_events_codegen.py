"""The compiled core's vocabulary files are generated from pm_ws._events alone: the committed ones
are current (like a lockfile), they agree with the vocabulary, and a new event type or key reaches
every table without a hand edit. No compiler needed: the generated text itself is read."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pm_ws import _events, _events_codegen
from pm_ws._events_codegen import const, load_vocabulary, render

# A hot event with a key of its own (before the array keys, which stay last) and a cold one
FOO_KEY = '    "foo_size": ValueKind.SIZE,\n'
FOO_EVENT = '    EventType("foo_event", True, ("asset_id", "foo_size"), ("timestamp",)),\n'
FOO_COLD = '    EventType("foo_cold", False),\n'
NEW_MARKET = '    EventType("new_market", False),\n'
MARKET_RESOLVED = '    EventType("market_resolved", False),\n'


def enum_values(header: str) -> dict[str, int]:
    return {name: int(value) for name, value in re.findall(r"^    (\w+) = (\d+),$", header, re.M)}


def function(text: str, name: str) -> str:
    """The body of the generated Cython function ``name``."""
    match = re.search(rf"^cdef [\w ]*\b{name}\(.*?(?=\n\n\n|\Z)", text, re.M | re.S)
    assert match, name
    return match.group(0)


def matched_spellings(body: str, branch: str) -> dict[str, str]:
    """What a generated matcher returns for each spelling it compares, checking each comparison's
    length against the spelling and the spelling against its branch (a length ``n == N``, or a
    first byte ``c == c'x'`` for raw_key, whose spellings end in a quote)."""
    found: dict[str, str] = {}
    guard = spelling = None
    for line in body.splitlines():
        if m := re.search(rf"{branch} == (\d+|c'.'):$", line):
            guard = m.group(1)
        elif m := re.search(r"memcmp\(\w+, b(['\"])(.+?)\1, (\d+)\) == 0", line):
            spelling = m.group(2)
            assert len(spelling) == int(m.group(3)), line
            assert guard in (str(len(spelling)), f"c'{spelling[0]}'"), (guard, line)
        elif m := re.search(r"(?:return|k\[0\] =) (EV_\w+|K_\w+)$", line):
            if spelling is not None:
                found[spelling.rstrip('"')] = m.group(1)
                spelling = None
    return found


def required_masks(body: str) -> dict[str, tuple[set[str], set[str]]]:
    masks = {}
    for kind, required, optional in re.findall(
        r"if kind == (EV_\w+):\n        required\[0\] = (.*)\n        optional\[0\] = (.*)", body
    ):
        masks[kind] = (set(re.findall(r"K_\w+", required)), set(re.findall(r"K_\w+", optional)))
    return masks


def keys_of(names: tuple[str, ...]) -> set[str]:
    return {const("K_", name) for name in names}


def assert_consistent(vocab: ModuleType, files: dict[str, str]) -> None:
    """Every table of ``files`` says what ``vocab`` says."""
    values = enum_values(files["pm_events.h"])
    events, keys = vocab.EVENTS, list(vocab.KEYS)
    assert [values[const("EV_", event.name)] for event in events] == list(range(1, len(events) + 1))
    assert values["EV_FIRST_COLD"] == next(k for k, event in enumerate(events, 1) if not event.hot)
    assert [values[const("K_", key)] for key in keys] == list(range(len(keys)))
    assert values["K_COUNT"] == len(keys) and values["K_OTHER"] not in range(len(keys))
    assert [values[const("ST_", stat)] for stat in vocab.STAT_KEYS] == list(range(len(vocab.STAT_KEYS)))
    assert values["ST_COUNT"] == len(vocab.STAT_KEYS)
    assert values["KEY_SCRATCH"] >= 6 * max(map(len, keys))
    assert values["RAW_KEY_SPAN"] > max(map(len, keys))
    # Cython's view declares every member of the header, and nothing else
    assert re.findall(r"^        (\w+)$", files["events_enums.pxi"], re.M) == list(values)

    tables = files["events_tables.pxi"]
    assert matched_spellings(function(tables, "kind_of"), "n") == {e.name: const("EV_", e.name) for e in events}
    assert matched_spellings(function(tables, "key_of"), "n") == {key: const("K_", key) for key in keys}
    fast = matched_spellings(function(tables, "raw_key"), "c")
    assert fast == {key: const("K_", key) for key in keys} | dict.fromkeys(_events_codegen.FREQUENT_UNREAD_KEYS, "K_OTHER")
    key_value = function(tables, "key_value")
    for key, kind in vocab.KEYS.items():
        assert re.search(rf"if [^\n]*\bk == {const('K_', key)}\b[^\n]*:\n        return {const('V_', kind.name)}\n",
                         key_value), key
    hot = [event for event in events if event.hot]
    assert required_masks(function(tables, "required_keys")) == {
        const("EV_", e.name): (keys_of(e.required), keys_of(e.optional)) for e in hot
    }
    # one dispatch case per hot event type, each calling its handler by name
    assert re.findall(r"if kind == (EV_\w+):\n        return (apply_\w+)\(d, e, recv_ts_ns\)",
                      function(tables, "apply_hot")) == [(const("EV_", e.name), f"apply_{e.name}") for e in hot]
    for word, stat in vocab.CONTROL_WORDS.items():
        assert f'ascii_iequal(b, n, b"{word}", {len(word)}):\n        return {const("ST_", stat)}' in tables
    assert f'"{events[-1].name}")' in tables and f'"{keys[-1]}")' in tables  # EVENT_NAMES, KEY_NAMES


# --- the committed files ----------------------------------------------------------------------


def test_committed_files_are_current():
    # setup.py rewrites them before every build; this catches a vocabulary change committed without them
    for name, text in render(load_vocabulary()).items():
        path = _events_codegen.HOT_DIR / name
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python pm_ws/_events_codegen.py"


def test_committed_files_agree_with_the_vocabulary():
    files = {name: (_events_codegen.HOT_DIR / name).read_text(encoding="utf-8") for name in render(_events)}
    assert_consistent(_events, files)


def test_generator_runs_without_importing_the_package(tmp_path):
    # as setup.py runs it: by path, before the package is importable
    script = (
        "import importlib.util, sys, pathlib\n"
        f"spec = importlib.util.spec_from_file_location('codegen', {str(Path(_events_codegen.__file__))!r})\n"
        "codegen = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(codegen)\n"
        f"written = codegen.write(pathlib.Path({str(tmp_path)!r}))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'pm_ws'], sorted(sys.modules)\n"
        "print(' '.join(sorted(written)))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == sorted(render(_events))
    assert _events_codegen.write(tmp_path) == []  # unchanged text: nothing rewritten, so nothing rebuilt


# --- a new event type -------------------------------------------------------------------------


@pytest.fixture
def foo_vocabulary(tmp_path) -> ModuleType:
    """A copy of the vocabulary with foo_event (hot, reading a new key foo_size) and foo_cold added."""
    text = Path(_events.__file__).read_text(encoding="utf-8")
    text = text.replace('    "bids": ValueKind.LEVELS,', FOO_KEY + '    "bids": ValueKind.LEVELS,', 1)
    text = text.replace(NEW_MARKET, FOO_EVENT + NEW_MARKET, 1).replace(MARKET_RESOLVED, MARKET_RESOLVED + FOO_COLD, 1)
    path = tmp_path / "_events.py"
    path.write_text(text, encoding="utf-8")
    vocab = load_vocabulary(path)
    assert [e.name for e in vocab.EVENTS][-3:] == ["new_market", "market_resolved", "foo_cold"]
    return vocab


def test_a_new_event_type_reaches_every_table(foo_vocabulary):
    files = render(foo_vocabulary)
    assert_consistent(foo_vocabulary, files)
    values = enum_values(files["pm_events.h"])
    assert values["EV_FOO_EVENT"] == values["EV_BEST_BID_ASK"] + 1 == values["EV_FIRST_COLD"] - 1
    assert values["EV_FOO_COLD"] == values["EV_COUNT"] - 1
    assert values["K_FOO_SIZE"] == values["K_FIRST_ARRAY"] - 1  # the array keys moved up by one
    assert values["ST_EV_FOO_EVENT"] == values["ST_EV_BEST_BID_ASK"] + 1
    assert values["ST_COUNT"] == len(_events.STAT_KEYS) + 2
    assert "return apply_foo_event(d, e, recv_ts_ns)" in files["events_tables.pxi"]
    assert "apply_foo_cold" not in files["events_tables.pxi"]  # cold: decoded whole, handled in dispatch_cold.pxi


def test_the_vocabulary_limits_are_checked(foo_vocabulary):
    foo_vocabulary.KEYS = {f"key_{i}": _events.ValueKind.SIZE for i in range(_events_codegen.MAX_KEYS + 1)}
    with pytest.raises(ValueError, match="at most"):
        render(foo_vocabulary)
    foo_vocabulary.KEYS = dict(reversed(list(_events.KEYS.items())))
    with pytest.raises(ValueError, match="array keys"):
        render(foo_vocabulary)
