"""CI latency gate: speed ratios read from ONE pytest-benchmark run, min-of-N, each against a threshold.

Run from the repo root: ``python -m benchmarks.gate`` runs the gated benchmarks in one pytest
process (``--benchmark-only --benchmark-disable-gc --benchmark-json``); ``python -m benchmarks.gate
--json FILE`` gates an existing run instead (e.g. the full ``pytest benchmarks --benchmark-only``
run the README's tables come from). Each ratio is reference.min / subject.min of two benchmarks
of that run, both over the same corpus or stream in the same process:

  mixed        compiled core [c] vs the seed-style handler [seed], mixed stream, 10+10-level books
  mixed_deep   the same with the deep books of the "mixed_deep" corpus (40+40 levels)
  mixed_deep50 the same with 50+50-level books ("mixed_deep50")
  e2e          MarketClient [client] vs the bare websockets loop [bare], CPU time per stream

Exits 1 when a ratio is below its threshold, when the pytest run fails (exit code 5, nothing
collected, included), when a gated benchmark is missing from the run (the compiled core not
built is a failure, never a skip) or has fewer than ``MIN_ROUNDS`` rounds, or when any benchmark
reports problems (rejected, skipped or mismatched frames: then it did not do the real work).
Absolute times are printed for information only: the machines are shared, ratios are not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import NamedTuple

from benchmarks.e2e import TARGET_SHARE
from benchmarks.feeders import compiled_core_missing

# The design's targets, printed for information (absolute times never gate: the machines are shared)
TARGET_US = {"mixed": 0.20, "price_change": 0.15, "book": 2.0}  # compiled, µs per frame
TARGET_RATIO = 13.0  # seed / compiled on the mixed stream (~2.7 µs vs <= 0.20 µs)
MIN_ROUNDS = 5  # fewer rounds than this and min-of-N means little
DISPATCH = "benchmarks/test_bench_dispatch.py"
E2E = "benchmarks/test_bench_e2e.py::test_e2e_loopback_stream"


class Gate(NamedTuple):
    """One gated ratio: reference.min / subject.min of one benchmark group must reach ``threshold``."""

    group: str  # pytest-benchmark group
    test: str  # pytest node id without the parameter
    subject: str  # parameter id of the benchmark that must be fast
    reference: str  # parameter id of the one it is compared with
    threshold: float
    as_share: bool = False  # print the ratio as a percentage (a share of the reference's speed)
    target: str = ""  # the design's target, printed for information
    also: tuple[str, ...] = ()  # parameter ids run beside them and printed for information

    def show(self, ratio: float) -> str:
        """Render a ratio as this gate prints it: "86%" (a share) or "17.1x"."""
        return f"{ratio:.0%}" if self.as_share else f"{ratio:.1f}x"


# Thresholds hold with margin on the shared 2-core VM (the README lists the ratios of ten consecutive runs);
# orjson.loads alone [loads] runs beside the dispatch gates: a floor that does not depend on the seed
GATES = (
    Gate("mixed", f"{DISPATCH}::test_dispatch_mixed_stream", "c", "seed", 12.0, target=f">= {TARGET_RATIO:g}x",
         also=("loads",)),
    Gate("mixed_deep", f"{DISPATCH}::test_dispatch_mixed_stream_deep_books", "c", "seed", 11.0, also=("loads",)),
    Gate("mixed_deep50", f"{DISPATCH}::test_dispatch_mixed_stream_deep50_books", "c", "seed", 11.0, target=">= 15x",
         also=("loads",)),
    Gate("e2e", E2E, "client", "bare", 0.90, as_share=True, target=f">= {TARGET_SHARE:.0%}"),
)


def node_ids() -> list[str]:
    """Return the pytest node ids the gate runs."""
    return [f"{gate.test}[{param}]" for gate in GATES for param in (gate.subject, gate.reference, *gate.also)]


def run_benchmarks(json_path: str) -> int:
    """Run the gated benchmarks in one pytest process writing ``json_path``; return pytest's exit code."""
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only",
        "--benchmark-disable-gc", f"--benchmark-json={json_path}", "--benchmark-columns=min,median,rounds",
        *node_ids(),
    ]  # fmt: skip
    return subprocess.run(command, check=False).returncode


