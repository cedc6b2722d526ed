"""Reliability under faults: killed workers, a restarted Temporal server, a restarted API."""
