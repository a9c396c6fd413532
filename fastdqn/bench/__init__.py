"""Benchmark harness: matrix files, the runner, the report."""
