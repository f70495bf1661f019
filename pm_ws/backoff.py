"""Reconnect delays: exponential, jittered, capped (pure Python)."""

from __future__ import annotations

import math
import random

JITTER_MODES = ("full", "equal")


class ExponentialBackoff:
    """Delays between reconnect attempts that grow exponentially, with jitter and a cap.

    Attempt ``k`` (0-based, counted since the last :meth:`reset`) has the base delay
    ``min(max_seconds, min_seconds * factor**k)``; jitter then spreads it so that many clients
    cut off at once do not reconnect in lockstep:

    - ``"full"``: uniform in ``[0, base]``;
    - ``"equal"``: ``base / 2`` plus uniform in ``[0, base / 2]``.

    A delay is never below 0 nor above ``max_seconds``. The owner calls :meth:`reset` only once
    a new connection has proved healthy (for the market client: a snapshot arrived), so a server
    that accepts and immediately closes keeps the delays growing instead of causing a hot loop.

    Parameters
    ----------
    min_seconds : float
        Base delay of the first attempt, > 0.
    max_seconds : float
        Cap on every delay, >= ``min_seconds``.
    factor : float
        Growth per attempt, >= 1.
    jitter : {"full", "equal"}
        How the base delay is randomised.
    rng : random.Random, optional
        Source of randomness; pass a seeded one in tests.

    Raises
    ------
    ValueError
        If a parameter is out of range.
    """

    def __init__(
        self,
        min_seconds: float = 0.25,
        max_seconds: float = 30.0,
        *,
        factor: float = 2.0,
        jitter: str = "full",
        rng: random.Random | None = None,
    ) -> None:
        if not min_seconds > 0:
            raise ValueError(f"min_seconds must be > 0, was {min_seconds!r}")
        if not max_seconds >= min_seconds:
            raise ValueError(f"max_seconds must be >= min_seconds ({min_seconds!r}), was {max_seconds!r}")
        if not factor >= 1:
            raise ValueError(f"factor must be >= 1, was {factor!r}")
        if jitter not in JITTER_MODES:
            raise ValueError(f"jitter must be one of {JITTER_MODES}, was {jitter!r}")
        self.min_seconds = float(min_seconds)
        self.max_seconds = float(max_seconds)
        self.factor = float(factor)
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self.attempts = 0  # delays handed out since the last reset

    def base_delay(self) -> float:
        """Return the un-jittered delay of the next attempt (the upper bound of :meth:`next_delay`)."""
        # Compare exponents first: factor**attempts overflows a float after ~1000 attempts at factor 2
        growth = math.log(self.max_seconds / self.min_seconds)
        if self.factor == 1.0 or self.attempts * math.log(self.factor) < growth:
            return min(self.max_seconds, self.min_seconds * self.factor**self.attempts)
        return self.max_seconds

    def next_delay(self) -> float:
        """Return the delay before the next attempt, in seconds, and count the attempt."""
        base = self.base_delay()
        self.attempts += 1
        if self.jitter == "full":
            delay = self._rng.uniform(0.0, base)
        else:
            delay = base / 2 + self._rng.uniform(0.0, base / 2)
        return min(max(delay, 0.0), self.max_seconds)

    def copy(self) -> ExponentialBackoff:
        """Return a fresh backoff with these settings (no attempts) and its own random stream drawn from
        this one's, so connections sharing one configuration still do not reconnect in lockstep."""
        rng = random.Random(self._rng.getrandbits(64))
        return ExponentialBackoff(self.min_seconds, self.max_seconds, factor=self.factor, jitter=self.jitter, rng=rng)

    def reset(self) -> None:
        """Start again from ``min_seconds`` (call once the new connection proved healthy)."""
        self.attempts = 0

    def __repr__(self) -> str:
        return (
            f"ExponentialBackoff(min_seconds={self.min_seconds}, max_seconds={self.max_seconds}, "
            f"factor={self.factor}, jitter={self.jitter!r}, attempts={self.attempts})"
        )
