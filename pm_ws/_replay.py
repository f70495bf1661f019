"""``pm-ws replay``: push a recording through the dispatcher, flat out or at the recorded pace.

Flat out, the whole recording is read into memory first so the timing covers ``Dispatcher.feed``
alone. ``--from``/``--to`` cut the recording in time (the frames before ``--from`` are applied
unseen, so the books are right from the start of the slice); ``--json``/``--csv`` write each row
change instead of the table (``pm-ws export`` and ``pm-ws plot`` take the same row changes).
``--check`` feeds every frame to the compiled core and the pure twin in lockstep and stops at the
first frame after which their return values or ``store.view`` bytes differ; at the end it also
compares the counters, the resync queues and the cold events they delivered.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ._exit import CliError, ExitCode
from ._depth_view import table_for
from ._row_output import RowChanges, RowOutput, output_for
from ._time_points import TimePoint
from ._watch_view import TopTable, can_encode, screen_for, state_counts, terminal_text
from .recording import KIND_META, RecordingError, RecordingReader, recording_parts
from .row import FIELD_NAMES, N_FIELDS


@dataclass
class Segment:
    """A meta note (or None at the start) and the frames recorded after it, as (frame, recv_ns)."""

    meta: dict[str, Any] | None
    frames: list[tuple[str | bytes, int]] = field(default_factory=list)


@dataclass
class LoadedRecording:
    """A whole recording in memory, ready to feed."""

    segments: list[Segment]
    tokens: list[str]  # every token the recording ever subscribed, in first-seen order
    frames: int
    frame_bytes: int
    truncated_bytes: int

    @property
    def first_ns(self) -> int:
        return next((ns for s in self.segments for _, ns in s.frames), 0)

    @property
    def last_ns(self) -> int:
        return next((s.frames[-1][1] for s in reversed(self.segments) if s.frames), 0)

    def cut(self, start_ns: int | None, end_ns: int | None) -> tuple[LoadedRecording, LoadedRecording]:
        """Split at ``start_ns`` and ``end_ns``: the part before ``start_ns`` (to be applied unseen) and the slice.

        The slice runs from the first frame at or after ``start_ns`` to the last at or before ``end_ns``
        (None: no limit). A meta note goes with the frame before it; the rest after ``end_ns`` is left out.
        """
        parts: tuple[list[Segment], list[Segment]] = ([Segment(None)], [Segment(None)])
        counts = [[0, 0], [0, 0]]  # frames and frame bytes of each part
        part = 0 if start_ns is not None else 1
        for segment in self.segments:
            if segment.meta is not None:
                parts[part].append(Segment(segment.meta))
            for frame, recv_ns in segment.frames:
                if end_ns is not None and recv_ns > end_ns:
                    return self._parts(parts, counts)
                if part == 0 and recv_ns >= (start_ns or 0):  # part 0 only with a start
                    part = 1
                parts[part][-1].frames.append((frame, recv_ns))
                counts[part][0] += 1
                counts[part][1] += len(frame.encode() if isinstance(frame, str) else frame)
        return self._parts(parts, counts)

    def _parts(
        self, parts: tuple[list[Segment], list[Segment]], counts: list[list[int]]
    ) -> tuple[LoadedRecording, LoadedRecording]:
        before, inside = (
            LoadedRecording(segments, self.tokens, frames, frame_bytes, 0)
            for segments, (frames, frame_bytes) in zip(parts, counts, strict=True)
        )
        inside.truncated_bytes = self.truncated_bytes
        return before, inside


def load_recording(path: str) -> LoadedRecording:
    """Read a recording into memory, turning file problems into one-line CLI errors.

    ``path`` is a file, or the base name of the numbered parts ``record --rotate-*`` wrote (``path.0001``
    ...), read in order as one recording. Where parts are missing or a part ends torn, frames were
    lost: every token is marked STALE there (its book waits for the next snapshot), and a note says so.
    """
    segments = [Segment(None)]
    tokens: dict[str, None] = {}
    frames = frame_bytes = truncated = 0
    parts = [(0, Path(path))] if os.path.lexists(path) else recording_parts(path)
    if not parts:
        raise CliError(f"cannot replay {path}: No such file (nor parts {path}.0001 ...)", ExitCode.BAD_FILE)
    previous, torn = parts[0][0] - 1, 0
    for number, part in parts:
        if torn or number != previous + 1:  # frames are missing before this part
            missing = f"{previous + 1:04d}" + ("" if number - previous == 2 else f" ... {number - 1:04d}")
            gap = "a torn end" if torn else f"missing part {missing}"
            print(f"note: {gap} before {part}: every token is STALE until its next book", file=sys.stderr)
            segments.append(Segment({"type": "stale", "tokens": list(tokens), "reason": "gap"}))
        previous = number
        try:
            with RecordingReader(part) as reader:
                for record in reader:
                    if record.kind == KIND_META:
                        meta = record.meta
                        if not isinstance(meta.get("tokens", []), list):
                            raise RecordingError(f"meta record at {record.recv_ns} has \"tokens\" that are not a list")
                        if meta.get("type") == "subscribe":
                            tokens.update(dict.fromkeys(str(t) for t in meta.get("tokens", [])))
                        segments.append(Segment(meta))
                    else:
                        segments[-1].frames.append((record.frame, record.recv_ns))
                        frames += 1
                        frame_bytes += len(record.payload)
                torn = reader.truncated_bytes
                truncated += torn
        except (OSError, RecordingError, ValueError) as exc:
            raise CliError(f"cannot replay {part}: {_reason(exc)}", ExitCode.BAD_FILE) from None
    return LoadedRecording(segments, list(tokens), frames, frame_bytes, truncated)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def core_module(choice: str) -> ModuleType:
    """The core to replay through: "auto" (as ``import pm_ws`` chose), "c" or "py"."""
    name = {"auto": "pm_ws._core", "c": "pm_ws._core_c", "py": "pm_ws._core_py"}[choice]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        which = "compiled" if choice == "c" else choice
        raise CliError(f"the {which} core cannot be imported: {exc}", ExitCode.FAILURE) from None


def core_name(module: ModuleType) -> str:
    """Human name of a core module: "cython" or "python"."""
    return str(getattr(module, "IMPLEMENTATION", "cython" if module.__name__.endswith("_c") else "python"))


class Replayer:
    """A BookStore and Dispatcher of one core, driven by a loaded recording."""

    def __init__(self, core: ModuleType, tokens: list[str]) -> None:
        self.core = core
        self.cold_events: list[tuple[str, Any]] = []
        self.store = core.BookStore(max(1, len(tokens)))
        self.dispatcher = core.Dispatcher(self.store, on_event=self._on_event)

    def apply_meta(self, meta: dict[str, Any] | None) -> None:
        """Do to the store what the recorder's client did (subscribe, unsubscribe, lose a connection)."""
        if meta is None:
            return
        tokens = [str(t) for t in meta.get("tokens", [])]
        kind = meta.get("type")
        try:
            if kind == "subscribe":
                for token in tokens:
                    self.store.add(token)
            elif kind == "unsubscribe":
                for token in tokens:
                    self.store.remove(token)
            elif kind == "stale":
                self.store.mark_stale(tokens)
        except ValueError as exc:  # a token id the store refuses: the file was not written by pm-ws record
            raise CliError(f"bad meta record {meta}: {exc}", ExitCode.BAD_FILE) from None

    def feed_recording(
        self,
        recording: LoadedRecording,
        *,
        before_frame: Callable[[int], None] | None = None,
        after_frame: Callable[[int], None] | None = None,
        after_meta: Callable[[dict[str, Any], int], None] | None = None,
    ) -> None:
        """Apply every meta note and frame of ``recording`` in order, calling the hooks given.

        ``before_frame(recv_ns)`` and ``after_frame(recv_ns)`` around each frame, ``after_meta(meta, ns)``
        after each meta note, with the receive time of the frame before it (the file keeps no time for
        notes that a replay could use; a note before any frame gets the first frame's).
        """
        feed = self.dispatcher.feed
        last_ns = recording.first_ns
        for segment in recording.segments:
            if segment.meta is not None:
                self.apply_meta(segment.meta)
                if after_meta is not None:
                    after_meta(segment.meta, last_ns)
            for frame, recv_ns in segment.frames:
                if before_frame is not None:
                    before_frame(recv_ns)
                feed(frame, recv_ns)
                if after_frame is not None:
                    after_frame(recv_ns)
            if segment.frames:
                last_ns = segment.frames[-1][1]

    def write_changes(
        self, recording: LoadedRecording, output: RowOutput, before_frame: Callable[[int], None] | None = None
    ) -> None:
        """Feed ``recording``, writing to ``output`` the rows as they are now, then every row change and meta note."""
        changes = RowChanges(self.store)

        def after_meta(meta: dict[str, Any], now_ns: int) -> None:
            output.event({"type": "meta", "time_ns": now_ns, "meta": meta})
            changes.retrack()
            output.rows(changes.changed(), now_ns)

        output.rows(changes.changed(), recording.first_ns)  # after --from: the rows there
        self.feed_recording(
            recording, before_frame=before_frame, after_meta=after_meta,
            after_frame=lambda recv_ns: output.rows(changes.changed(), recv_ns),
        )  # fmt: skip

    def skip_to_slice(
        self, recording: LoadedRecording, start: TimePoint | None, end: TimePoint | None
    ) -> LoadedRecording:
        """Apply the part of ``recording`` before ``start`` unseen; return the slice from ``start`` to ``end``."""
        if start is None and end is None:
            return recording
        first_ns = recording.first_ns
        before, inside = recording.cut(
            None if start is None else start.resolve(first_ns), None if end is None else end.resolve(first_ns)
        )
        self.feed_recording(before)
        return inside

    def _on_event(self, event_type: str, payload: Any) -> None:
        self.cold_events.append((event_type, payload))


