"""Exit codes of ``pm-ws`` and the error that carries one to ``main``.

``ExitCode`` is the one table of codes and their meanings: the commands return and raise its
members, and the ``exit codes:`` section of ``pm-ws --help`` is written from it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """A ``pm-ws`` exit code with its one-line meaning (``ExitCode.NOT_FOUND.meaning``)."""

    meaning: str

    # like http.HTTPStatus: the value is the code, the second item its meaning
    def __new__(cls, code: int, meaning: str) -> ExitCode:
        member = int.__new__(cls, code)
        member._value_ = code
        member.meaning = meaning
        return member

    OK = 0, "success (Ctrl-C or SIGTERM is how watch, record, demo and peek are stopped)"
    FAILURE = 1, "unexpected failure (a bug: the traceback is printed)"
    USAGE = 2, "bad arguments: usage errors, malformed token ids or WebSocket URLs, a --share NAME in use"
    NOT_FOUND = 3, "unknown market (slug, condition id), no book for any token, nothing recorded, peek: no table NAME"
    BAD_FILE = 4, "bad recording (missing, unreadable or damaged) or record's OUT (or its parts) exists"
    UNREACHABLE = 5, "WebSocket or Gamma URL unreachable or answering nonsense, Gamma slower than --gamma-timeout"
    DIVERGENCE = 6, "replay --check: the compiled core and the pure twin disagree"
    DISK_FULL = 7, "record: the disk is full; what was written before is readable"
    INTERRUPTED = 130, "replay interrupted with Ctrl-C"


def exit_codes_help() -> str:
    """The ``exit codes:`` section of ``pm-ws --help``: one line per ``ExitCode``."""
    lines = [f"  {int(code):<4} {code.meaning}" for code in ExitCode]
    return "\n".join(["exit codes:", *lines]) + "\n"


class CliError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code

