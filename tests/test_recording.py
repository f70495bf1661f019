"""Recording file format: round trip, torn tails, damage, bounded inflating, a full disk, flushing policy."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pm_ws import recording
from pm_ws.recording import (
    BLOCK_HEADER,
    BLOCK_HEADER_V1,
    KIND_BINARY,
    KIND_META,
    KIND_TEXT,
    MAGIC,
    RECORD_HEADER,
    RecordingError,
    RecordingReader,
    RecordingWriteError,
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


MAGIC_V1 = b"PMWSREC\x01"
NS = 1_700_000_000_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_all(path: Path, frames: list[str | bytes], **options: object) -> RecordingWriter:
    with RecordingWriter(path, **options) as writer:  # type: ignore[arg-type]
        for index, frame in enumerate(frames):
            writer.write_frame(frame, NS + index)
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
    assert [ns for ns, _, _ in records] == [NS + i for i in range(len(FRAMES))]
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


def write_v1(path: Path, frames: list[str]) -> None:
    """A format version 1 file, laid out as the version 1 writer did: one block per frame, no header_crc."""
    blocks = [MAGIC_V1]
    for index, frame in enumerate(frames):
        payload = frame.encode()
        blocks.append(v1_block(RECORD_HEADER.pack(NS + index, KIND_TEXT, len(payload)) + payload))
    path.write_bytes(b"".join(blocks))


def v1_block(raw: bytes) -> bytes:
    packed = zlib.compress(raw)
    return BLOCK_HEADER_V1.pack(len(raw), len(packed), zlib.crc32(raw)) + packed


def write_blocks(path: Path, frames: list[str], version: int) -> list[int]:
    """A file of one block per frame in format `version`; returns the byte offset of each block."""
    if version == 1:
        write_v1(path, frames)
    else:
        write_all(path, frames, block_bytes=1)
    data, header = path.read_bytes(), BLOCK_HEADER_V1 if version == 1 else BLOCK_HEADER
    offsets = [len(MAGIC)]
    while (end := offsets[-1] + header.size + header.unpack_from(data, offsets[-1])[1]) < len(data):
        offsets.append(end)
    return offsets


def read_until_error(path: Path) -> tuple[list[str | bytes], RecordingError | None]:
    frames: list[str | bytes] = []
    try:
        with RecordingReader(path) as reader:
            for record in reader:
                frames.append(record.frame)
    except RecordingError as exc:
        return frames, exc
    return frames, None


def test_recording_version_1_file_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "v1.pmws"
    frames = ["a" * 100, "", "caf\u00e9"]
    write_v1(path, frames)

    with RecordingReader(path) as reader:
        records = list(reader)

    assert reader.version == 1
    assert [r.frame for r in records] == frames
    assert [r.recv_ns for r in records] == [NS, NS + 1, NS + 2]


@pytest.mark.parametrize("version", [1, 2])
def test_recording_torn_last_block_keeps_every_earlier_block(tmp_path: Path, version: int) -> None:
    path = tmp_path / "t.pmws"
    offsets = write_blocks(path, ["a" * 100, "b" * 100, "c" * 100], version)
    whole = path.read_bytes()
    last_block = len(whole) - offsets[-1]

    for cut in range(1, last_block):
        path.write_bytes(whole[:-cut])
        records, truncated = read_all(path)
        assert [frame for _, _, frame in records] == ["a" * 100, "b" * 100]
        assert truncated == last_block - cut


def test_recording_damaged_block_raises_recording_error(tmp_path: Path) -> None:
    path = tmp_path / "d.pmws"
    write_all(path, ["x" * 200, "y" * 200], block_bytes=1)
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + BLOCK_HEADER.size + 3] ^= 0xFF  # inside the first block's zlib data
    path.write_bytes(bytes(data))

    with pytest.raises(RecordingError, match="damaged block at byte 8"):
        read_all(path)


HEADER_DAMAGE = {  # name: (offset of the u32 in the block header, its new value from the old one and the bytes left)
    "packed_len past the end of the file": (4, lambda value, left: left + 1),
    "packed_len + 1": (4, lambda value, left: value + 1),
    "packed_len - 1": (4, lambda value, left: value - 1),
    "raw_len + 1": (0, lambda value, left: value + 1),
    "raw_len - 1": (0, lambda value, left: value - 1),
}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("block", [1, 5])  # the second of six blocks, and the last
@pytest.mark.parametrize("damage", list(HEADER_DAMAGE))
def test_recording_damaged_block_header_is_an_error_naming_its_offset_not_a_torn_tail(
    tmp_path: Path, version: int, block: int, damage: str
) -> None:
    # Compressible frames: a block's raw_len bounds its packed_len far above the rest of the file,
    # so a too long packed_len is judged by what its bytes hold, not by the length limit
    frames = [letter * 10_000 for letter in "abcdef"]
    path = tmp_path / "h.pmws"
    offsets = write_blocks(path, frames, version)
    data = bytearray(path.read_bytes())
    field, new_value = HEADER_DAMAGE[damage]
    position = offsets[block] + field
    (value,) = struct.unpack_from("<I", data, position)
    struct.pack_into("<I", data, position, new_value(value, len(data) - offsets[block]))
    path.write_bytes(bytes(data))

    read, error = read_until_error(path)

    assert read == frames[:block]
    assert error is not None and f"damaged block at byte {offsets[block]}" in str(error)
def test_recording_bad_record_inside_valid_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "r.pmws"
    raw = struct.pack("<qBI", 1, 9, 0)  # kind 9 does not exist
    path.write_bytes(MAGIC_V1 + v1_block(raw))

    with pytest.raises(RecordingError, match="bad record"):
        read_all(path)


def zlib_bomb(inflated_mib: int) -> bytes:
    """A valid zlib stream of `inflated_mib` MiB of zeros, about 1 KiB per MiB, made in milliseconds."""
    zeros = bytes(2**20)
    deflater = zlib.compressobj(9)
    first = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    again = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)  # a full flush restarts: same bytes
    end = deflater.flush()[:-4]  # the final block, without the adler32 of these 2 MiB
    adler32 = (inflated_mib * 2**20 % 65521) << 16 | 1  # of n zero bytes: sum 1, sum of sums n
    return first + again * (inflated_mib - 1) + end + struct.pack(">I", adler32)


def bomb_recording(path: Path, version: int, raw_len: int, cut: bool) -> None:
    """A block of a 1 MB zlib bomb (1000 MiB inflated) that claims `raw_len`; `cut`: the file ends inside it."""
    packed = zlib_bomb(1000)
    fields = (raw_len, len(packed) + cut, zlib.crc32(b"anything"))
    header = BLOCK_HEADER_V1.pack(*fields) if version == 1 else BLOCK_HEADER.pack(*fields, zlib.crc32(
        BLOCK_HEADER_V1.pack(*fields)))  # fmt: skip
    path.write_bytes((MAGIC_V1 if version == 1 else MAGIC) + header + packed)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc/self/status")
def test_recording_zlib_bomb_is_damage_found_in_bounded_memory(tmp_path: Path) -> None:
    # The block claims 100 bytes (or 2 MiB), its data inflates to 1000 MiB: the reader must stop
    # inflating at the claimed length. Read in a child that reports its own peak RSS: VmHWM, as a
    # child's ru_maxrss on Linux starts at the RSS of the process that forked it (here pytest's)
    cases = [(version, raw_len, cut) for version in (1, 2) for raw_len, cut in ((100, False), (2**21, False),
                                                                                (2**21, True))]  # fmt: skip
    paths = []
    for version, raw_len, cut in cases:
        paths.append(tmp_path / f"bomb-v{version}-{raw_len}-{'cut' if cut else 'whole'}.pmws")
        bomb_recording(paths[-1], version, raw_len, cut)
    script = (
        "import json, sys\n"
        "from pm_ws.recording import RecordingError, RecordingReader\n"
        "errors = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        with RecordingReader(path) as reader:\n"
        "            errors.append(f'read {sum(1 for _ in reader)} records')\n"
        "    except RecordingError as exc:\n"
        "        errors.append(str(exc))\n"
        "status = open('/proc/self/status').read()\n"
        "rss = int(status.split('VmHWM:')[1].split()[0]) * 1024\n"
        "print(json.dumps({'errors': errors, 'peak_rss': rss}))\n"
    )
    command = [sys.executable, "-c", script, *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(error.startswith("damaged block at byte 8:") for error in report["errors"]), report["errors"]
    assert report["peak_rss"] < 100 * 2**20


def test_recording_reader_refuses_lengths_beyond_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "l.pmws"
    for raw_len, packed_len in ((recording.MAX_BLOCK_BYTES + 1, 10), (100, recording.max_packed_len(100) + 1)):
        fields = (raw_len, packed_len, 0)
        path.write_bytes(MAGIC + BLOCK_HEADER.pack(*fields, zlib.crc32(BLOCK_HEADER_V1.pack(*fields))))

        with pytest.raises(RecordingError, match="damaged block at byte 8: impossible lengths"):
            read_all(path)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_recording_max_packed_len_holds_for_incompressible_blocks(level: int) -> None:
    raw = random.Random(level).randbytes(2**20)

    assert len(zlib.compress(raw, level)) <= recording.max_packed_len(len(raw))


def test_recording_writer_cuts_blocks_at_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording, "MAX_BLOCK_BYTES", 1000)
    path = tmp_path / "s.pmws"
    with RecordingWriter(path, block_bytes=1000, clock=FakeClock()) as writer:
        writer.write_frame(b"a" * 600, 1)
        writer.write_frame(b"b" * 600, 2)  # 2 x 613 bytes do not fit in one block
        with pytest.raises(ValueError, match="does not fit in a block of 1000 bytes"):
            writer.write_frame(b"c" * 988, 3)

    assert writer.blocks == 2
    assert read_all(path)[0] == [(1, KIND_BINARY, b"a" * 600), (2, KIND_BINARY, b"b" * 600)]
    with pytest.raises(ValueError, match="block_bytes must be 1"):
        RecordingWriter(tmp_path / "big.pmws", block_bytes=1001)


class FillingDisk:
    """A raw file on a disk with `free` bytes left: a write takes what fits, the next fails, as write(2) does."""

    def __init__(self, file: object, free: int) -> None:
        self.file = file
        self.free = free

    def write(self, data: memoryview) -> int:
        if not self.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken: int = self.file.write(data[: self.free])  # type: ignore[attr-defined]
        self.free -= taken
        return taken

    def close(self) -> None:
        self.file.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["tmpfs", "simulated"])
def writer_on_small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordingWriter]:
    """A writer on a disk with 64 KiB: a real tmpfs (needs root and mount) or a simulated one."""
    if request.param == "simulated":
        writer = RecordingWriter(tmp_path / "full.pmws", block_bytes=4096)
        writer._file = FillingDisk(writer._file, 64 * 1024 - len(MAGIC))  # type: ignore[assignment]
        yield writer
        return
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = [shutil.which("mount") or "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a 64 KiB tmpfs here")
    try:
        yield RecordingWriter(disk / "full.pmws", block_bytes=4096)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_recording_full_disk_is_a_write_error_and_what_was_written_reads_back(
    writer_on_small_disk: RecordingWriter,
) -> None:
    writer = writer_on_small_disk
    frames = [random.Random(index).randbytes(1000) for index in range(1000)]  # 1 MB that does not compress
    durable = durable_bytes = 0  # frames and file bytes of the blocks written whole

    with pytest.raises(RecordingWriteError) as caught:
        for index, frame in enumerate(frames):
            blocks = writer.blocks
            writer.write_frame(frame, index)
            if writer.blocks > blocks:
                durable, durable_bytes = index + 1, writer.file_bytes

    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert str(error) == (
        f"cannot write {writer.path}: No space left on device (the recording ends at the last block written)"
    )
    for later in (lambda: writer.write_frame("more", 0), writer.flush_if_due, writer.close):
        with pytest.raises(RecordingWriteError) as again:
            later()
        assert again.value is error
    records, truncated = read_all(writer.path)
    assert [frame for _, _, frame in records] == frames[:durable]
    assert durable > 40
    assert writer.path.stat().st_size == writer.file_bytes
    assert truncated == writer.file_bytes - durable_bytes


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
