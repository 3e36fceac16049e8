"""Performance and learning benchmarks: each script prints a table and writes JSON.

``python -m benchmarks [--quick]`` runs them all and prints one combined table.
"""
