"""Benchmarks of the service (python -m bench; see docs/BENCHMARKS.md)."""
