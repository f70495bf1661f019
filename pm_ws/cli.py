"""The ``pm-ws`` command line: ``watch``, ``record``, ``replay``, ``demo``, ``peek``, ``publish``, ``export``, ``plot``.

Exit codes: ``pm_ws._exit.ExitCode``, listed by ``pm-ws --help``. The commands live in ``_live``
(watch, record), ``_demo``, ``_replay``, ``_peek``, ``_publish`` (publish, watch --nats), ``_export`` and
``_plot``, each imported only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import __version__
from ._exit import CliError, ExitCode, exit_codes_help
from ._row_output import EXPORT_HELP, OUTPUT_HELP
from ._time_points import TIME_POINT_HELP, TimePoint, parse_time_point
from ._watch_view import terminal_text
from .client import DEFAULT_URL
from .gamma import DEFAULT_CLOB_URL, DEFAULT_GAMMA_URL, DEFAULT_LOOKUP_TIMEOUT

RECORDING_FORMAT_HELP = """\
recording format (pm_ws.recording, version 2, little-endian):
  file   = b"PMWSREC\\x02" block*
  block  = raw_len:u32 packed_len:u32 crc32:u32 header_crc32:u32 zlib(records)[packed_len]
           header_crc32 = crc32 of the 12 bytes before it; raw_len <= 64 MiB
  record = recv_ns:i64 kind:u8 length:u32 payload[length]
           kind 0 = text frame (UTF-8), 1 = binary frame, 2 = meta (JSON object)
Blocks are written at least every second and on exit; a crash or a full disk loses
at most the last block, which readers skip as torn. Damage anywhere else is exit 4,
naming the block's byte offset. Version 1 files (no header_crc32) still replay.

parts (--rotate-mb, --rotate-minutes): OUT.0001, OUT.0002 ... (sorted by name up to
9999), each a complete recording that starts with the start meta ("part": n) and a
subscribe of every token subscribed then, so it replays alone (its books arrive with
the next snapshot). `pm-ws replay OUT` reads the parts in order as one recording; a
missing part or a torn end before the last part marks every token STALE there.

progress (stderr; every 0.5 s on a terminal, every 5 s otherwise): connections up,
reconnects, token states, frames; "!! NO FRAMES for N s - connection lost: ..." while a
connection is down (record keeps reconnecting), and at the end how long the feed was down.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pm-ws`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the program name.

    Returns
    -------
    int
        The exit code (an ``ExitCode``; listed by ``pm-ws --help``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): argparse already printed why
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        with _library_logs(verbose=args.verbose):
            return int(args.run(args))
    except CliError as exc:
        print(f"pm-ws: error: {terminal_text(str(exc))}", file=sys.stderr)  # it may quote a server's answer
        return exc.exit_code
    except KeyboardInterrupt:
        print("pm-ws: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `pm-ws replay FILE | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return ExitCode.OK


@contextmanager
def _library_logs(*, verbose: bool) -> Iterator[None]:
    # The table already shows what the client's warnings say; keep them off the screen unless asked
    logger = logging.getLogger("pm_ws")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    handler: logging.Handler = logging.NullHandler()
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_TerminalFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


