"""Benchmarks (ARCHITECTURE.md section 9): each runs a hand-written Temporal baseline in the same run.

python -m bench.b1_interpreter      # B1 interpreter overhead; results in bench/results and BENCHMARKS.md
"""

import os

from core.sealing import new_key

# The benchmarks' stand-ins for external services listen on loopback, which the outbound guard refuses
# unless allow-listed (as `make run` and the tests do).
os.environ.setdefault("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.0/8,::1,localhost")
# The API and the main worker do not start without a key for secrets at rest: one per benchmark run, for the
# processes it starts too (they inherit the environment).
if not any(name.startswith("CONVEYOR_SECRET_KEYS__") for name in os.environ):
    os.environ["CONVEYOR_SECRET_KEYS__BENCH"] = new_key()
