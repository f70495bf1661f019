"""Coverage-guided fuzz target: the compiled core and the pure twin agree on every input (atheris).

Not collected by pytest (no ``test_`` prefix). Run from the repo root with the venv active:

    python tests/fuzz_dispatch.py -runs=100000
    python tests/fuzz_dispatch.py -max_total_time=60 [CORPUS_DIR ...]
    python tests/fuzz_dispatch.py crash-<sha1>          # replay one saved input

With no corpus directory on the command line, a temporary one is seeded from the repo's recordings
(tests/fixtures/*.jsonl), the shared captures when present and generated frames. One input is a
stream of frames separated by ``SEPARATOR``; its first byte picks the Dispatcher options and how
frames are passed. A "frame" starting with ``STORE_CALL`` (a NUL byte) is a store call instead:
``mark_stale`` or ``remove`` + ``add`` of the token its next bytes pick, as the client does
(compiled-only mode feeds it as a frame).
A divergence raises AssertionError, and libFuzzer saves the input as crash-<sha1>.
For long unattended runs, ``PM_WS_FUZZ_KEEP_GOING=DIR`` saves each divergence as DIR/<sha1> (with
the comparison message beside it) and carries on instead of stopping at the first one.
``PM_WS_FUZZ_COMPILED_ONLY=1`` feeds the compiled core alone (for ASan/UBSan builds, see
the README, Reliability): no twin, the input also seeds damage to real-format frames.
Coverage feedback comes from the instrumented pure twin only: the compiled module is not
instrumented (that needs clang's -fsanitize=fuzzer-no-link), and the twin parses JSON with orjson,
so the guidance covers event shapes and apply rules rather than the scanner's byte-level branches.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import sys
import tempfile
from pathlib import Path

try:
    import atheris
except ImportError as exc:  # not a test dependency: only this script needs it
    raise SystemExit("fuzz_dispatch.py needs atheris: pip install atheris (manylinux wheels, no build step)") from exc

# Fuzz the tree this file lives in (a sanitizer build in a copy of the repo), not the installed one
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

# Compiled-only mode: no twin, just "no crash, counters add up"; for sanitizer builds and raw speed
COMPILED_ONLY = os.environ.get("PM_WS_FUZZ_COMPILED_ONLY", "") not in ("", "0")
if not COMPILED_ONLY:
    with atheris.instrument_imports(include=["pm_ws"]):
        import pm_ws._core_py  # noqa: F401

import framegen  # noqa: E402
from differential import Divergence, Twin  # noqa: E402

MODULES = {"c": importlib.import_module("pm_ws._core_c")}
if not COMPILED_ONLY:
    MODULES["py"] = importlib.import_module("pm_ws._core_py")
SEPARATOR = b"\n\xff\n"  # never valid UTF-8, so frames rarely contain it by accident
STORE_CALL = b"\x00"  # no frame starts with NUL: what follows picks a store call, not a frame
SEEDS = framegen.seed_frames(0, count=300)
TOKENS = framegen.asset_ids(SEEDS)
KEEP_GOING = Path(os.environ["PM_WS_FUZZ_KEEP_GOING"]) if os.environ.get("PM_WS_FUZZ_KEEP_GOING") else None
SEEN: dict[str, int] = {}  # divergences per kind, in keep-going mode
OPT_EMIT_TRADES, OPT_DRAIN_EACH, OPT_SMALL_LIMIT, OPT_AS_STR, OPT_AS_MEMORYVIEW, OPT_OWNED = 1, 2, 4, 8, 16, 32


def one_input(data: bytes) -> None:
    if not KEEP_GOING:
        compare(data)
        return
    try:
        compare(data)
    except Divergence as exc:
        SEEN[exc.kind] = SEEN.get(exc.kind, 0) + 1
        if SEEN[exc.kind] <= 200:  # enough examples of each kind to minimise from
            name = hashlib.sha1(data).hexdigest()
            (KEEP_GOING / name).write_bytes(data)
            (KEEP_GOING / f"{name}.txt").write_text(f"{exc.kind} (#{SEEN[exc.kind]})\n{exc}")


def compare(data: bytes) -> None:
    if not data:
        return
    options, frames = data[0], data[1:].split(SEPARATOR)
    if COMPILED_ONLY:
        compiled_only(data, options, frames[:64])
        return
    twin = Twin(MODULES, TOKENS, emit_trades=bool(options & OPT_EMIT_TRADES), capacity=len(TOKENS) + 1,
                max_frame_bytes=512 if options & OPT_SMALL_LIMIT else 16 * 1024 * 1024)  # fmt: skip
    twin.compare_books = False
    for index, raw in enumerate(frames[:64]):
        if raw[:1] == STORE_CALL:
            store_call(twin, raw[1:], drain=bool(options & OPT_DRAIN_EACH))
            continue
        if framegen.overflows_double(raw):
            continue  # the documented divergence (README, Reliability: known limits)
        frame: bytes | str | memoryview = raw
        if options & OPT_AS_STR:
            try:
                frame = raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
        elif options & OPT_AS_MEMORYVIEW:
            frame = memoryview(raw)
        twin.feed(frame, recv_ts_ns=index, drain=bool(options & OPT_DRAIN_EACH) or index == len(frames) - 1,
                  owner=framegen.OWNERS[index % len(framegen.OWNERS)] if options & OPT_OWNED else 0)  # fmt: skip
    twin.check_books()


def store_call(twin: Twin, args: bytes, drain: bool) -> None:
    # The client's own calls between frames: mark_stale on a lost connection, remove + add on
    # resubscribe, set_owner when a token moves to another connection
    token = TOKENS[args[0] % len(TOKENS)] if args else TOKENS[0]
    owner = framegen.OWNERS[args[2] % len(framegen.OWNERS)] if len(args) > 2 else 0
    if len(args) > 1 and args[1] & 1:
        twin.call(f"remove({token!r}); add({token!r}, {owner})",
                  lambda store, _: (store.remove(token), store.add(token, owner)), drain)  # fmt: skip
    elif len(args) > 1 and args[1] & 2:
        twin.call(f"set_owner({token!r}, {owner})", lambda store, _: store.set_owner(token, owner), drain)
    else:
        twin.call(f"mark_stale([{token!r}])", lambda store, _: store.mark_stale([token]), drain)


def compiled_only(data: bytes, options: int, frames: list[bytes]) -> None:
    # No coverage feedback reaches libFuzzer here, so it would keep only one input: the input
    # also seeds damage to a few real-format frames, as in tests/test_fuzz_crash.py
    rng = random.Random(data)
    for _ in range(4):
        frame = rng.choice(SEEDS)
        for _ in range(rng.randint(1, 3)):
            frame = (framegen.tweak if rng.random() < 0.5 else framegen.corrupt)(rng, frame)
        frames.append(frame)
    module = MODULES["c"]
    store = module.BookStore(len(TOKENS) + 1)
    for token in TOKENS:
        store.add(token)
    dispatcher = module.Dispatcher(store, on_event=lambda kind, payload: None,
                                   emit_trades=bool(options & OPT_EMIT_TRADES),
                                   max_frame_bytes=512 if options & OPT_SMALL_LIMIT else 16 * 1024 * 1024)  # fmt: skip
    applied = 0
    for index, frame in enumerate(frames):
        applied += dispatcher.feed(memoryview(frame) if options & OPT_AS_MEMORYVIEW else frame, index)
        if options & OPT_DRAIN_EACH:
            dispatcher.pending_resync()
    stats = dispatcher.stats()
    assert (stats["frames"], stats["events"]) == (len(frames), applied), (stats, applied)


def seed_corpus(directory: Path) -> None:
    """Write single seed frames and short streams (a snapshot, then random frames) as inputs."""
    rng = random.Random(1)
    for i, frame in enumerate(SEEDS):
        (directory / f"frame-{i:04d}").write_bytes(bytes([rng.randint(0, 31)]) + frame)
    for i in range(100):
        stream = [framegen.snapshot_frame(rng)] + [framegen.as_bytes(framegen.frame(rng)) for _ in range(6)]
        if i % 2:  # a lost connection mid-stream: the books that follow must name the tick to turn LIVE
            stream.insert(rng.randint(1, len(stream)), STORE_CALL + bytes([rng.randrange(256), 0]))
        (directory / f"stream-{i:04d}").write_bytes(bytes([rng.randint(0, 31)]) + SEPARATOR.join(stream))


def main() -> None:
    args = sys.argv[:]
    inputs = [Path(a) for a in args[1:] if not a.startswith("-")]
    if not inputs:  # no corpus and no crash file to replay: start from a fresh seed corpus
        inputs = [Path(tempfile.mkdtemp(prefix="pmws-fuzz-corpus-"))]
        args.append(str(inputs[0]))
    if inputs[0].is_dir() and not any(inputs[0].iterdir()):
        seed_corpus(inputs[0])
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=65536")
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