class _TerminalFormatter(logging.Formatter):
    """Log lines for a terminal: what a server sent (quoted in messages and exceptions) cannot control it."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return terminal_text(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        # a traceback keeps its lines; each one is cleaned on its own
        return "\n".join(terminal_text(line) for line in super().formatException(ei).splitlines())


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="pm-ws",
        description="Watch, record and replay Polymarket CLOB order books from the market WebSocket channel.",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pm-ws {__version__}")
    _add_verbose(parser, default=False)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True, parser_class=_CommandParser)

    watch = _command(commands, "watch", "live top-of-book table of tokens", _run_watch)
    _add_token_selection(watch)
    _add_connection_options(watch)
    _add_share_option(watch)
    _add_display_options(watch)
    _add_pipe_options(watch)
    _add_nats_options(watch, "show the rows a `pm-ws publish` publishes on this NATS server instead (no tokens)")

    record = _command(commands, "record", "write every raw frame with its receive time to a file", _run_record)
    record.add_argument(
        "out", metavar="OUT", type=_out_path,
        help="recording file to create (format: see below); with --rotate-* the base name of its parts",
    )  # fmt: skip
    _add_token_selection(record)
    _add_connection_options(record)
    record.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (with --rotate-*: OUT and its parts)"
    )
    record.add_argument(
        "--rotate-mb", type=_positive_float, default=None, metavar="MB",
        help="write numbered parts OUT.0001, OUT.0002 ... of about MB megabytes each (cut at the next block), "
        "each a complete recording; `pm-ws replay OUT` reads them as one",
    )  # fmt: skip
    record.add_argument(
        "--rotate-minutes", type=_positive_float, default=None, metavar="MINUTES",
        help="start the next numbered part after this many minutes (with --rotate-mb: whichever comes first)",
    )  # fmt: skip
    record.epilog = RECORDING_FORMAT_HELP

    replay = _command(commands, "replay", "push a recording through the dispatcher", _run_replay)
    replay.add_argument(
        "file", metavar="FILE", help="a recording made by `pm-ws record`, or the OUT of its parts OUT.0001 ..."
    )
    mode = replay.add_mutually_exclusive_group()
    mode.add_argument(
        "--realtime", action="store_true", help="replay at the recorded pace with the live table (default: flat out)"
    )
    mode.add_argument(
        "--check", action="store_true", help="replay through the compiled core and the pure twin and compare them"
    )
    # --speed and --impl default to None so that replay can refuse them where they would be ignored
    replay.add_argument(
        "--speed", type=_positive_float, default=None, help="pace multiplier for --realtime (default 1)"
    )
    replay.add_argument(
        "--impl", choices=("auto", "c", "py"), default=None,
        help="core to replay through, not with --check (which uses both): auto (the default, as "
        "`import pm_ws` chooses), c (compiled) or py (pure twin)",
    )  # fmt: skip
    _add_display_options(replay)
    _add_pipe_options(replay)
    replay.add_argument(
        "--from", dest="start", type=_time_point, default=None, metavar="TIME",
        help=f"show the recording from TIME on: {TIME_POINT_HELP}; the frames before it are applied unseen, so "
        "the books are right from the first line",
    )  # fmt: skip
    replay.add_argument(
        "--to", dest="end", type=_time_point, default=None, metavar="TIME",
        help="stop after the last frame at or before TIME (same forms as --from)",
    )  # fmt: skip

    demo = _command(commands, "demo", "the embedded fake market server plus watch, no internet needed", _run_demo)
    demo.add_argument("--markets", type=_positive_int, default=3, help="binary markets to simulate (default 3)")
    demo.add_argument("--seed", type=int, default=None, help="random seed (default: a new market every run)")
    demo.add_argument("--rate", type=_positive_float, default=20.0, help="book changes per second (default 20)")
    demo.add_argument(
        "--fault-every", type=_positive_float, default=8.0, metavar="SECONDS",
        help="time between the injected events, which cycle through: malformed frames plus a burst of price "
        "changes, a clean close of every connection, a tick-size change, an abrupt TCP disconnect with a 1 s "
        "outage (default 8)",
    )  # fmt: skip
    demo.add_argument(
        "--duration", type=_positive_float, default=None, metavar="SECONDS",
        help="stop after this many seconds and exit 0 (default: until Ctrl-C)",
    )  # fmt: skip
    _add_share_option(demo)
    demo.add_argument(
        "--record", metavar="OUT", default=None,
        help="also record every frame the client receives to OUT, as `pm-ws record` does (for `replay`, "
        "`export` and `plot`)",
    )  # fmt: skip
    demo.add_argument("--overwrite", action="store_true", help="with --record: replace OUT if it exists")
    demo.add_argument(
        "--all", action="store_true",
        help="the whole fake exchange through Gamma and CLOB REST on loopback: markets open and resolve every "
        "--fault-every seconds (instead of the faults), followed as `watch --all` does",
    )  # fmt: skip
    _add_display_options(demo)
    _add_pipe_options(demo)

    peek = _command(commands, "peek", "show the table another pm-ws process publishes with --share NAME", _run_peek)
    peek.add_argument("name", metavar="NAME", type=_table_name, help="the shared table's name")
    peek.add_argument(
        "--duration", type=_positive_float, default=None, metavar="SECONDS",
        help="stop after this many seconds and exit 0 (default: until Ctrl-C)",
    )  # fmt: skip
    _add_display_options(peek)

    publish = _command(
        commands, "publish", "publish the books on a NATS JetStream stream (`watch --nats` shows them)", _run_publish
    )
    _add_token_selection(publish)
    _add_connection_options(publish)
    _add_nats_options(publish, "NATS server to publish to (required)", required=True)

    export = _command(
        commands, "export", "write a recording's top-of-book history (or L2 changes) as a table", _run_export
    )
    export.add_argument("file", metavar="FILE", help="a recording made by `pm-ws record`")
    export.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write (replaced if it exists)")
    export.add_argument(
        "--to", dest="format", choices=("csv", "parquet"), default=None,
        help="csv or parquet (needs pyarrow: pip install 'pm_ws[parquet]'); default: from OUT's suffix, else csv",
    )  # fmt: skip
    export.add_argument(
        "--levels", action="store_true",
        help="write the order-book level changes (time_ns, token, side, price, size; size 0: the level is gone) "
        "instead of the top of book",
    )  # fmt: skip
    export.epilog = EXPORT_HELP

    plot = _command(commands, "plot", "draw a recording: mid, spread and best sizes of a token over time", _run_plot)
    plot.add_argument("file", metavar="FILE", help="a recording made by `pm-ws record`")
    plot.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="picture to write: .png or .svg (needs matplotlib: "
        "pip install 'pm_ws[plot]')",
    )  # fmt: skip
    plot.add_argument(
        "--token", default=None, metavar="TOKEN_ID",
        help="the token to draw (its id or the start of it; default: the first token of the recording)",
    )  # fmt: skip
    return parser


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: options and positionals in any order (``record --url U OUT TOKEN...``).

    argparse alone gives every positional its strings in one go, so ``nargs="*"`` TOKEN_IDs after an
    option would be "unrecognized": parse intermixed instead (options first, then the positionals).
    """

    _intermixing = False  # parse_known_intermixed_args calls parse_known_args itself (Python < 3.13)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _command(
    commands: argparse._SubParsersAction[_CommandParser], name: str, summary: str, run: Any
) -> argparse.ArgumentParser:
    command = commands.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    command.set_defaults(run=run)
    # not False: the command's default would overwrite the True of `pm-ws -v COMMAND`
    _add_verbose(command, default=argparse.SUPPRESS)
    return command


