"""Shared test fixtures: the ``impl`` facade over both core implementations, a store and its dispatcher, loaders."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pm_ws._core import NO_EXTENSIONS
from pm_ws._transport import TRANSPORTS

import client_helpers
from builders import NO, YES, book_event, frame

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "polymarket"
OWN_FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=NO_EXTENSIONS,
        help="deselect tests of the compiled core (machines without a compiler)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--no-c-extensions"):
        return
    keep = [item for item in items if "c_extension" not in item.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if "c_extension" in i.keywords])
        items[:] = keep


@dataclass(frozen=True)
class CoreImpl:
    """One core implementation; tests reach the API through ``impl.module``."""

    tag: str  # "c" or "py"

    @property
    def module(self) -> ModuleType:
        return importlib.import_module("pm_ws._core_c" if self.tag == "c" else "pm_ws._core_py")


@pytest.fixture(
    scope="session",
    params=[pytest.param("c", marks=pytest.mark.c_extension), "py"],
    ids=["c", "py"],
)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The core module under test: the compiled one, then the pure twin."""
    return CoreImpl(request.param).module


@pytest.fixture
def store(impl: ModuleType) -> Any:
    """A BookStore of capacity 8 holding YES and NO (both SUBSCRIBING)."""
    store = impl.BookStore(8)
    store.add(YES)
    store.add(NO)
    return store


@pytest.fixture
def dispatcher(impl: ModuleType, store: Any) -> Any:
    """A Dispatcher over ``store`` (no callback, trades not emitted)."""
    return impl.Dispatcher(store)


@pytest.fixture
def live(dispatcher: Any) -> Any:
    """The dispatcher after YES got its snapshot (NO is still SUBSCRIBING)."""
    assert dispatcher.feed(frame(book_event()), 1) == 1
    return dispatcher


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each transport in turn, as the ``transport`` of every client the test builds from ``FAST``.

    A client test module runs over both with ``pytestmark = pytest.mark.usefixtures("transport")``;
    picows is skipped where it is not installed (the plain install).
    """
    if request.param == "picows":
        pytest.importorskip("picows")
    monkeypatch.setitem(client_helpers.FAST, "transport", request.param)
    return str(request.param)


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """The licensed real captures beside the repo; skipped when that folder is absent."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"real Polymarket captures not present at {SHARED_FIXTURES} (they are not redistributed)")
    return SHARED_FIXTURES
