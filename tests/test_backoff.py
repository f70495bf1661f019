"""ExponentialBackoff: growth, cap, jitter bounds, reset, argument checks."""

from __future__ import annotations

import random

import pytest

from pm_ws.backoff import ExponentialBackoff


def test_backoff_base_delay_doubles_from_min_until_the_cap() -> None:
    backoff = ExponentialBackoff(0.25, 2.0)

    bases = []
    for _ in range(6):
        bases.append(backoff.base_delay())
        backoff.next_delay()

    assert bases == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert backoff.attempts == 6


@pytest.mark.parametrize("jitter", ["full", "equal"])
def test_backoff_next_delay_stays_within_jitter_bounds(jitter: str) -> None:
    backoff = ExponentialBackoff(0.1, 3.0, factor=3.0, jitter=jitter, rng=random.Random(7))

    for _ in range(200):
        base = backoff.base_delay()
        delay = backoff.next_delay()
        low = 0.0 if jitter == "full" else base / 2
        assert low <= delay <= base <= 3.0


def test_backoff_full_jitter_spreads_delays_over_the_whole_range() -> None:
    rng = random.Random(1)
    delays = []
    for _ in range(400):
        backoff = ExponentialBackoff(1.0, 1.0, rng=rng)
        delays.append(backoff.next_delay())

    assert min(delays) < 0.1
    assert max(delays) > 0.9


def test_backoff_equal_jitter_never_goes_below_half_the_base() -> None:
    backoff = ExponentialBackoff(2.0, 2.0, jitter="equal", rng=random.Random(3))

    delays = [backoff.next_delay() for _ in range(300)]

    assert min(delays) >= 1.0
    assert max(delays) <= 2.0


def test_backoff_reset_starts_again_from_min() -> None:
    backoff = ExponentialBackoff(0.5, 10.0, jitter="equal", rng=random.Random(0))
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.attempts == 0
    assert backoff.base_delay() == 0.5
    assert 0.25 <= backoff.next_delay() <= 0.5


def test_backoff_many_attempts_stay_capped_without_overflow() -> None:
    backoff = ExponentialBackoff(0.25, 30.0)
    backoff.attempts = 10**6  # days of a dead server

    assert backoff.base_delay() == 30.0
    assert 0.0 <= backoff.next_delay() <= 30.0


def test_backoff_factor_one_is_constant() -> None:
    backoff = ExponentialBackoff(0.3, 5.0, factor=1.0)
    backoff.attempts = 10**6

    assert backoff.base_delay() == 0.3


def test_backoff_seed_positional_signature_works() -> None:
    backoff = ExponentialBackoff(1, 60)

    assert (backoff.min_seconds, backoff.max_seconds) == (1.0, 60.0)
    assert 0.0 <= backoff.next_delay() <= 1.0


def test_backoff_default_is_quarter_second_to_thirty_seconds_full_jitter() -> None:
    backoff = ExponentialBackoff()

    assert (backoff.min_seconds, backoff.max_seconds) == (0.25, 30.0)
    assert (backoff.factor, backoff.jitter) == (2.0, "full")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_seconds": 0}, "min_seconds must be > 0"),
        ({"min_seconds": 2, "max_seconds": 1}, "max_seconds must be >= min_seconds"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"jitter": "none"}, "jitter must be one of"),
    ],
)
def test_backoff_bad_arguments_raise_value_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExponentialBackoff(**kwargs)  # type: ignore[arg-type]
