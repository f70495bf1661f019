"""Mutated and truncated frames thrown at the compiled dispatcher in a child process.

A segfault or abort in the compiled parser must fail this test, not kill pytest, so the frames
are fed in a subprocess (this file run as a script). The child also checks that the counters
account for every frame (the ``stats()`` identities) and that the books stay well-formed, and reports
the index of the frame it was working on, so a crash names its input.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # framegen is a plain helper beside the tests
import framegen  # noqa: E402

pytestmark = pytest.mark.c_extension

REPO = Path(__file__).resolve().parent.parent

FRAMES = 50 * int(os.environ.get("PM_WS_FUZZ_EXAMPLES", "1000"))  # frames per run, split over two seeds
FRAME_LEVEL = ("rej_oversized", "rej_unknown_text", "rej_invalid_json", "ctl_pong", "ctl_invalid_operation",
               "ctl_no_new_assets")  # fmt: skip
OUTCOMES = ("events", "rej_unknown_event", "rej_bad_event", "rej_bad_number", "skip_unsubscribed", "skip_duplicate")


def mutated_frames(seed: int, count: int) -> Iterator[bytes]:
    """Every prefix of a few seed frames, then random bit flips, inserts, deletes and splices."""
    seeds = framegen.seed_frames(seed, count=200)
    rng = random.Random(seed)
    for base in rng.sample([s for s in seeds if len(s) < 1500], 8):
        for end in range(len(base) + 1):
            yield base[:end]
    for _ in range(count):
        data = rng.choice(seeds)
        if rng.random() < 0.2:
            other = rng.choice(seeds)
            data = data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :]
        damage = framegen.tweak if rng.random() < 0.5 else framegen.corrupt
        for _ in range(rng.randint(1, 3)):
            data = damage(rng, data)
        yield data


def _json_judgement(frame: bytes) -> tuple[str, int] | None:
    """What orjson says about a JSON-path frame: ("valid", events) / ("invalid", 0), None when unsure."""
    if framegen.overflows_double(frame):
        return None
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return ("invalid", 0)
    if _depth(doc) > framegen.MAX_DEPTH:
        return ("invalid", 0)
    return ("valid", len(doc) if isinstance(doc, list) else 1)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def check_frame(frame: bytes, returned: int, before: dict[str, int], after: dict[str, int]) -> str | None:
    """Return why the counter deltas for one frame break a ``stats()`` identity, or None."""
    delta = {key: after[key] - before[key] for key in after}
    if delta["frames"] != 1 or delta["bytes"] != len(frame):
        return f"frames/bytes {delta['frames']}/{delta['bytes']}"
    if returned != delta["events"] or delta["events"] != sum(v for k, v in delta.items() if k.startswith("ev_")):
        return f"feed() returned {returned}, events +{delta['events']}"
    frame_level, outcomes = sum(delta[k] for k in FRAME_LEVEL), sum(delta[k] for k in OUTCOMES)
    is_json = frame.strip(b" \t\r\n")[:1] in (b"{", b"[")
    if frame_level + (1 if is_json and not delta["rej_oversized"] and not delta["rej_invalid_json"] else 0) != 1:
        return f"frame counted {frame_level} times at frame level"
    if not is_json or frame_level:
        return f"{outcomes} events counted for a rejected frame" if outcomes else None
    judged = _json_judgement(frame)
    if judged is not None and judged != ("valid" if not delta["rej_invalid_json"] else "invalid", outcomes):
        return f"orjson says {judged}, dispatcher counted invalid_json={delta['rej_invalid_json']} outcomes={outcomes}"
    return None


def check_books(store: Any) -> str | None:
    """Return why a book or row is malformed (unsorted, zero size, top disagreeing with the book), or None."""
    for token in store.tokens():
        bids, asks = store.book(token, depth=None)
        top = store.top(token)
        ok = (all(a[0] > b[0] for a, b in zip(bids, bids[1:])) and all(a[0] < b[0] for a, b in zip(asks, asks[1:]))
              and all(0 <= p <= 10_000 and s > 0 for p, s in bids + asks)
              and (top.bid_px, top.bid_sz) == (bids[0] if bids else (0, 0))
              and (top.ask_px, top.ask_sz) == (asks[0] if asks else (10_000, 0))
              and (top.bid_levels, top.ask_levels) == (len(bids), len(asks)))  # fmt: skip
        if not ok:
            return f"token {token}: top {top} vs book {bids[:3]} / {asks[:3]}"
    return None


def child(seed: int, count: int, progress: str) -> None:
    """Feed the frames to the compiled core; print a JSON summary; a crash leaves the frame index behind."""
    from pm_ws._core_c import BookStore, Dispatcher  # only here: the pytest process never runs the frames

    faulthandler.enable()
    tokens = framegen.asset_ids(framegen.seed_frames(seed, count=200))
    store = BookStore(len(tokens))
    for token in tokens:
        store.add(token)
    dispatcher = Dispatcher(store, on_event=lambda kind, payload: None, emit_trades=True)
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o644)
    problems: list[str] = []
    fed = 0
    for index, frame in enumerate(mutated_frames(seed, count)):
        os.pwrite(fd, b"%12d" % index, 0)
        before = dispatcher.stats()
        returned = dispatcher.feed(frame, index)
        problem = check_frame(frame, returned, before, dispatcher.stats())
        if problem is None and index % 97 == 0:
            problem = check_books(store)
        if problem is not None and len(problems) < 5:
            problems.append(f"{problem}: {frame!r:.600}")
        if index % 509 == 0:
            dispatcher.pending_resync()
            store.mark_stale(tokens[index % len(tokens) :][:1])
        fed += 1
    print(json.dumps({"fed": fed, "stats": dispatcher.stats(), "problems": problems}))


def run_child(tmp_path: Path, seed: int, count: int) -> dict[str, Any]:
    progress = tmp_path / "progress"
    # The child imports pm_ws from this tree (not whatever is installed), so copies built with sanitizers work
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, str(seed), str(count), str(progress)],
                          capture_output=True, timeout=600, cwd=REPO, env=env)  # fmt: skip
    if proc.returncode != 0:
        index = int(progress.read_bytes() if progress.exists() else b"-1")
        frame = next((f for i, f in enumerate(mutated_frames(seed, count)) if i == index), None)
        pytest.fail(f"child exited {proc.returncode} on frame #{index} (seed {seed}): {frame!r:.2000}\n"
                    f"{proc.stderr.decode(errors='replace')[-3000:]}")  # fmt: skip
    return json.loads(proc.stdout)


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_crash_mutated_frames_child_exits_cleanly_and_counts_every_frame(tmp_path: Path, seed: int) -> None:
    # Arrange
    count = FRAMES // 2
    # Act
    summary = run_child(tmp_path, seed, count)
    # Assert
    assert summary["problems"] == []
    assert summary["stats"]["frames"] == summary["fed"] > count


if __name__ == "__main__":
    child(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
