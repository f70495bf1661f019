"""Exact decimal text of integer price and size units (no float anywhere)."""

from __future__ import annotations

import pytest

from pm_ws._decimal_text import price_text, size_text, units_text


@pytest.mark.parametrize(
    ("units", "tick", "text"),
    [(5140, 0, "0.514"), (5000, 0, "0.50"), (10000, 0, "1.00"), (0, 0, "0.00"), (25, 0, "0.0025"),
     (5100, 10, "0.510"), (5100, 100, "0.51"), (5000, 1000, "0.50"), (2900, 100, "0.29"),
     (5825, 25, "0.5825"), (100, 1, "0.0100"), (-100, 100, "-0.01")],
)  # fmt: skip
def test_price_text_units_written_exactly_with_tick_decimals(units: int, tick: int, text: str) -> None:
    assert price_text(units, tick) == text


@pytest.mark.parametrize(
    ("units", "text"),
    [(1304720000, "1304.72"), (219217767, "219.217767"), (100000000, "100.00"), (0, "0.00"), (1, "0.000001"),
     (9_223_372_036_854_775_807, "9223372036854.775807")],
)  # fmt: skip
def test_size_text_units_written_exactly(units: int, text: str) -> None:
    assert size_text(units) == text


def test_units_text_without_min_decimals_drops_the_point() -> None:
    assert units_text(3_000_000, 6) == "3"
    assert units_text(3_500_000, 6) == "3.5"


def test_price_text_every_price_round_trips_through_text() -> None:
    for units in range(0, 10_001):
        whole, _, fraction = price_text(units).partition(".")
        assert int(whole) * 10_000 + int(fraction.ljust(4, "0")) == units
