"""Differential harness: mirror every call onto the compiled core and the pure twin, compare after each.

Used by tests/test_parity.py (hypothesis streams, regressions) and tests/fuzz_dispatch.py (atheris).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import framegen
from pm_ws.errors import ParseError
from pm_ws.row import State


class Divergence(AssertionError):
    """The two implementations disagree on ``what``; ``kind`` groups disagreements alike."""

    def __init__(self, what: str, c_value: Any, py_value: Any, message: str) -> None:
        super().__init__(message)
        if isinstance(c_value, dict) and isinstance(py_value, dict):
            what += ":" + ",".join(sorted(k for k in c_value if c_value[k] != py_value.get(k)))
        self.kind = what


def outcome(call: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    # Exception text is part of the contract only for ParseError (it names the field and the text)
    try:
        return ("returned", call(*args))
    except ParseError as exc:
        return ("raised", "ParseError", str(exc))
    except Exception as exc:  # noqa: BLE001 - the comparison is the test
        return ("raised", type(exc).__name__)


def _describe(frame: Any, limit: int = 3000) -> str:
    # A frame as Python source (memoryview and bytearray included), cut at limit characters
    head = frame[:limit] if isinstance(frame, str) else bytes(frame[:limit])
    text = repr(head) + ("..." if len(frame) > limit else "")
    return text if isinstance(frame, (str, bytes)) else f"{type(frame).__name__}({text})"


def _recorder(delivered: list[tuple[str, Any]]) -> Callable[[str, Any], None]:
    return lambda kind, payload: delivered.append((kind, payload))


def _adder(token: str) -> Callable[[Any, Any], Any]:
    return lambda store, dispatcher: store.add(token)


class Twin:
    """Mirror every call onto both implementations and compare what they end up with."""

    def __init__(self, modules: dict[str, ModuleType], tokens: tuple[str, ...], *, emit_trades: bool = False,
                 capacity: int = 8, max_frame_bytes: int = 16 * 1024 * 1024) -> None:  # fmt: skip
        self.history: list[str] = []
        self.compare_books = True  # full books after every call; the fuzz target compares them once per input
        self.sides: dict[str, tuple[Any, Any, list[tuple[str, Any]]]] = {}
        for tag, module in modules.items():
            store = module.BookStore(capacity)
            delivered: list[tuple[str, Any]] = []
            dispatcher = module.Dispatcher(store, on_event=_recorder(delivered), emit_trades=emit_trades,
                                           max_frame_bytes=max_frame_bytes)  # fmt: skip
            self.sides[tag] = (store, dispatcher, delivered)
        for token in tokens:
            self.call(f"add({token!r})", _adder(token))

    @property
    def reference(self) -> Any:
        return self.sides["py"][0]

    def books_of(self, token: str) -> Any:
        """The reference book of a LIVE token (best first), for generating consistent checksums."""
        store = self.reference
        if token not in store or store.top(token).state != State.LIVE:
            return None
        return store.book(token, depth=None)

    def call(self, label: str, action: Callable[[Any, Any], Any], drain: bool = True) -> None:
        self.history.append(label)
        outcomes = {tag: outcome(action, store, disp) for tag, (store, disp, _) in self.sides.items()}
        self._same("result", outcomes)
        self.check(drain)

    def feed(self, frame: Any, recv_ts_ns: int = 0, drain: bool = True, owner: int = 0) -> None:
        self.call(f"feed({_describe(frame)}, {recv_ts_ns}, {owner})", lambda s, d: d.feed(frame, recv_ts_ns, owner),
                  drain)  # fmt: skip

    def check(self, drain: bool = True) -> None:
        self._same("view bytes", {tag: bytes(s.view) for tag, (s, _, _) in self.sides.items()})
        self._same("stats", {tag: d.stats() for tag, (_, d, _) in self.sides.items()})
        self._same("tokens", {tag: s.tokens() for tag, (s, _, _) in self.sides.items()})
        if self.compare_books:
            self.check_books()
        self._same("on_event", {tag: list(ev) for tag, (_, _, ev) in self.sides.items()})
        if drain:
            self._same("pending_resync", {tag: outcome(d.pending_resync) for tag, (_, d, _) in self.sides.items()})

    def check_books(self) -> None:
        self._same("books", {tag: [s.book(t, depth=None) for t in s.tokens()] for tag, (s, _, _) in self.sides.items()})

    def _same(self, what: str, values: dict[str, Any]) -> None:
        c_value, py_value = values["c"], values["py"]
        if c_value != py_value:
            steps = "\n".join(self.history[-12:])
            message = f"{what} differ after:\n{steps}\n c: {c_value!r:.3000}\npy: {py_value!r:.3000}"
            raise Divergence(what, c_value, py_value, message)


def run_stream(modules: dict[str, ModuleType], rng: Any, emit_trades: bool) -> None:
    """Feed a random stream of frames and store calls, comparing after each."""
    twin = Twin(modules, framegen.SUBSCRIBED, emit_trades=emit_trades, capacity=rng.choice((3, 4, 8)))
    drain_each = rng.random() < 0.8
    if rng.random() < 0.7:
        twin.feed(framegen.snapshot_frame(rng), recv_ts_ns=1)
    for step in range(rng.randint(1, 16)):
        roll = rng.random()
        if roll < 0.04:
            ids = [rng.choice(framegen.SUBSCRIBED + framegen.UNSUBSCRIBED) for _ in range(rng.randint(0, 3))]
            twin.call(f"mark_stale({ids!r})", lambda s, d: s.mark_stale(ids), drain_each)
        elif roll < 0.07:
            token = rng.choice(framegen.SUBSCRIBED)
            twin.call(f"remove({token!r})", lambda s, d: s.remove(token), drain_each)
            if rng.random() < 0.7:
                owner = rng.choice(framegen.OWNERS)
                twin.call(f"add({token!r}, {owner})", lambda s, d: s.add(token, owner), drain_each)
        elif roll < 0.1:
            token, owner = rng.choice(framegen.SUBSCRIBED), rng.choice(framegen.OWNERS)
            twin.call(f"set_owner({token!r}, {owner})", lambda s, d: s.set_owner(token, owner), drain_each)
        else:
            frame = framegen.frame(rng, twin.books_of)
            if framegen.overflows_double(frame):
                continue  # the documented divergence (README, Reliability: known limits)
            twin.feed(frame, recv_ts_ns=step * 1_000_003, drain=drain_each or rng.random() < 0.2,
                      owner=rng.choice(framegen.OWNERS))  # fmt: skip
