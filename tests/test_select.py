"""Which core ``import pm_ws`` picks: PM_WS_NO_EXTENSIONS, read like setup.py reads it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _implementation_with(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PM_WS_NO_EXTENSIONS"}
    if value is not None:
        env["PM_WS_NO_EXTENSIONS"] = value
    code = "import pm_ws; print(pm_ws.IMPLEMENTATION)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.c_extension
@pytest.mark.parametrize("value", [None, "", "0"])
def test_select_unset_empty_or_zero_compiled_core(value):
    assert _implementation_with(value) == "cython"


@pytest.mark.parametrize("value", ["1", "yes"])
def test_select_set_pure_twin(value):
    assert _implementation_with(value) == "python"
