"""Recordings: every raw market-channel frame with its receive time, in a compact append-only file.

File format (version 1, all integers little-endian)::

    file    := MAGIC block*
    MAGIC   := b"PMWSREC" 0x01                      8 bytes; the last byte is the format version
    block   := raw_len:u32  packed_len:u32  crc:u32  packed[packed_len]
               packed = zlib (RFC 1950) compression of `raw_len` bytes of records,
               crc = zlib.crc32 of those uncompressed bytes
    record  := recv_ns:i64  kind:u8  length:u32  payload[length]
    kind    := 0 text frame (payload = its UTF-8 bytes)
             | 1 binary frame (payload = the bytes as received)
             | 2 meta (payload = a UTF-8 JSON object, see below)

Every block is compressed on its own and written with one ``write`` call, and a record never spans
two blocks. The writer cuts a block at least every ``flush_interval`` seconds (1 s by default), when
``block_bytes`` of records are pending, and on close, so a crash or a kill loses at most the records
of the last second: a reader skips an incomplete block at the end of the file (``truncated_bytes``
says how many bytes it skipped) and yields every record before it. A complete block with a wrong
checksum is corruption, not a torn tail, and raises :class:`RecordingError`.

Meta records say what the recorder did, so a replay can rebuild the same store:
``{"type": "start", "format": 1, "url": ..., "tool": ...}`` first, then ``{"type": "subscribe",
"tokens": [...]}``, ``{"type": "unsubscribe", "tokens": [...]}`` and ``{"type": "stale", "tokens":
[...]}`` (the connection carrying those tokens was lost) at the receive time they happened.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

from .errors import PmWsError

MAGIC = b"PMWSREC\x01"
FORMAT_VERSION = 1
BLOCK_HEADER = struct.Struct("<III")  # raw_len, packed_len, crc32(raw)
RECORD_HEADER = struct.Struct("<qBI")  # recv_ns, kind, payload length

KIND_TEXT = 0
KIND_BINARY = 1
KIND_META = 2
_KINDS = (KIND_TEXT, KIND_BINARY, KIND_META)

DEFAULT_FLUSH_INTERVAL = 1.0  # seconds of records a crash may lose at most
DEFAULT_BLOCK_BYTES = 256 * 1024  # uncompressed; big enough for zlib to find the repeated token ids


class RecordingError(PmWsError, ValueError):
    """A file is not a pm_ws recording, or a block inside it is damaged."""


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
        Cut and write a block when this many uncompressed bytes are pending.
    level : int
        zlib compression level (1 fast ... 9 small).
    clock : callable
        Monotonic clock in seconds, for tests.
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
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.block_bytes = block_bytes
        self.level = level
        self._clock = clock
        # unbuffered: each block reaches the OS in one write, so a crashed process loses nothing written
        self._file: IO[bytes] | None = open(self.path, "wb" if overwrite else "xb", buffering=0)
        self._file.write(MAGIC)
        self._pending = bytearray()
        self._pending_since = 0.0
        self.frames = 0  # frame records written (meta records not counted)
        self.frame_bytes = 0  # payload bytes of those frames
        self.file_bytes = len(MAGIC)  # bytes on disk so far
        self.blocks = 0

    def write_frame(self, frame: str | bytes | bytearray | memoryview, recv_ns: int) -> None:
        """Add one received frame (``str`` is stored as UTF-8 and read back as ``str``)."""
        if isinstance(frame, str):
            payload = frame.encode("utf-8", "surrogatepass")
            self._append(recv_ns, KIND_TEXT, payload)
        else:
            payload = bytes(frame)
            self._append(recv_ns, KIND_BINARY, payload)
        self.frames += 1
        self.frame_bytes += len(payload)

    def write_meta(self, meta: dict[str, Any], recv_ns: int | None = None) -> None:
        """Add a meta note (a JSON object), stamped now unless ``recv_ns`` is given."""
        payload = json.dumps(meta, separators=(",", ":")).encode()
        self._append(time.time_ns() if recv_ns is None else recv_ns, KIND_META, payload)

    def flush_if_due(self) -> None:
        """Write the pending block if it is older than ``flush_interval`` (call this periodically)."""
        if self._pending and self._clock() - self._pending_since >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Compress the pending records into one block and hand it to the OS."""
        if not self._pending or self._file is None:
            return
        raw = bytes(self._pending)
        packed = zlib.compress(raw, self.level)
        block = BLOCK_HEADER.pack(len(raw), len(packed), zlib.crc32(raw)) + packed
        self._file.write(block)
        self._pending.clear()
        self.file_bytes += len(block)
        self.blocks += 1

    def close(self) -> None:
        """Flush what is pending and close the file (idempotent)."""
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _append(self, recv_ns: int, kind: int, payload: bytes) -> None:
        if self._file is None:
            raise ValueError("write to a closed RecordingWriter")
        if not self._pending:
            self._pending_since = self._clock()
        self._pending += RECORD_HEADER.pack(recv_ns, kind, len(payload))
        self._pending += payload
        if len(self._pending) >= self.block_bytes:
            self.flush()
        else:
            self.flush_if_due()


class RecordingReader:
    """Iterate over the records of a recording, block by block.

    Parameters
    ----------
    path : str or Path
        The recording.

    Raises
    ------
    OSError
        The file cannot be opened.
    RecordingError
        The file does not start with the recording magic (checked on open), or a complete block is
        damaged (raised while iterating).

    Notes
    -----
    Iterate once: the reader streams the file block by block. An incomplete block at the end of the
    file (a recorder that crashed or was killed mid-write) is skipped; after iteration
    ``truncated_bytes`` says how many bytes that was (0 for a clean file).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[bytes] = open(self.path, "rb")
        magic = self._file.read(len(MAGIC))
        if magic != MAGIC:
            self._file.close()
            if magic[:-1] == MAGIC[:-1]:
                raise RecordingError(f"recording format version {magic[-1]} is not supported")
            raise RecordingError(f"not a pm_ws recording (it starts with {magic!r})")
        self.truncated_bytes = 0

    def __iter__(self) -> Iterator[Record]:
        read = self._file.read
        offset = len(MAGIC)
        while True:
            header = read(BLOCK_HEADER.size)
            if len(header) < BLOCK_HEADER.size:
                self.truncated_bytes = len(header)
                return
            raw_len, packed_len, crc = BLOCK_HEADER.unpack(header)
            packed = read(packed_len)
            if len(packed) < packed_len:
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


def _unpack_block(packed: bytes, raw_len: int, crc: int, offset: int) -> bytes:
    try:
        raw = zlib.decompress(packed)
    except zlib.error as exc:
        raise RecordingError(f"damaged block at byte {offset}: {exc}") from None
    if len(raw) != raw_len or zlib.crc32(raw) != crc:
        raise RecordingError(f"damaged block at byte {offset}: length or checksum mismatch")
    return raw


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
