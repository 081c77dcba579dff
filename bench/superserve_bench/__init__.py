"""Benchmarks and load drivers for SuperServe: traces, an open-loop replayer, plain-Triton baselines, reports."""
