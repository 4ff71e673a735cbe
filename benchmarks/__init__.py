"""Benchmarks: ``python -m benchmarks`` (``python3 dev.py bench``) prints the tables."""
