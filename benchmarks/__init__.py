"""Latency benchmarks and the CI ratio gate; never collected by a plain ``pytest`` (testpaths = tests)."""