def replay(args: argparse.Namespace) -> int:
    """Run ``pm-ws replay`` (see ``pm-ws replay --help``)."""
    if args.speed is not None and not args.realtime:
        raise CliError("--speed applies only with --realtime", ExitCode.USAGE)
    if args.impl is not None and args.check:
        raise CliError("--impl does not apply to --check, which replays through both cores", ExitCode.USAGE)
    output = output_for(args)
    if args.check and (output is not None or args.start is not None or args.end is not None):
        raise CliError("--json, --csv, --from and --to do not apply to --check", ExitCode.USAGE)
    recording = load_recording(args.file)
    if recording.truncated_bytes:
        torn = recording.truncated_bytes
        print(f"note: skipped a torn last block ({torn} bytes) at the end of {args.file}", file=sys.stderr)
    code = ExitCode.OK
    if args.check:
        replayer, code = _check(recording, args.file)
    else:
        replayer = Replayer(core_module(args.impl or "auto"), recording.tokens)
        recording = replayer.skip_to_slice(recording, args.start, args.end)
        if output is not None:
            pace = _pace(recording.first_ns, args.speed or 1.0) if args.realtime else None
            replayer.write_changes(recording, output, pace)
            return code  # the lines are the output: no final table
        if args.realtime:
            _feed_realtime(replayer, recording, args)
        else:
            _feed_flat_out(replayer, recording, args.file)
    _print_final(replayer, recording)
    return code


