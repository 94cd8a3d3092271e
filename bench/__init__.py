"""Benchmarks: `make bench` (quick) and `make bench-full`."""
