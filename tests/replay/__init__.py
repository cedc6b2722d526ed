"""Committed replay histories and their recorder (``make replay-record``)."""

import os

# The recorder's HTTP target listens on loopback, which the outbound guard refuses unless allow-listed.
os.environ.setdefault("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.0/8,::1,localhost")