def per_frame_us(bench: dict) -> float:
    """Return a benchmark's min in µs per frame (every call handles ``frames_per_call`` frames)."""
    return bench["stats"]["min"] * 1e6 / bench["extra_info"]["frames_per_call"]


def evaluate(run: dict) -> list[str]:
    """Print the gate table for a pytest-benchmark JSON document; return the failures."""
    found = {(bench["group"], bench.get("param")): bench for bench in run["benchmarks"]}
    failures = [
        f"{bench['fullname']} reported problems: {bench['extra_info']['problems']}"
        for bench in run["benchmarks"]
        if bench["extra_info"].get("problems")
    ]
    cpu = run["machine_info"].get("cpu", {})
    print(f"\npm_ws latency gate: {cpu.get('brand_raw', run['machine_info']['processor'])}, "
          f"{cpu.get('count', '?')} cores, Python {run['machine_info']['python_version']}, {run['datetime']}")
    print(f"{'gate':<12}{'subject min':>18}{'reference min':>18}{'rounds':>10}{'ratio':>8}{'gate':>9}"
          f"{'target':>9}  verdict")
    for gate in GATES:
        subject, reference = found.get((gate.group, gate.subject)), found.get((gate.group, gate.reference))
        missing = [param for param, bench in ((gate.subject, subject), (gate.reference, reference)) if bench is None]
        if subject is None or reference is None:
            why = f" ({reason})" if "c" in missing and (reason := compiled_core_missing()) else ""
            failures.append(f"{gate.group}: {', '.join(missing)} not measured in this run{why}")
            print(f"{gate.group:<12}{'not measured: ' + ', '.join(missing):>36}{'':>35}  FAIL")
            continue
        rounds = min(subject["stats"]["rounds"], reference["stats"]["rounds"])
        if rounds < MIN_ROUNDS:
            failures.append(f"{gate.group}: only {rounds} rounds (min-of-N needs >= {MIN_ROUNDS})")
        ratio = reference["stats"]["min"] / subject["stats"]["min"]
        if ratio < gate.threshold:
            failures.append(f"{gate.group}: {gate.subject} runs at {gate.show(ratio)} of {gate.reference}'s speed, "
                            f"below the threshold {gate.show(gate.threshold)}")
        print(f"{gate.group:<12}{f'{gate.subject} {per_frame_us(subject):.3f} µs':>18}"
              f"{f'{gate.reference} {per_frame_us(reference):.3f} µs':>18}{rounds:>10}{gate.show(ratio):>8}"
              f"{'>= ' + gate.show(gate.threshold):>9}{gate.target:>9}  "
              f"{'PASS' if ratio >= gate.threshold and rounds >= MIN_ROUNDS else 'FAIL'}")
        for param in gate.also:
            if (bench := found.get((gate.group, param))) is not None:
                ratio = bench["stats"]["min"] / subject["stats"]["min"]
                print(f"{'':<30}{f'{param} {per_frame_us(bench):.3f} µs':>18}{bench['stats']['rounds']:>10}"
                      f"{gate.show(ratio):>8}  information only")
    timers = sorted({bench["options"]["timer"] for bench in found.values()})
    print(f"µs per frame = min of the rounds / frames per call; timers: {', '.join(timers)}")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="gate this pytest-benchmark JSON instead of running them")
    args = parser.parse_args(argv)

    failures = []
    if args.json:
        json_path = args.json
    else:
        fd, json_path = tempfile.mkstemp(prefix="pm_ws-gate-", suffix=".json")
        os.close(fd)
        if (code := run_benchmarks(json_path)) != 0:
            failures.append(f"the pytest-benchmark run exited {code}")  # 5 (nothing collected) included
    try:
        with open(json_path, encoding="utf-8") as handle:
            run = json.load(handle)
    except (OSError, ValueError) as exc:
        run = None
        failures.append(f"no benchmark results in {json_path}: {exc}")
    finally:
        if not args.json:
            os.unlink(json_path)
    if run is not None:
        failures += evaluate(run)
    for failure in failures:
        print(f"gate: FAIL, {failure}")
    print(f"gate: {'FAIL' if failures else 'PASS'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
