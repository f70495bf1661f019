"""Recordings: every raw market-channel frame with its receive time, in a compact append-only file.

File format (version 2, all integers little-endian)::

    file    := MAGIC block*
    MAGIC   := b"PMWSREC" 0x02                      8 bytes; the last byte is the format version
    block   := raw_len:u32  packed_len:u32  crc:u32  header_crc:u32  packed[packed_len]
               packed = zlib (RFC 1950) compression of `raw_len` bytes of records,
               crc = zlib.crc32 of those uncompressed bytes,
               header_crc = zlib.crc32 of the 12 header bytes before it
    record  := recv_ns:i64  kind:u8  length:u32  payload[length]
    kind    := 0 text frame (payload = its UTF-8 bytes)
             | 1 binary frame (payload = the bytes as received)
             | 2 meta (payload = a UTF-8 JSON object, see below)

Limits: ``raw_len`` <= 64 MiB (:data:`MAX_BLOCK_BYTES`, so a frame may have up to 64 MiB - 13 bytes)
and ``packed_len`` <= ``raw_len + raw_len // 64 + 64`` (more than zlib ever expands data), so a
damaged or hostile length cannot make a reader allocate more.
Version 1 files (``b"PMWSREC" 0x01``, the same blocks without ``header_crc``) are still read.

Every block is compressed on its own and written with one ``write`` call, and a record never spans
two blocks. The writer cuts a block at least every ``flush_interval`` seconds (1 s by default), when
``block_bytes`` of records are pending, and on close, so a crash or a kill loses at most the records
of the last second, and a full disk (:class:`RecordingWriteError`) the block being written: a reader
skips a torn last block and yields every record before it
(``truncated_bytes`` says how many bytes it skipped). A block is torn only when the file ends inside
it: fewer bytes than a header are left, or its header is whole (with the right ``header_crc``) and
the file ends inside its ``packed`` bytes, which inflate without error to no more than ``raw_len``
bytes. Any other damage, at the end of the file or not, raises :class:`RecordingError` naming the
block's byte offset: a wrong checksum, a length beyond the limits, or data that does not inflate
to exactly ``raw_len`` bytes. Inflating never produces more than ``raw_len + 1`` bytes.

A long recording may be cut into numbered parts ``OUT.0001``, ``OUT.0002`` ... (:class:`PartedWriter`), each
a complete file as above that starts with its own ``start`` and ``subscribe`` meta records, so it
replays alone; :func:`recording_parts` finds them, and read in order they replay as one recording.

Meta records say what the recorder did, so a replay can rebuild the same store:
``{"type": "start", "format": 2, "url": ..., "tool": ...}`` first (with ``"part": n`` in part n), then
``{"type": "subscribe", "tokens": [...]}``, ``{"type": "unsubscribe", "tokens": [...]}`` and
``{"type": "stale", "tokens": [...]}`` (the connection carrying those tokens was lost) when they happened.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

from .errors import PmWsError

MAGIC = b"PMWSREC\x02"
FORMAT_VERSION = 2
BLOCK_HEADER = struct.Struct("<IIII")  # raw_len, packed_len, crc32(raw), crc32(the 12 bytes before)
BLOCK_HEADER_V1 = struct.Struct("<III")  # version 1: raw_len, packed_len, crc32(raw)
_BLOCK_HEADERS = {1: BLOCK_HEADER_V1, FORMAT_VERSION: BLOCK_HEADER}  # the versions a reader reads
RECORD_HEADER = struct.Struct("<qBI")  # recv_ns, kind, payload length

KIND_TEXT = 0
KIND_BINARY = 1
KIND_META = 2
_KINDS = (KIND_TEXT, KIND_BINARY, KIND_META)

PART_DIGITS = 4  # OUT.0001: the parts of a recording sort by name up to 9,999 (their number beyond)
DEFAULT_FLUSH_INTERVAL = 1.0  # seconds of records a crash may lose at most
DEFAULT_BLOCK_BYTES = 256 * 1024  # uncompressed; big enough for zlib to find the repeated token ids
# Largest raw_len a block may declare: room for one frame of the client's default 32 MiB limit, and
# a bound on what a reader allocates for a block whatever its header says
MAX_BLOCK_BYTES = 64 * 2**20


def max_packed_len(raw_len: int) -> int:
    """The largest ``packed_len`` a block of ``raw_len`` raw bytes may declare."""
    return raw_len + raw_len // 64 + 64  # above zlib's worst case, compressBound(n) = n + n/4096 + n/16384 + 13


class RecordingError(PmWsError, ValueError):
    """A file is not a pm_ws recording, or a block inside it is damaged."""


class RecordingWriteError(PmWsError, OSError):
    """Writing a recording failed (``errno`` says why: ``errno.ENOSPC`` is a full disk).

    The recording ends there, still readable: the file stops at a whole block or inside the block
    being written, which readers skip as a torn last block.
    """

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror} (the recording ends at the last block written)"


class Record(NamedTuple):
    """One record of a recording: a received frame or a meta note."""

    recv_ns: int  # time.time_ns() when the frame arrived
    kind: int  # KIND_TEXT, KIND_BINARY or KIND_META
    payload: bytes

    @property
    def frame(self) -> str | bytes:
        """The frame as the socket delivered it: ``str`` for text frames, ``bytes`` for binary."""
        return self.payload.decode("utf-8", "surrogatepass") if self.kind == KIND_TEXT else self.payload

    @property
    def meta(self) -> dict[str, Any]:
        """The decoded JSON object of a meta record."""
        value = json.loads(self.payload)
        if not isinstance(value, dict):
            raise RecordingError(f"meta record at {self.recv_ns} is not a JSON object")
        return value


class RecordingWriter:
    """Append frames to a new recording file, compressed in independently readable blocks.

    Parameters
    ----------
    path : str or Path
        File to create.
    overwrite : bool
        Replace an existing file instead of refusing with ``FileExistsError``.
    flush_interval : float
        Cut and write a block when the oldest pending record is this many seconds old.
    block_bytes : int
        Cut and write a block when this many uncompressed bytes are pending (1 ... ``MAX_BLOCK_BYTES``).
    level : int
        zlib compression level (1 fast ... 9 small).
    clock : callable
        Monotonic clock in seconds, for tests.

    Raises
    ------
    RecordingWriteError
        A write failed (a full disk, an I/O error). The file is closed, keeps every block written
        before, and every later call (``close`` too) raises the same error.
    ValueError
        A frame too large for one block (``MAX_BLOCK_BYTES``), or a write after ``close``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        level: int = 6,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= block_bytes <= MAX_BLOCK_BYTES:
            raise ValueError(f"block_bytes must be 1 ... {MAX_BLOCK_BYTES}, not {block_bytes}")
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.block_bytes = block_bytes
        self.level = level
        self._clock = clock
        self._error: RecordingWriteError | None = None
        # unbuffered: each block reaches the OS in one write, so a crashed process loses nothing written
        self._file: IO[bytes] | None = open(self.path, "wb" if overwrite else "xb", buffering=0)
        self._pending = bytearray()
        self._pending_since = 0.0
        self.frames = 0  # frame records written (meta records not counted)
        self.frame_bytes = 0  # payload bytes of those frames
        self.file_bytes = 0  # bytes on disk so far
        self.blocks = 0
        self._pending_frames = 0
        self._write(MAGIC)
        # What a crash or a failed write now would leave readable: the frames and bytes of the whole blocks
        self.kept_frames = 0
        self.kept_bytes = self.file_bytes

    def write_frame(self, frame: str | bytes | bytearray | memoryview, recv_ns: int) -> None:
        """Add one received frame (``str`` is stored as UTF-8 and read back as ``str``)."""
        if isinstance(frame, str):
            self._append(recv_ns, KIND_TEXT, frame.encode("utf-8", "surrogatepass"))
        else:
            self._append(recv_ns, KIND_BINARY, bytes(frame))

    def write_meta(self, meta: dict[str, Any], recv_ns: int | None = None) -> None:
        """Add a meta note (a JSON object), stamped now unless ``recv_ns`` is given."""
        payload = json.dumps(meta, separators=(",", ":")).encode()
        self._append(time.time_ns() if recv_ns is None else recv_ns, KIND_META, payload)

    def flush_if_due(self) -> None:
        """Write the pending block if it is older than ``flush_interval`` (call this periodically).

        It also raises the :class:`RecordingWriteError` of an earlier failed write, so a periodic
        caller learns of a failure that happened inside a frame callback.
        """
        if self._error is not None:
            raise self._error
        if self._pending and self._clock() - self._pending_since >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Compress the pending records into one block and hand it to the OS."""
        if self._error is not None:
            raise self._error
        if not self._pending or self._file is None:
            return
        raw = bytes(self._pending)
        packed = zlib.compress(raw, self.level)
        fields = (len(raw), len(packed), zlib.crc32(raw))
        self._write(BLOCK_HEADER.pack(*fields, zlib.crc32(BLOCK_HEADER_V1.pack(*fields))) + packed)
        self._pending.clear()
        self.blocks += 1
        self.kept_frames += self._pending_frames
        self.kept_bytes = self.file_bytes
        self._pending_frames = 0

    def close(self) -> None:
        """Flush what is pending and close the file (idempotent, unless a write failed: see Raises)."""
        if self._file is None:
            if self._error is not None:
                raise self._error
            return
        try:
            self.flush()
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _append(self, recv_ns: int, kind: int, payload: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._file is None:
            raise ValueError("write to a closed RecordingWriter")
        size = RECORD_HEADER.size + len(payload)
        if size > MAX_BLOCK_BYTES:
            raise ValueError(f"a {len(payload)} byte record does not fit in a block of {MAX_BLOCK_BYTES} bytes")
        if len(self._pending) + size > MAX_BLOCK_BYTES:
            self.flush()
        if not self._pending:
            self._pending_since = self._clock()
        self._pending += RECORD_HEADER.pack(recv_ns, kind, len(payload))
        self._pending += payload
        if kind != KIND_META:
            self.frames += 1
            self.frame_bytes += len(payload)
            self._pending_frames += 1
        if len(self._pending) >= self.block_bytes:
            self.flush()
        else:
            self.flush_if_due()

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        try:
            while view:  # a raw write may take only part (a disk filling up): the next call says why
                written = self._file.write(view)
                self.file_bytes += written
                view = view[written:]
        except OSError as exc:
            self._error = RecordingWriteError(exc.errno, exc.strerror or str(exc), str(self.path))
            self._file.close()
            self._file = None
            raise self._error from exc


def part_path(path: str | os.PathLike[str], number: int) -> Path:
    """The file of part ``number`` (from 1) of a recording written in parts: ``OUT.0001``, ``OUT.0002`` ..."""
    return Path(f"{os.fspath(path)}.{number:0{PART_DIGITS}d}")


def recording_parts(path: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The numbered parts ``path.NNNN`` that exist, as (number, file) in order; [] when there are none."""
    base = Path(path)
    parts = []
    with suppress(OSError):  # a missing folder has no parts
        for candidate in base.parent.iterdir():
            prefix, dot, number = candidate.name.rpartition(".")
            if dot and prefix == base.name and number.isdigit() and len(number) >= PART_DIGITS and int(number):
                parts.append((int(number), candidate))
    return sorted(parts)


