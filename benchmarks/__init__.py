"""Benchmarks of sparsesweep: `python -m benchmarks` prints the one table (see __main__)."""
