"""Benchmarks that print measured figures; run them as modules (python -m benchmarks.<name>)."""