class PartedWriter:
    """A recording in one file, or cut into numbered parts by size or age, each a complete recording.

    Without a limit it writes ``path`` itself. With ``part_bytes`` or ``part_seconds`` it writes
    ``path.0001``, ``path.0002`` ... (:func:`part_path`): before a record is added (and in
    ``flush_if_due``) a part that holds ``part_bytes`` bytes or is ``part_seconds`` old is closed and
    the next one opened. Bytes reach the file a block at a time, so a part may exceed ``part_bytes``
    by one block. With ``overwrite`` an earlier recording of that name (the file ``path`` and its
    parts) is removed first, and without it refused (``FileExistsError``). Each part starts with the ``start`` meta
    record (with ``"part": n`` added) and a ``subscribe`` of every token subscribed at that moment, so
    it replays alone; read in order, the parts replay as one recording (a token subscribed again keeps
    its row). The counters (``frames``, ``frame_bytes``, ``file_bytes``, ``kept_frames``) cover every
    part; ``path`` and ``kept_bytes`` are those of the part being written.

    Parameters
    ----------
    path : str or Path
        The recording, or the base name of its parts.
    part_bytes : int, optional
        Cut a part at this size.
    part_seconds : float, optional
        Cut a part at this age.
    overwrite : bool
        Replace an earlier recording instead of refusing with ``FileExistsError``.
    open_file : callable
        ``open_file(path, overwrite=...)`` makes each file's writer (``RecordingWriter``).
    clock : callable
        Monotonic clock in seconds, for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        part_bytes: int | None = None,
        part_seconds: float | None = None,
        overwrite: bool = False,
        open_file: Callable[..., RecordingWriter] = RecordingWriter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = Path(path)
        self.part_bytes = part_bytes
        self.part_seconds = part_seconds
        self.parted = part_bytes is not None or part_seconds is not None
        self.overwrite = overwrite
        self._open_file = open_file
        self._clock = clock
        self._start: dict[str, Any] | None = None
        self._tokens: dict[str, None] = {}  # subscribed now, in subscription order
        # the counters of the closed parts
        self._before = dict.fromkeys(("frames", "frame_bytes", "file_bytes", "kept_frames"), 0)
        self.parts = 0
        self.paths: list[Path] = []  # every file written, in order
        if self.parted:
            self._clear_earlier_parts()
        self._file = self._open_next()

    @property
    def path(self) -> Path:
        """The file being written."""
        return self._file.path

    @property
    def frames(self) -> int:
        """Frame records written, every part."""
        return self._before["frames"] + self._file.frames

    @property
    def frame_bytes(self) -> int:
        """Payload bytes of those frames."""
        return self._before["frame_bytes"] + self._file.frame_bytes

    @property
    def file_bytes(self) -> int:
        """Bytes on disk, every part."""
        return self._before["file_bytes"] + self._file.file_bytes

    @property
    def kept_frames(self) -> int:
        """Frames in the whole blocks on disk, every part."""
        return self._before["kept_frames"] + self._file.kept_frames

    @property
    def kept_bytes(self) -> int:
        """Bytes of the part being written up to the end of its last whole block."""
        return self._file.kept_bytes

    def write_frame(self, frame: str | bytes | bytearray | memoryview, recv_ns: int) -> None:
        """``RecordingWriter.write_frame``, into the next part if this one is full or old enough."""
        self._next_part_if_due()
        self._file.write_frame(frame, recv_ns)

    def write_meta(self, meta: dict[str, Any], recv_ns: int | None = None) -> None:
        """``RecordingWriter.write_meta``; the ``start`` meta and the subscription are kept for the next part."""
        self._next_part_if_due()
        kind = meta.get("type")
        if kind == "start" and self._start is None:
            self._start = meta
            meta = self._numbered(meta)
        elif kind == "subscribe":
            self._tokens.update(dict.fromkeys(meta.get("tokens", [])))
        elif kind == "unsubscribe":
            for token in meta.get("tokens", []):
                self._tokens.pop(token, None)
        self._file.write_meta(meta, recv_ns)

    def flush_if_due(self) -> None:
        """``RecordingWriter.flush_if_due``, then the next part if this one is old enough."""
        self._file.flush_if_due()
        self._next_part_if_due()

    def flush(self) -> None:
        """``RecordingWriter.flush`` of the part being written."""
        self._file.flush()

    def close(self) -> None:
        """Close the part being written (see ``RecordingWriter.close``)."""
        self._file.close()

    def _numbered(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {**meta, "part": self.parts} if self.parted else meta

    def _next_part_if_due(self) -> None:
        if not self.parted:
            return
        current = self._file
        full = self.part_bytes is not None and current.file_bytes >= self.part_bytes
        old = self.part_seconds is not None and self._clock() - self._opened >= self.part_seconds
        if not (full or old):
            return
        current.close()
        for name in self._before:
            self._before[name] += getattr(current, name)
        self._file = self._open_next()
        if self._start is not None:
            self._file.write_meta(self._numbered(self._start))
        if self._tokens:
            self._file.write_meta({"type": "subscribe", "tokens": list(self._tokens)})

    def _clear_earlier_parts(self) -> None:
        # The files `replay path` would read instead of (or after) the new parts: refused, or removed with overwrite
        earlier = [self.base] if self.base.exists() else []
        earlier += [path for _, path in recording_parts(self.base)]
        if earlier and not self.overwrite:
            raise FileExistsError(errno.EEXIST, "a recording by that name exists", str(earlier[0]))
        for path in earlier:
            path.unlink()

    def _open_next(self) -> RecordingWriter:
        self.parts += 1
        path = part_path(self.base, self.parts) if self.parted else self.base
        writer = self._open_file(path, overwrite=self.overwrite)
        self.paths.append(path)
        self._opened = self._clock()
        return writer


class RecordingReader:
    """Iterate over the records of a recording, block by block.

    Parameters
    ----------
    path : str or Path
        The recording (format version 2 or 1).

    Raises
    ------
    OSError
        The file cannot be opened.
    RecordingError
        The file does not start with the recording magic (checked on open), or a block is damaged
        (raised while iterating, after the records of every block before it; the message names the
        damaged block's byte offset).

    Notes
    -----
    Iterate once: the reader streams the file block by block. A torn last block (a recorder that
    crashed, was killed or hit a full disk mid-write; see the module docstring for what counts as
    torn) is skipped; after iteration ``truncated_bytes`` says how many bytes that was (0 for a
    clean file). ``version`` is the file's format version (1 or 2).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[bytes] = open(self.path, "rb")
        magic = self._file.read(len(MAGIC))
        if magic[:-1] != MAGIC[:-1] or magic[-1] not in _BLOCK_HEADERS:
            self._file.close()
            if magic[:-1] == MAGIC[:-1]:
                raise RecordingError(f"recording format version {magic[-1]} is not supported")
            raise RecordingError(f"not a pm_ws recording (it starts with {magic!r})")
        self.version = magic[-1]
        self.truncated_bytes = 0

    def __iter__(self) -> Iterator[Record]:
        read = self._file.read
        header_size = _BLOCK_HEADERS[self.version].size
        offset = len(MAGIC)
        while header := read(header_size):
            if len(header) < header_size:
                self.truncated_bytes = len(header)
                return
            raw_len, packed_len, crc = self._lengths(header, offset)
            packed = read(packed_len)
            if len(packed) < packed_len:
                if not _is_torn(packed, raw_len):
                    raise RecordingError(
                        f"damaged block at byte {offset}: it claims {packed_len} bytes, the file ends after "
                        f"{len(packed)} that are not a torn block"
                    )
                self.truncated_bytes = len(header) + len(packed)
                return
            yield from _records_of(_unpack_block(packed, raw_len, crc, offset), offset)
            offset += len(header) + packed_len

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _lengths(self, header: bytes, offset: int) -> tuple[int, int, int]:
        # raw_len, packed_len and crc of a block header, checked before anything is read or inflated
        fields = _BLOCK_HEADERS[self.version].unpack(header)
        raw_len, packed_len, crc = fields[:3]
        if len(fields) > 3 and zlib.crc32(header[: BLOCK_HEADER_V1.size]) != fields[3]:
            raise RecordingError(f"damaged block at byte {offset}: header checksum mismatch")
        if raw_len > MAX_BLOCK_BYTES or packed_len > max_packed_len(raw_len):
            lengths = f"raw {raw_len}, packed {packed_len}"
            raise RecordingError(f"damaged block at byte {offset}: impossible lengths ({lengths})")
        return raw_len, packed_len, crc



def _inflate(packed: bytes, raw_len: int) -> tuple[bytes, bool] | None:
    # Inflate `packed` to never more than raw_len + 1 bytes (enough to see it is too long): the output
    # and whether the zlib stream ended at the end of `packed`; None for bad data or an early end
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(packed, raw_len + 1)
    except zlib.error:
        return None
    return None if inflater.unused_data else (raw, inflater.eof)


def _is_torn(packed: bytes, raw_len: int) -> bool:
    # The bytes a write cut short by the end of the file leaves: the start of a block's zlib stream
    inflated = _inflate(packed, raw_len)
    return inflated is not None and not inflated[1] and len(inflated[0]) <= raw_len


def _unpack_block(packed: bytes, raw_len: int, crc: int, offset: int) -> bytes:
    inflated = _inflate(packed, raw_len)
    if inflated is None or not inflated[1] or len(inflated[0]) != raw_len or zlib.crc32(inflated[0]) != crc:
        raise RecordingError(f"damaged block at byte {offset}: its data does not inflate to its length and checksum")
    return inflated[0]

def _records_of(raw: bytes, offset: int) -> Iterator[Record]:
    position = 0
    end = len(raw)
    while position < end:
        if end - position < RECORD_HEADER.size:
            raise RecordingError(f"damaged block at byte {offset}: record header cut short")
        recv_ns, kind, length = RECORD_HEADER.unpack_from(raw, position)
        position += RECORD_HEADER.size
        if kind not in _KINDS or end - position < length:
            raise RecordingError(f"damaged block at byte {offset}: bad record (kind {kind}, length {length})")
        yield Record(recv_ns, kind, raw[position : position + length])
        position += length