def _pace(first_ns: int, speed: float) -> Callable[[int], None]:
    """A ``before_frame`` that waits until a frame is due at the recorded pace times ``speed``."""
    started = time.monotonic()

    def wait(recv_ns: int) -> None:
        time.sleep(max(0.0, started + (recv_ns - first_ns) / 1e9 / speed - time.monotonic()))

    return wait


def _feed_flat_out(replayer: Replayer, recording: LoadedRecording, path: str) -> None:
    started = time.perf_counter_ns()
    replayer.feed_recording(recording)
    elapsed_ns = max(1, time.perf_counter_ns() - started)
    frames = recording.frames
    rate = frames * 1e9 / elapsed_ns
    per_frame_us = elapsed_ns / 1e3 / frames if frames else 0.0
    print(
        f"replayed {frames:,} frames ({recording.frame_bytes / 1e6:.2f} MB) from {path} through the "
        f"{core_name(replayer.core)} core in {elapsed_ns / 1e9:.3f} s: {rate:,.0f} frames/s, "
        f"{per_frame_us:.3f} µs/frame"
    )


def _feed_realtime(replayer: Replayer, recording: LoadedRecording, args: argparse.Namespace) -> None:
    screen, refresh = screen_for(sys.stdout, plain=args.plain, refresh=args.refresh)
    table = table_for(replayer.store, {}, args, ascii_only=not can_encode(sys.stdout, "×…"))
    first_ns, speed = recording.first_ns, args.speed or 1.0
    started = time.monotonic()
    next_draw = started
    fed = 0

    def draw(now: float) -> None:
        recorded_seconds = (now - started) * speed  # UPD/S counts per recorded second, as AGE is in recorded time
        header = f"pm-ws replay {args.file}  x{speed:g}  frame {fed:,}/{recording.frames:,}"
        screen.show_table(header, table, now_ns=first_ns + int(recorded_seconds * 1e9), now_monotonic=recorded_seconds)

    try:
        for segment in recording.segments:
            replayer.apply_meta(segment.meta)
            for frame, recv_ns in segment.frames:
                due = started + (recv_ns - first_ns) / 1e9 / speed
                while (now := time.monotonic()) < due:
                    if now >= next_draw:
                        draw(now)
                        next_draw = now + refresh
                    time.sleep(max(0.0, min(due, next_draw) - now))
                replayer.dispatcher.feed(frame, recv_ns)
                fed += 1
        draw(time.monotonic())
    finally:
        screen.close()


