"""``pm-ws plot``: a picture of one token in a recording: mid, spread and best sizes over time.

The row changes come from a replay (``Replayer.write_changes``, as ``pm-ws export`` takes them); the
periods the row was STALE or INVALID are shaded and the recorded client's lost connections marked.
Drawn with matplotlib (the ``plot`` extra) on its Agg canvas, so no display is needed; floats are
used for the picture only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exit import CliError, ExitCode
from ._replay import Replayer, core_module, load_recording
from ._time_points import iso_time
from ._watch_view import short_token
from .row import PRICE_SCALE, SIZE_SCALE, State, Top

PLOT_INSTALL = "pip install 'pm_ws[plot]'"
PICTURE_FORMATS = (".png", ".svg")
SHADED = {State.STALE: "tab:orange", State.INVALID: "tab:red"}  # the states a trader must not trade on


@dataclass
class TokenHistory:
    """One token's row changes in a replay and the times its connection was lost (a ``RowOutput``)."""

    token: str
    changes: list[tuple[int, Top]] = field(default_factory=list)  # (time_ns, row after the change)
    lost: list[tuple[int, str]] = field(default_factory=list)  # (time_ns, reason) of each STALE mark
    broken: bool = False

    def rows(self, changed: Iterable[tuple[str, Top]], now_ns: int) -> None:
        self.changes.extend((now_ns, top) for token, top in changed if token == self.token)

    def event(self, record: dict[str, Any]) -> None:
        meta = record.get("meta") or {}
        if meta.get("type") == "stale" and self.token in meta.get("tokens", []):
            self.lost.append((record["time_ns"], str(meta.get("reason", ""))))

    def periods(self, end_ns: int) -> list[tuple[int, int, State]]:
        """``(start_ns, end_ns, state)`` of each stretch in one state, up to ``end_ns``."""
        stretches: list[tuple[int, int, State]] = []
        for index, (start, top) in enumerate(self.changes):
            stop = self.changes[index + 1][0] if index + 1 < len(self.changes) else end_ns
            if stretches and stretches[-1][2] == top.state:
                stretches[-1] = (stretches[-1][0], stop, top.state)
            else:
                stretches.append((start, stop, top.state))
        return stretches


def plot(args: argparse.Namespace) -> int:
    """Run ``pm-ws plot`` (see ``pm-ws plot --help``)."""
    if Path(args.output).suffix.lower() not in PICTURE_FORMATS:
        raise CliError(f"OUT must end in {' or '.join(PICTURE_FORMATS)}, was {args.output!r}", ExitCode.USAGE)
    _require_matplotlib()  # before the recording is read
    recording = load_recording(args.file)
    history = TokenHistory(_choose_token(recording.tokens, args.token))
    Replayer(core_module("auto"), recording.tokens).write_changes(recording, history)
    figure = history_figure(history, recording.first_ns, recording.last_ns, title=f"{args.file}")
    try:
        figure.savefig(args.output)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}", ExitCode.BAD_FILE) from None
    print(f"drew {len(history.changes):,} row changes of {history.token} to {args.output}", file=sys.stderr)
    return ExitCode.OK


def _choose_token(tokens: list[str], wanted: str | None) -> str:
    if not tokens:
        raise CliError("the recording subscribes no token", ExitCode.BAD_FILE)
    if wanted is None:
        return tokens[0]
    found = [token for token in tokens if token.startswith(wanted)]
    if wanted in tokens or len(found) == 1:
        return wanted if wanted in tokens else found[0]
    which = "matches several tokens" if found else "is not a token of the recording"
    choices = ", ".join(short_token(token) for token in (found or tokens)[:10])
    raise CliError(f"--token {wanted} {which} ({choices})", ExitCode.USAGE)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError(f"pm-ws plot needs matplotlib: {PLOT_INSTALL}", ExitCode.USAGE) from None


def history_figure(history: TokenHistory, first_ns: int, last_ns: int, title: str) -> Any:
    """Draw ``history`` into a new matplotlib Figure (on the Agg canvas) and return it.

    Three panels share the time axis (seconds from ``first_ns``): bid, ask and mid; the spread; the
    sizes at the best bid and ask. STALE and INVALID stretches are shaded in each, and every lost
    connection is a dashed line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 7), layout="constrained")
    FigureCanvasAgg(figure)
    prices, spread, sizes = figure.subplots(3, 1, sharex=True, height_ratios=(3, 1, 2))
    seconds = [(time_ns - first_ns) / 1e9 for time_ns, _ in history.changes]
    tops = [top for _, top in history.changes]
    nan = float("nan")  # an empty side: a gap in the lines
    bid = [top.bid_px / PRICE_SCALE if top.bid_levels else nan for top in tops]
    ask = [top.ask_px / PRICE_SCALE if top.ask_levels else nan for top in tops]
    steps = {"drawstyle": "steps-post"}
    prices.plot(seconds, bid, color="tab:green", lw=0.8, label="bid", **steps)
    prices.plot(seconds, ask, color="tab:red", lw=0.8, label="ask", **steps)
    prices.plot(seconds, [(b + a) / 2 for b, a in zip(bid, ask, strict=True)], color="black", lw=1.4, label="mid",
                **steps)  # fmt: skip
    spread.plot(seconds, [a - b for b, a in zip(bid, ask, strict=True)], color="tab:purple", lw=1.0, **steps)
    sizes.plot(seconds, [top.bid_sz / SIZE_SCALE if top.bid_levels else nan for top in tops],
               color="tab:green", lw=0.8, label="best bid size", **steps)  # fmt: skip
    sizes.plot(seconds, [top.ask_sz / SIZE_SCALE if top.ask_levels else nan for top in tops],
               color="tab:red", lw=0.8, label="best ask size", **steps)  # fmt: skip
    labelled: set[State] = set()
    for start, stop, state in history.periods(last_ns):
        if state in SHADED:
            for axes in (prices, spread, sizes):
                label = state.name if axes is prices and state not in labelled else None
                axes.axvspan((start - first_ns) / 1e9, (stop - first_ns) / 1e9, color=SHADED[state], alpha=0.25,
                             lw=0, label=label)  # fmt: skip
            labelled.add(state)
    for index, (time_ns, _) in enumerate(history.lost):
        for axes in (prices, spread, sizes):
            label = "connection lost" if axes is prices and index == 0 else None
            axes.axvline((time_ns - first_ns) / 1e9, color="tab:blue", ls="--", lw=1.0, label=label)
    prices.set_ylabel("price")
    spread.set_ylabel("spread")
    sizes.set_ylabel("size")
    sizes.set_xlabel(f"seconds from {iso_time(first_ns)}")
    prices.legend(loc="upper left", fontsize="small", ncols=3)
    sizes.legend(loc="upper left", fontsize="small")
    figure.suptitle(f"{title}: token {short_token(history.token)}")
    return figure
