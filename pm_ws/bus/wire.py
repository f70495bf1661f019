"""What pm_ws puts on NATS: subjects, the batch envelope, the snapshot record. Imports nothing from nats.

A publisher writes the log of what its client fed and did, the same log a recording keeps (raw frames
with their receive times, plus the client's own store operations), so a consumer runs the same
dispatcher on the same input and holds byte-identical rows and books.

Subjects of a stream ``NAME`` (default ``PMWS``)::

    pm_ws.NAME.data        JetStream stream NAME: batches of records, in publish order
    pm_ws.NAME.heartbeat   core NATS (not stored): the publisher is alive, every heartbeat_interval
    pm_ws.NAME.resnapshot  core NATS: a consumer asks for a snapshot round now (rate-limited)

and the JetStream key-value bucket ``NAME_snapshots``: one key per token, ``{"instance", "stream_seq"}``,
the stream message at or before the one that holds the token's latest snapshot record.

A batch (one NATS message, all integers little-endian)::

    batch   := BATCH_MAGIC:4 instance:u64 first:u64 count:u32 record{count}
    record  := recv_ns:i64 owner:i32 kind:u8 length:u32 payload[length]
    kind    := 0 text frame (UTF-8) | 1 binary frame | 2 store operation (a UTF-8 JSON object)
             | 3 snapshot: token_length:u8 token blob (the token's BookStore.export_token, versioned itself)
             | 4 piece of a record too big for one batch: kind:u8 flags:u8 bytes (flags: 1 first, 2 last)

``instance`` names one run of a publisher (random); ``first`` is the publisher's sequence number of the first
record (each record has the next one, counted from 1 per instance): a consumer that sees a number skipped
knows it missed records. ``owner`` is the client connection a frame came on, the number the client fed it with
(a frame changes only the rows that connection owns); in a snapshot record the token's owner; 0 in other
records. Store operations are the client's own, in order: ``{"op": "hello"}`` (first record of an instance:
start from an empty store), ``{"op": "add", "tokens": [...]}``, ``{"op": "owner", "tokens": [...], "owner":
n}``, ``{"op": "remove", "tokens": [...]}``, ``{"op": "stale", "tokens": [...]}``, ``{"op": "resolve",
"tokens": [...], "won": true | false | null}`` (the market resolved: RESOLVED, OUTCOME), ``{"op": "load_book",
"tokens": [token], "bids": [[price, size], ...], "asks": [...], "tick": n, "exch_ts_ms": n, "recv_ts_ns": n}`` (a
REST book, UNCONFIRMED), ``{"op": "replay", "tokens": [token], "frame": "...", "recv_ts_ns": n}`` (a delta
buffered while the REST book was asked, fed through a dispatcher of its own); ``{"op": "held", "tokens":
[...], "owner": n}`` (a row the client held when the publisher attached: add it, its snapshot record follows)
and ``{"op": "mark"}`` (no-op: a point the publisher had acknowledged by JetStream). A snapshot record gives a
token's row and whole book as they were after every record before it: a consumer in step skips it, one that
lost track rebuilds from it with ``BookStore.restore_token``. Envelope version 2: snapshot records carry the
core's token blob (version 1 carried JSON rows and books); a consumer of another version counts every message
malformed and applies none.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import NamedTuple

from ..recording import KIND_BINARY, KIND_META, KIND_TEXT

__all__ = [
    "BATCH_HEADER",
    "BATCH_MAGIC",
    "KIND_BINARY",
    "KIND_META",
    "KIND_TEXT",
    "RECORD_HEADER",
    "Batch",
    "MalformedBatch",
    "Subjects",
    "KIND_PIECE",
    "KIND_SNAPSHOT",
    "PIECE_FIRST",
    "PIECE_HEADER",
    "PIECE_LAST",
    "decode_snapshot",
    "encode_snapshot",
    "parse_batch",
    "snapshot_key",
    "snapshot_token",
]

BATCH_MAGIC = b"PMB\x02"  # the last byte is the envelope version
BATCH_HEADER = struct.Struct("<4sQQI")  # magic, instance, first sequence number, record count
RECORD_HEADER = struct.Struct("<qiBI")  # recv_ns, owner, kind, payload length
KIND_SNAPSHOT = 3  # after the recording's kinds: a token's whole state, see encode_snapshot
KIND_PIECE = 4  # a piece of a record bigger than a batch: the pieces are consecutive records
PIECE_HEADER = struct.Struct("<BB")  # the whole record's kind, flags
PIECE_FIRST = 1
PIECE_LAST = 2
_KINDS = (KIND_TEXT, KIND_BINARY, KIND_META, KIND_SNAPSHOT, KIND_PIECE)
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # also valid in subjects and key-value bucket names
_PLAIN_KEY = re.compile(r"[0-9A-Za-z_-]+")


class Subjects(NamedTuple):
    """The names one stream uses on NATS."""

    stream: str
    data: str
    heartbeat: str
    resnapshot: str
    bucket: str

    @classmethod
    def of(cls, stream: str) -> Subjects:
        """The names for stream ``stream`` (letters, digits, ``_`` and ``-``)."""
        if not _STREAM_NAME.fullmatch(stream):
            raise ValueError(f"stream name must be 1-64 characters of [A-Za-z0-9_-], was {stream!r}")
        prefix = f"pm_ws.{stream}"
        return cls(stream, f"{prefix}.data", f"{prefix}.heartbeat", f"{prefix}.resnapshot", f"{stream}_snapshots")


class MalformedBatch(ValueError):
    """A message on the data subject that is not a whole pm_ws batch."""


class Batch(NamedTuple):
    """A decoded batch header; ``records()`` walks its records."""

    instance: int
    first: int
    length: int  # records in the batch
    body: memoryview

    def records(self) -> Iterator[tuple[int, int, int, memoryview]]:
        """Yield ``(recv_ns, owner, kind, payload)`` per record (validated by :func:`parse_batch`)."""
        body = self.body
        position = 0
        unpack = RECORD_HEADER.unpack_from
        size = RECORD_HEADER.size
        for _ in range(self.length):
            recv_ns, owner, kind, length = unpack(body, position)
            position += size
            yield recv_ns, owner, kind, body[position : position + length]
            position += length


def parse_batch(data: bytes) -> Batch:
    """Check a message's envelope whole (header, every record's kind and length) before anything applies it.

    Raises
    ------
    MalformedBatch
        Not a pm_ws batch (foreign magic), or a batch cut short or padded.
    """
    if len(data) < BATCH_HEADER.size or data[:4] != BATCH_MAGIC:
        raise MalformedBatch("not a pm_ws batch")
    _, instance, first, count = BATCH_HEADER.unpack_from(data)
    body = memoryview(data)[BATCH_HEADER.size :]
    position, end, size = 0, len(body), RECORD_HEADER.size
    for _ in range(count):
        if end - position < size:
            raise MalformedBatch("record header cut short")
        kind, length = RECORD_HEADER.unpack_from(body, position)[2:]
        position += size + length
        if kind not in _KINDS or position > end:
            raise MalformedBatch(f"bad record (kind {kind}, length {length})")
    if position != end or first < 1:
        raise MalformedBatch("bytes after the last record" if position != end else "sequence number 0")
    return Batch(instance, first, count, body)


def snapshot_key(token: str) -> str:
    """The key-value key of a token (token ids may hold ``.`` and ``:``, which keys may not hold freely)."""
    return token if _PLAIN_KEY.fullmatch(token) else "x" + token.encode().hex()


def encode_snapshot(token: str, blob: bytes) -> bytes:
    """A snapshot record's payload: the token first (consumers in step skip the record without decoding it),
    then its ``BookStore.export_token`` blob."""
    name = token.encode("ascii")
    return bytes((len(name),)) + name + blob


def snapshot_token(payload: memoryview | bytes) -> str:
    """The token a snapshot record is about."""
    return bytes(payload[1 : 1 + payload[0]]).decode("ascii")


def decode_snapshot(payload: memoryview | bytes) -> tuple[str, bytes]:
    """``(token, blob)`` of a snapshot record; ``ValueError`` if it has no token (``restore_token`` checks the blob)."""
    try:
        return snapshot_token(payload), bytes(payload[1 + payload[0] :])
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"damaged snapshot record: {exc!r}") from None