def _add_verbose(parser: argparse.ArgumentParser, default: Any) -> None:
    # -v is accepted before and after the command
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log the client's connection decisions to stderr"
    )


def _add_token_selection(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "tokens", metavar="TOKEN_ID", nargs="*", default=[], help="CLOB token ids (asset ids) to subscribe"
    )
    command.add_argument(
        "--market", action="append", default=[], metavar="CONDITION_ID",
        help="add every token of this market (condition id, resolved through the Gamma API); repeatable",
    )  # fmt: skip
    command.add_argument(
        "--slug", action="append", default=[], metavar="SLUG",
        help="add every token of this market or event slug (resolved through the Gamma API); repeatable",
    )  # fmt: skip
    command.add_argument(
        "--gamma-url", default=DEFAULT_GAMMA_URL, metavar="URL",
        help=f"Gamma REST API base URL (default {DEFAULT_GAMMA_URL})",
    )  # fmt: skip
    command.add_argument(
        "--gamma-timeout", type=_positive_float, default=DEFAULT_LOOKUP_TIMEOUT, metavar="SECONDS",
        help=f"give up (exit 5) when the --market and --slug lookups have not all answered after this long, "
        f"retries included (default {DEFAULT_LOOKUP_TIMEOUT:g})",
    )  # fmt: skip
    everything = command.add_argument_group("the whole exchange (instead of TOKEN_IDs, --market and --slug)")
    everything.add_argument(
        "--all", action="store_true",
        help="every active order-book market (listed through Gamma), following new and resolved markets",
    )  # fmt: skip
    everything.add_argument(
        "--tag", type=_positive_int, default=None, metavar="TAG_ID", help="with --all: Gamma tag id"
    )
    everything.add_argument(
        "--min-volume", type=_positive_float, default=None, metavar="USDC", help="with --all: minimum volume"
    )
    everything.add_argument(
        "--min-liquidity", type=_positive_float, default=None, metavar="USDC", help="with --all: minimum liquidity"
    )
    everything.add_argument(
        "--clob-url", default=DEFAULT_CLOB_URL, metavar="URL",
        help=f"with --all: CLOB REST base URL for books the WebSocket never sends (default {DEFAULT_CLOB_URL})",
    )  # fmt: skip


def _add_connection_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--url", type=_ws_url, default=DEFAULT_URL, metavar="WS_URL",
        help=f"market WebSocket endpoint, ws:// or wss:// (default {DEFAULT_URL})",
    )  # fmt: skip
    command.add_argument(
        "--duration", type=_positive_float, default=None, metavar="SECONDS", help="stop after this many seconds"
    )
    command.add_argument(
        "--book-timeout", type=_positive_float, default=20.0, metavar="SECONDS",
        help="fail (exit 3) if no token has received an order book after this long (default 20)",
    )  # fmt: skip


