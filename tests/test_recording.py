"""Recording file format: round trip, torn tails, damage, flushing policy."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from pm_ws.recording import (
    BLOCK_HEADER,
    KIND_BINARY,
    KIND_META,
    KIND_TEXT,
    MAGIC,
    RecordingError,
    RecordingReader,
    RecordingWriter,
)

FRAMES: list[str | bytes] = [
    '[{"event_type":"book","asset_id":"1","bids":[],"asks":[]}]',
    "PONG",
    b"\x00\xffbinary frame",
    "",
    "caf\u00e9 \u2603 non-ascii",
    '{"event_type":"price_change"}' * 50,
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_all(path: Path, frames: list[str | bytes], **options: object) -> RecordingWriter:
    with RecordingWriter(path, **options) as writer:  # type: ignore[arg-type]
        for index, frame in enumerate(frames):
            writer.write_frame(frame, 1_700_000_000_000_000_000 + index)
    return writer


def read_all(path: Path) -> tuple[list[tuple[int, int, str | bytes]], int]:
    with RecordingReader(path) as reader:
        records = [(r.recv_ns, r.kind, r.frame) for r in reader]
        return records, reader.truncated_bytes


def test_recording_round_trip_returns_every_frame_exactly(tmp_path: Path) -> None:
    path = tmp_path / "a.pmws"
    write_all(path, FRAMES)

    records, truncated = read_all(path)

    assert [frame for _, _, frame in records] == FRAMES
    assert [type(frame) for _, _, frame in records] == [type(f) for f in FRAMES]
    assert [ns for ns, _, _ in records] == [1_700_000_000_000_000_000 + i for i in range(len(FRAMES))]
    assert truncated == 0


def test_recording_meta_record_decodes_to_the_object_written(tmp_path: Path) -> None:
    path = tmp_path / "m.pmws"
    with RecordingWriter(path) as writer:
        writer.write_meta({"type": "subscribe", "tokens": ["1", "2"]}, recv_ns=5)
        writer.write_frame("PONG", 6)

    with RecordingReader(path) as reader:
        records = list(reader)

    assert [r.kind for r in records] == [KIND_META, KIND_TEXT]
    assert records[0].meta == {"type": "subscribe", "tokens": ["1", "2"]}
    assert records[0].recv_ns == 5
    assert writer.frames == 1


def test_recording_file_starts_with_magic_and_is_compressed(tmp_path: Path) -> None:
    path = tmp_path / "c.pmws"
    frame = '{"event_type":"price_change","asset_id":"' + "7" * 77 + '"}'
    writer = write_all(path, [frame] * 1000)

    data = path.read_bytes()

    assert data.startswith(MAGIC)
    assert len(data) == writer.file_bytes
    assert len(data) * 10 < writer.frame_bytes


def test_recording_torn_last_block_keeps_every_earlier_block(tmp_path: Path) -> None:
    path = tmp_path / "t.pmws"
    write_all(path, ["a" * 100, "b" * 100, "c" * 100], block_bytes=1)  # one block per frame
    whole = path.read_bytes()
    last_block = _last_block_size(whole)

    for cut in range(1, last_block):
        path.write_bytes(whole[:-cut])
        records, truncated = read_all(path)
        assert [frame for _, _, frame in records] == ["a" * 100, "b" * 100]
        assert truncated == last_block - cut


def _last_block_size(data: bytes) -> int:
    offset, last = len(MAGIC), 0
    while offset < len(data):
        _, packed_len, _ = BLOCK_HEADER.unpack_from(data, offset)
        last = BLOCK_HEADER.size + packed_len
        offset += last
    return last


def test_recording_damaged_block_raises_recording_error(tmp_path: Path) -> None:
    path = tmp_path / "d.pmws"
    write_all(path, ["x" * 200, "y" * 200], block_bytes=1)
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + BLOCK_HEADER.size + 3] ^= 0xFF  # inside the first block's zlib data
    path.write_bytes(bytes(data))

    with pytest.raises(RecordingError, match="damaged block at byte 8"):
        read_all(path)


def test_recording_bad_record_inside_valid_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "r.pmws"
    raw = struct.pack("<qBI", 1, 9, 0)  # kind 9 does not exist
    packed = zlib.compress(raw)
    path.write_bytes(MAGIC + BLOCK_HEADER.pack(len(raw), len(packed), zlib.crc32(raw)) + packed)

    with pytest.raises(RecordingError, match="bad record"):
        read_all(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a pm_ws recording"), (b"hello world\n", "not a pm_ws recording"),
     (b"PMWSREC\x07", "version 7 is not supported")],
)  # fmt: skip
def test_recording_reader_foreign_file_raises_recording_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "f.pmws"
    path.write_bytes(content)

    with pytest.raises(RecordingError, match=message):
        RecordingReader(path)


def test_recording_writer_existing_file_refused_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "e.pmws"
    path.write_bytes(b"precious")

    with pytest.raises(FileExistsError):
        RecordingWriter(path)
    assert path.read_bytes() == b"precious"
    RecordingWriter(path, overwrite=True).close()
    assert path.read_bytes() == MAGIC


def test_recording_writer_flushes_block_after_interval(tmp_path: Path) -> None:
    path = tmp_path / "i.pmws"
    clock = FakeClock()
    writer = RecordingWriter(path, flush_interval=1.0, clock=clock)
    writer.write_frame("first", 1)
    writer.flush_if_due()
    assert read_all(path)[0] == []

    clock.now = 1.0
    writer.flush_if_due()

    assert read_all(path)[0] == [(1, KIND_TEXT, "first")]
    writer.close()


def test_recording_writer_flushes_block_when_full(tmp_path: Path) -> None:
    path = tmp_path / "b.pmws"
    writer = RecordingWriter(path, block_bytes=64, clock=FakeClock())
    writer.write_frame(b"z" * 64, 1)

    assert read_all(path)[0] == [(1, KIND_BINARY, b"z" * 64)]
    writer.close()


def test_recording_killed_writer_leaves_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "k.pmws"
    script = (
        "import os, sys\n"
        "from pm_ws.recording import RecordingWriter\n"
        "w = RecordingWriter(sys.argv[1])\n"
        "for i in range(100): w.write_frame('frame %d' % i, i)\n"
        "w.flush()\n"
        "w.write_frame('never flushed', 100)\n"
        "os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=False, timeout=60)

    records, truncated = read_all(path)

    assert [frame for _, _, frame in records] == [f"frame {i}" for i in range(100)]
    assert truncated == 0
