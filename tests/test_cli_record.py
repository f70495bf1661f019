"""`pm-ws record` of a long session: numbered parts (--rotate-mb, --rotate-minutes) that replay reads as one."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pm_ws import _core, _replay
from pm_ws._exit import ExitCode
from pm_ws.cli import main
from pm_ws.recording import KIND_META, PartedWriter, RecordingReader, RecordingWriter, part_path, recording_parts
from pm_ws.row import State
from test_cli import ServerThread, quiet_server, server_thread  # noqa: F401 - quiet_server is a fixture

START = {"type": "start", "format": 2, "url": "ws://127.0.0.1:9", "tool": "test"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def small_blocks(path: Path, *, overwrite: bool = False) -> RecordingWriter:
    """A writer that cuts a block every 100 bytes, so a few frames fill a part."""
    return RecordingWriter(path, overwrite=overwrite, block_bytes=100)


def records(path: Path) -> list[Any]:
    with RecordingReader(path) as reader:
        return [r.meta if r.kind == KIND_META else r.frame for r in reader]


def test_parted_writer_cuts_parts_by_size_each_restating_start_and_subscription(tmp_path: Path) -> None:
    base = tmp_path / "s.pmws"
    writer = PartedWriter(base, part_bytes=300, open_file=small_blocks)
    writer.write_meta(START)
    writer.write_meta({"type": "subscribe", "tokens": ["1", "2"]})
    frames = [f"frame {n:03d} " + "x" * 80 for n in range(30)]
    for n, frame in enumerate(frames):
        if n == 10:
            writer.write_meta({"type": "unsubscribe", "tokens": ["1"]})
        writer.write_frame(frame, n)
    writer.close()

    parts = recording_parts(base)
    assert not base.exists()
    assert [number for number, _ in parts] == list(range(1, writer.parts + 1)) and writer.parts >= 5
    assert [path for _, path in parts] == writer.paths == [part_path(base, n) for n in range(1, writer.parts + 1)]
    assert parts[0][1].name == "s.pmws.0001"
    read = [records(path) for _, path in parts]
    assert read[0][:2] == [{**START, "part": 1}, {"type": "subscribe", "tokens": ["1", "2"]}]
    assert read[-1][:2] == [{**START, "part": writer.parts}, {"type": "subscribe", "tokens": ["2"]}]
    assert [item for part in read for item in part if isinstance(item, str)] == frames
    assert writer.frames == writer.kept_frames == len(frames)
    assert writer.file_bytes == sum(path.stat().st_size for _, path in parts)
    assert all(path.stat().st_size <= 300 + 200 for _, path in parts)  # cut at the block after the limit


def test_parted_writer_cuts_parts_by_age(tmp_path: Path) -> None:
    clock = FakeClock()
    base = tmp_path / "t.pmws"
    writer = PartedWriter(base, part_seconds=60, clock=clock)
    writer.write_meta(START)
    writer.write_meta({"type": "subscribe", "tokens": ["1"]})
    for second in range(0, 150, 10):
        clock.now = second
        writer.write_frame(f"at {second}", second)
        writer.flush_if_due()
    writer.close()

    read = [records(path) for _, path in recording_parts(base)]
    assert [[item for item in part if isinstance(item, str)] for part in read] == [
        [f"at {s}" for s in range(0, 60, 10)], [f"at {s}" for s in range(60, 120, 10)], ["at 120", "at 130", "at 140"]
    ]  # fmt: skip


def test_parted_writer_without_limits_writes_the_file_itself(tmp_path: Path) -> None:
    out = tmp_path / "one.pmws"
    writer = PartedWriter(out, open_file=small_blocks)
    writer.write_meta(START)
    for n in range(20):
        writer.write_frame("y" * 50, n)
    writer.close()

    assert writer.paths == [out] and recording_parts(out) == []
    assert records(out) == [START, *["y" * 50] * 20]  # no "part" in the start of a single file


def test_parted_writer_refuses_an_earlier_recording_of_that_name_unless_overwrite(tmp_path: Path) -> None:
    base = tmp_path / "r.pmws"
    base.write_bytes(b"old single file")
    part_path(base, 7).write_bytes(b"old part")
    with pytest.raises(FileExistsError):
        PartedWriter(base, part_bytes=1000)

    writer = PartedWriter(base, part_bytes=1000, overwrite=True)
    writer.close()

    assert not base.exists()
    assert [number for number, _ in recording_parts(base)] == [1]


def test_load_recording_of_parts_with_a_torn_middle_part_marks_every_token_stale_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "torn.pmws"
    writer = PartedWriter(base, part_bytes=300, open_file=small_blocks)
    writer.write_meta(START)
    writer.write_meta({"type": "subscribe", "tokens": ["1", "2"]})
    for n in range(12):
        writer.write_frame(f"frame {n:03d} " + "x" * 80, n)
    writer.close()
    first = part_path(base, 1)
    first.write_bytes(first.read_bytes()[:-5])  # the end of a block lost

    loaded = _replay.load_recording(str(base))

    assert loaded.truncated_bytes > 0
    assert f"note: a torn end before {part_path(base, 2)}" in capsys.readouterr().err
    assert [s.meta for s in loaded.segments if s.meta and s.meta.get("reason") == "gap"] == [
        {"type": "stale", "tokens": ["1", "2"], "reason": "gap"}
    ]


def test_recording_parts_sort_by_number_and_ignore_other_names(tmp_path: Path) -> None:
    base = tmp_path / "x.pmws"
    for name in ("x.pmws.10000", "x.pmws.9999", "x.pmws.0002", "x.pmws.1", "x.pmws.0000", "x.pmws.tmp", "y.pmws.0001"):
        (tmp_path / name).write_bytes(b"")

    assert [path.name for _, path in recording_parts(base)] == ["x.pmws.0002", "x.pmws.9999", "x.pmws.10000"]
    assert recording_parts(tmp_path / "missing" / "x") == []


# -- the command line -------------------------------------------------------------------------------


def _record_in_parts(running: ServerThread, out: Path, *options: str) -> int:
    server = running.server
    with ThreadPoolExecutor(1) as pool:
        argv = ["record", str(out), *server.token_ids, "--url", server.url, "--duration", "3", *options]
        recording = pool.submit(main, argv)
        running.wait_subscribed(1)
        for _ in range(40):
            running.call(server.step(5))
            time.sleep(0.05)
        return int(recording.result(timeout=30))


def test_cli_record_rotates_into_parts_that_replay_as_one_and_alone(
    quiet_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = quiet_server.server
    out = tmp_path / "long.pmws"

    assert _record_in_parts(quiet_server, out, "--rotate-minutes", "0.01", "--rotate-mb", "0.004") == ExitCode.OK

    parts = recording_parts(out)
    assert len(parts) >= 3 and not out.exists()
    assert f"in {len(parts)} parts (now long.pmws.{len(parts):04d})" in capsys.readouterr().err
    loaded = _replay.load_recording(str(out))
    assert loaded.frames == sum(1 for _, path in parts for item in records(path) if not isinstance(item, dict))
    replayer = _replay.Replayer(_core, loaded.tokens)
    for segment in loaded.segments:
        replayer.apply_meta(segment.meta)
        for frame, recv_ns in segment.frames:
            replayer.dispatcher.feed(frame, recv_ns)
    assert all(replayer.store.book(t, depth=None) == server.truth(t) for t in server.token_ids)
    assert all(replayer.store.top(t).state == State.LIVE for t in server.token_ids)

    assert main(["replay", str(out)]) == ExitCode.OK
    assert f"replayed {loaded.frames:,} frames" in capsys.readouterr().out
    for _, path in parts:  # each part alone: its own header, start and subscription
        assert main(["replay", str(path)]) == ExitCode.OK
        assert records(path)[1] == {"type": "subscribe", "tokens": server.token_ids}


def test_cli_replay_of_parts_with_one_missing_marks_every_token_stale_there(
    quiet_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gap.pmws"
    assert _record_in_parts(quiet_server, out, "--rotate-minutes", "0.01") == ExitCode.OK
    parts = recording_parts(out)
    assert len(parts) >= 3
    parts[1][1].unlink()
    capsys.readouterr()

    loaded = _replay.load_recording(str(out))

    assert f"note: missing part 0002 before {parts[2][1]}" in capsys.readouterr().err
    gap = [s.meta for s in loaded.segments if s.meta and s.meta.get("reason") == "gap"]
    assert gap == [{"type": "stale", "tokens": quiet_server.server.token_ids, "reason": "gap"}]
    assert main(["replay", str(out)]) == ExitCode.OK


def test_cli_record_refuses_earlier_parts_and_overwrite_replaces_them(
    quiet_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "again.pmws"
    stale = part_path(out, 9)
    stale.write_bytes(b"from an earlier session")
    server = quiet_server.server
    argv = ["record", str(out), *server.token_ids, "--url", server.url, "--duration", "0.5", "--rotate-mb", "1"]

    assert main(argv) == ExitCode.BAD_FILE
    assert f"{stale} already exists (use --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == ExitCode.OK
    assert [number for number, _ in recording_parts(out)] == [1]


def test_cli_replay_without_the_file_or_parts_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "none.pmws")]) == ExitCode.BAD_FILE
    assert "No such file (nor parts" in capsys.readouterr().err


def test_cli_record_progress_line_shows_connections_parts_and_states(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with server_thread(markets=1, rate_hz=50) as running:
        argv = ["record", str(tmp_path / "p.pmws"), *running.server.token_ids, "--url", running.server.url]
        code = main([*argv, "--duration", "1.2", "--rotate-mb", "5"])

    assert code == ExitCode.OK
    final = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(
        r"recording p.pmws 1 s: connections 1/1 up, 0 reconnects, 2 LIVE; [\d,]+ frames \([\d,]+/s\), "
        r"[\d.]+ MB received, [\d.]+ MB written in 1 part \(now p.pmws.0001\) \(done\)", final
    ), final


def test_demo_record_writes_a_recording_that_replays_and_is_refused_again_without_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.pmrec"

    assert main(["demo", "--duration", "3", "--seed", "1", "--fault-every", "1", "--plain", "--record", str(out)]) == 0
    with RecordingReader(out) as reader:
        records = list(reader)
    metas = [r.meta for r in records if r.kind == KIND_META]
    assert metas[0]["type"] == "start" and metas[1]["type"] == "subscribe" and len(metas[1]["tokens"]) == 6
    assert sum(r.kind != KIND_META for r in records) > 10
    assert any(m["type"] == "stale" for m in metas)  # the demo's faults reach the recording
    capsys.readouterr()
    assert main(["replay", str(out)]) == 0
    assert "ev_book=" in capsys.readouterr().out

    assert main(["demo", "--duration", "1", "--plain", "--record", str(out)]) == ExitCode.BAD_FILE
    assert main(["demo", "--duration", "1", "--plain", "--record", str(out), "--overwrite"]) == 0
