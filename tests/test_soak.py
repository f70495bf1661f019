"""The soak harness (benchmarks/soak.py) in a ~10 s run, so every CI run exercises it, and its checker's teeth.

The 2-minute and 30-minute runs are ``python benchmarks/soak.py --duration 120`` (README, Reliability); the
every-fault run goes over both transports (``--transport picows`` for the long runs).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pm_ws._transport import TRANSPORTS

SOAK_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"

# Deadlines of the fast variant: like tests/client_helpers.py's FAST, so a round of every fault takes ~6 s
FAST: dict[str, Any] = {
    "ping_interval": 0.1,
    "inbound_timeout": 0.5,
    "snapshot_timeout": 0.3,
    "confirm_interval": 0.5,
    "backoff": (0.02, 0.2),
    "fault_gap": (0.05, 0.2),
}


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    """benchmarks/soak.py, imported by path (benchmarks/ is not on sys.path under plain ``pytest``)."""
    spec = importlib.util.spec_from_file_location("pm_ws_soak", SOAK_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_soak_every_fault_kind_for_ten_seconds_no_violation(soak: ModuleType, transport: str) -> None:
    if transport == "picows":
        pytest.importorskip("picows")
    config = soak.SoakConfig(
        duration=7.0, seed=1, tokens=6, rate=300.0, checkpoint_every=3.5, transport=transport, **FAST
    )

    result = await soak.soak(config)

    report = soak.summary(result)
    assert result.violations == [], report
    assert set(result.injected) == set(soak.FAULT_KINDS), report
    assert result.recovered == result.injected, report
    assert result.checkpoints >= 2, report
    assert result.live_rows_checked > 1000, report
    assert result.audit["read"] > 1000, report


@pytest.mark.slow
async def test_soak_client_blind_to_a_short_data_stall_is_reported(soak: ModuleType) -> None:
    # A stall shorter than the client's confirmation deadline loses price changes on an open socket; a
    # client that misses it applies later changes to outdated books. The checker must say so: a LIVE
    # top the server never had, a book unequal to the truth, or a checksum mismatch (a diverged book)
    options = FAST | {"confirm_interval": 30.0}
    config = soak.SoakConfig(
        duration=3.0,
        seed=2,
        tokens=4,
        rate=500.0,
        checkpoint_every=1.5,
        kinds=("data_stall",),
        fault_hold=0.3,
        recovery_timeout=1.0,
        **options,
    )

    result = await soak.soak(config)

    signs = ("LIVE row", "differs from server.truth()", "checksum_mismatch")
    caught = [text for text in result.violations if any(sign in text for sign in signs)]
    assert caught, soak.summary(result)
