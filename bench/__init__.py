"""Benchmarks (ARCHITECTURE.md section 9): each runs a hand-written Temporal baseline in the same run.

python -m bench.b1_interpreter      # B1 interpreter overhead; results in bench/results and BENCHMARKS.md
"""
