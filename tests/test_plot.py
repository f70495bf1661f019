"""``pm-ws plot``: a PNG or SVG of a recorded session with its STALE stretch shaded and the lost connection marked."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from pm_ws import _core, _replay
from pm_ws._exit import ExitCode
from pm_ws.cli import main

from client_helpers import record_session

pytest.importorskip("matplotlib")
from pm_ws._plot import TokenHistory, history_figure  # noqa: E402 - after the skip


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("plot") / "session.pmws"
    tokens = asyncio.run(record_session(path))
    return path, tokens


def test_the_figure_shades_the_stale_stretch_and_marks_the_lost_connection(session: tuple[Path, list[str]]) -> None:
    path, tokens = session
    recording = _replay.load_recording(str(path))
    history = TokenHistory(tokens[0])
    _replay.Replayer(_core, recording.tokens).write_changes(recording, history)

    figure = history_figure(history, recording.first_ns, recording.last_ns, title="session")

    prices = figure.axes[0]
    shaded = [patch for patch in prices.patches if patch.get_label() == "STALE"]
    assert len(shaded) == 1  # the one lost connection
    corners = shaded[0].get_patch_transform().transform(shaded[0].get_path().vertices)  # data x, axes y
    start, stop = min(corners[:, 0]), max(corners[:, 0])
    assert 0 < start < stop  # a stretch of time, after the start
    marks = [line for line in prices.lines if line.get_label() == "connection lost"]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == pytest.approx(start)
    assert len(figure.axes) == 3 and all(axes.patches for axes in figure.axes)  # shaded in every panel
    assert [line.get_label() for line in prices.lines[:3]] == ["bid", "ask", "mid"]


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml")])
def test_plot_writes_a_picture(
    session: tuple[Path, list[str]], tmp_path: Path, suffix: str, magic: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path, tokens = session
    out = tmp_path / f"chart{suffix}"

    assert main(["plot", str(path), "--token", tokens[1][:12], "-o", str(out)]) == ExitCode.OK

    data = out.read_bytes()
    assert data.startswith(magic) and len(data) > 5_000
    if suffix == ".svg":
        assert b"<svg" in data
    assert tokens[1] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["-o", "chart.pdf"], "must end in .png or .svg"), (["--token", "zzz", "-o", "chart.png"], "is not a token"),
     (["--token", "", "-o", "chart.png"], "matches several tokens")],
)  # fmt: skip
def test_bad_plot_arguments_exit_2_in_one_line(
    session: tuple[Path, list[str]], tmp_path: Path, argv: list[str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = [str(tmp_path / arg) if arg.startswith("chart") else arg for arg in argv]
    assert main(["plot", str(session[0]), *argv]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_plot_without_matplotlib_says_what_to_install(
    session: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: import raises ImportError

    assert main(["plot", str(session[0]), "-o", str(tmp_path / "chart.png")]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'pm_ws[plot]'" in err
