"""Points in a recording's time for ``replay --from/--to``: an ISO-8601 UTC time or seconds from its start.

Both become integer nanoseconds on the recording's clock (``time.time_ns``), without floats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_OFFSET = re.compile(r"\+?(\d+)(?:\.(\d{1,9}))?s?")  # "+30", "90s", "1.5", "+0.25s"
_FRACTION = re.compile(r"(?<=\d\d:\d\d:\d\d)[.,](\d{1,9})")  # datetime keeps 6 digits: read them here
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME_POINT_HELP = "an ISO-8601 time (UTC unless it says otherwise) or seconds from the first frame (+30, 90s, 1.5)"


@dataclass(frozen=True)
class TimePoint:
    """A time in a recording: ``ns`` since the epoch, or since the first frame when ``relative``."""

    ns: int
    relative: bool

    def resolve(self, first_ns: int) -> int:
        """The time in ns since the epoch, for a recording whose first frame came at ``first_ns``."""
        return first_ns + self.ns if self.relative else self.ns


def parse_time_point(text: str) -> TimePoint:
    """Parse ``+30``, ``90s``, ``1.5`` (seconds from the start) or ``2026-12-02T00:47:16.5Z``; ValueError if neither.

    Both are exact to the nanosecond.
    """
    offset = _OFFSET.fullmatch(text.strip())
    if offset is not None:
        whole, fraction = offset.groups()
        return TimePoint(int(whole) * 10**9 + int((fraction or "").ljust(9, "0")), relative=True)
    fraction = _FRACTION.search(text)
    try:
        moment = datetime.fromisoformat(_FRACTION.sub("", text.strip()))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (expected {TIME_POINT_HELP})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH  # whole seconds, exact
    nanoseconds = int(fraction.group(1).ljust(9, "0")) if fraction else 0
    return TimePoint((delta.days * 86_400 + delta.seconds) * 10**9 + nanoseconds, relative=False)


def iso_time(ns: int) -> str:
    """``ns`` since the epoch as ISO-8601 UTC, to the nanosecond: ``2026-12-02T00:47:16.5Z``."""
    seconds, fraction = divmod(ns, 10**9)
    digits = f"{fraction:09d}".rstrip("0")
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "") + "Z"
