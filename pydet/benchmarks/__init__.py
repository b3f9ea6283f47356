"""Benchmarks: the workloads (``cases``), how they are timed (``timing``) and reported (``runner``).

``pydet bench`` runs them from the command line; ``bench/`` runs the same workloads under
pytest-benchmark.
"""
