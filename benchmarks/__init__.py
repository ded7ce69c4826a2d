"""descentlab's benchmark suite: `nox -s bench` (full) or `python -m benchmarks.run --smoke`."""