def _add_share_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--share", type=_table_name, default=None, metavar="NAME",
        help="publish the table in shared memory as NAME (/dev/shm/NAME, this user only): read it from other "
        "processes with `pm-ws peek NAME` or pm_ws.TopReader(NAME)",
    )  # fmt: skip


def _add_nats_options(command: argparse.ArgumentParser, summary: str, *, required: bool = False) -> None:
    command.add_argument(
        "--nats", metavar="NATS_URL", required=required, default=None,
        help=f"{summary}: nats:// or tls://, comma-separated for a cluster; credentials in the URL "
        "(user:password@, token@) or from PM_WS_NATS_USER/_PASSWORD/_TOKEN/_CREDS/_NKEY_SEED, never printed",
    )  # fmt: skip
    command.add_argument("--stream", default="PMWS", metavar="NAME", help="JetStream stream name (default PMWS)")


def _add_display_options(command: argparse.ArgumentParser) -> None:
    from ._watch_view import HEADERS, parse_columns

    command.add_argument(
        "--refresh", type=_positive_float, default=None, metavar="SECONDS",
        help="table refresh period (default 0.25 on a terminal, 1 otherwise)",
    )  # fmt: skip
    command.add_argument(
        "--plain", action="store_true",
        help="print table snapshots instead of redrawing (automatic when not a TTY); redrawn in colour "
        "unless NO_COLOR is set",
    )  # fmt: skip
    command.add_argument(
        "--columns", type=parse_columns, default=None, metavar="LIST",
        help=f"comma-separated columns to show, from {','.join(HEADERS)} (default: all); TOKEN, BID, ASK and "
        "STATE are always shown, and on a narrow terminal the others go first",
    )  # fmt: skip
    command.add_argument(
        "--depth", type=_positive_int, default=None, metavar="N",
        help="show the best N price levels per side of each token (exact) instead of the top-of-book table",
    )  # fmt: skip


def _add_pipe_options(command: argparse.ArgumentParser) -> None:
    output = command.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="instead of the table, one JSON object per row change and event (below)"
    )
    output.add_argument("--csv", action="store_true", help="instead of the table, one CSV line per row change")
    command.epilog = "\n".join(filter(None, (command.epilog, OUTPUT_HELP)))


def _time_point(text: str) -> TimePoint:
    try:
        return parse_time_point(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, was {text!r}")
    return value


def _ws_url(text: str) -> str:
    # Checked here so that a typo is a usage error in one line, not a traceback or a retry loop
    from ._client_options import market_url

    try:
        market_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid WebSocket URL: {exc}") from None
    return text


def _out_path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the recording file name is empty")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory: name a file to create")
    return text


def _table_name(text: str) -> str:
    from .shared import check_name

    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, was {text!r}")
    return value


# -- commands ---------------------------------------------------------------------------------------
# Each command's module is imported when it runs: --help and replay load neither websockets nor the fake server


def _run_watch(args: argparse.Namespace) -> int:
    if args.nats is not None:
        if args.json or args.csv:
            raise CliError("--json and --csv do not apply to --nats", ExitCode.USAGE)
        from ._publish import watch_bus

        return _run_live(watch_bus(args))
    from ._live import watch

    return _run_live(watch(args))


def _run_record(args: argparse.Namespace) -> int:
    from ._record import record

    return _run_live(record(args))


def _run_publish(args: argparse.Namespace) -> int:
    from ._publish import publish

    return _run_live(publish(args))


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import demo

    return _run_live(demo(args))


def _run_peek(args: argparse.Namespace) -> int:
    from ._peek import peek

    return _until_interrupted(lambda: peek(args))


def _run_live(coroutine: Any) -> int:
    return _until_interrupted(lambda: asyncio.run(coroutine))


def _until_interrupted(run: Callable[[], int]) -> int:
    # Ctrl-C (or SIGTERM) is how watch, record, demo and peek are meant to stop: cleanup runs, exit 0
    with _sigterm_as_interrupt():
        try:
            return int(run())
        except KeyboardInterrupt:
            return ExitCode.OK


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal handlers are main-thread only
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_replay(args: argparse.Namespace) -> int:
    from ._replay import replay

    return replay(args)


def _run_export(args: argparse.Namespace) -> int:
    from ._export import export

    return export(args)


def _run_plot(args: argparse.Namespace) -> int:
    from ._plot import plot

    return plot(args)

__all__ = ["main", "build_parser", "CliError"]