def _check(recording: LoadedRecording, path: str) -> tuple[Replayer, ExitCode]:
    compiled = Replayer(core_module("c"), recording.tokens)
    pure = Replayer(core_module("py"), recording.tokens)
    index = 0
    for segment in recording.segments:
        compiled.apply_meta(segment.meta)
        pure.apply_meta(segment.meta)
        for frame, recv_ns in segment.frames:
            applied = (compiled.dispatcher.feed(frame, recv_ns), pure.dispatcher.feed(frame, recv_ns))
            difference = _row_difference(compiled, pure)
            if applied[0] != applied[1] or difference:
                what = difference or f"feed() returned {applied[0]} (compiled) vs {applied[1]} (pure)"
                print(f"DIVERGENCE at frame {index} (recv_ns {recv_ns}): {what}")
                print(f"frame: {terminal_text(str(frame)[:300])}")
                return compiled, ExitCode.DIVERGENCE
            index += 1
    for name, get in (
        ("counters", lambda r: r.dispatcher.stats()),
        ("resync queue", lambda r: r.dispatcher.pending_resync()),
        ("cold events", lambda r: r.cold_events),
    ):
        if get(compiled) != get(pure):
            print(f"DIVERGENCE after the last frame: {name} differ")
            print(f"  compiled: {get(compiled)}\n  pure:     {get(pure)}")
            return compiled, ExitCode.DIVERGENCE
    print(
        f"check: the compiled and pure cores agree on all {recording.frames:,} frames of {path} "
        "(return values and rows after every frame; counters, resync queue and cold events at the end)"
    )
    return compiled, ExitCode.OK


def _row_difference(compiled: Replayer, pure: Replayer) -> str:
    view_c, view_py = compiled.store.view, pure.store.view
    if view_c.tobytes() == view_py.tobytes():
        return ""
    for slot in range(view_c.shape[0]):
        for index in range(N_FIELDS):
            if view_c[slot, index] != view_py[slot, index]:
                tokens = {compiled.store.slot(t): t for t in compiled.store.tokens()}
                return (
                    f"row of slot {slot} (token {tokens.get(slot, '?')}) field {FIELD_NAMES[index]}: "
                    f"{view_c[slot, index]} (compiled) vs {view_py[slot, index]} (pure)"
                )
    return "store.view bytes differ"


def _print_final(replayer: Replayer, recording: LoadedRecording) -> None:
    table = TopTable(replayer.store, ascii_only=not can_encode(sys.stdout, "×…"), show_rates=False)
    print(f"\nfinal top of book ({core_name(replayer.core)} core; AGE relative to the last recorded frame):")
    for line in table.lines(now_ns=recording.last_ns):
        print(f"  {line}")
    stats = replayer.dispatcher.stats()
    nonzero = [f"{key}={value:,}" for key, value in stats.items() if value]
    print("\ndispatcher counters (zero counters omitted):")
    line = " "
    for item in nonzero:
        if len(line) + len(item) > 100:
            print(line)
            line = " "
        line += f" {item}"
    print(line)
