"""Turn a pytest-benchmark JSON file of the dispatch benchmarks into a µs-per-frame table.

Run from the repo root::

    pytest benchmarks/test_bench_dispatch.py --benchmark-only --benchmark-disable-gc --benchmark-json=bench.json
    python -m benchmarks.report bench.json

Prints a Markdown table: median (and min) µs per frame for each group and implementation,
the seed/c ratio, and the target for the compiled core (``benchmarks.gate.TARGET_US``; for the
books of only deep levels, the compiled core's min ns per level).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from benchmarks.feeders import IMPLS
from benchmarks.gate import TARGET_RATIO, TARGET_US

GROUPS = (
    "mixed", "price_change", "book", "book_50", "book_100", "last_trade_price", "best_bid_ask", "mixed_deep",
    "mixed_deep50",
)  # fmt: skip
LEVEL_TARGET_NS = 8.0  # deep books: whole frame (fixed cost included) / its levels


def per_frame_us(bench: dict, stat: str) -> float:
    """Return one statistic of a benchmark in µs per frame (each call feeds a whole corpus)."""
    return bench["stats"][stat] * 1e6 / bench["extra_info"]["frames_per_call"]


def table(benchmarks: list[dict]) -> str:
    """Render the Markdown table of ``benchmarks`` (pytest-benchmark's "benchmarks" list)."""
    found = {(b["group"], b["params"]["impl"]): b for b in benchmarks if b.get("params", {}).get("impl") in IMPLS}
    lines = [
        "| group | bytes/frame | " + " | ".join(f"{impl} median (min)" for impl in IMPLS) + " | seed/c | target c |",
        "|---|---:|" + "---:|" * len(IMPLS) + "---:|---|",
    ]
    for group in GROUPS:
        row = {impl: found.get((group, impl)) for impl in IMPLS}
        present = [bench for bench in row.values() if bench is not None]
        if not present:
            continue
        cells = [
            f"{per_frame_us(bench, 'median'):.3f} ({per_frame_us(bench, 'min'):.3f})" if bench else "n/a"
            for bench in row.values()
        ]
        c, seed = row["c"], row["seed"]
        ratio = f"{per_frame_us(seed, 'median') / per_frame_us(c, 'median'):.1f}x" if c and seed else "n/a"
        target = f"<= {TARGET_US[group]:.2f} µs" if group in TARGET_US else ""
        if group == "mixed":
            target += f", >= {TARGET_RATIO:g}x seed"
        size = present[0]["extra_info"].get("mean_frame_bytes", "")
        if group.startswith("book_") and c:  # a book of only deep levels: the per-level figure
            levels = c["extra_info"]["mean_book_levels"]
            target = f"{per_frame_us(c, 'min') * 1000 / levels:.2f} ns a level (min); target <= {LEVEL_TARGET_NS:g}"
        lines.append(f"| {group} | {size} | " + " | ".join(cells) + f" | {ratio} | {target} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file", help="written by pytest --benchmark-json")
    args = parser.parse_args(argv)
    with open(args.json_file, encoding="utf-8") as handle:
        print(table(json.load(handle)["benchmarks"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
