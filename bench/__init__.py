"""Benchmarks (ARCHITECTURE.md section 9): each runs a hand-written Temporal baseline in the same run.

python -m bench.b1_interpreter      # B1 interpreter overhead; results in bench/results and BENCHMARKS.md
"""

import os

# The benchmarks' stand-ins for external services listen on loopback, which the outbound guard refuses
# unless allow-listed (as `make run` and the tests do).
os.environ.setdefault("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.0/8,::1,localhost")
