"""B2 at a tiny size (5 deliveries), so the webhook benchmark keeps running as the API changes."""

from __future__ import annotations

from bench import b2_webhooks as b2


async def test_b2_runs_end_to_end() -> None:
    result = await b2.measure([5], duration_s=1, max_requests=5, progress=False)
    (row,) = result.rates
    assert row.sent == 5 and row.accepted == 5 and row.errors == 0
    assert row.exactly_once and row.redeliveries_ok == 5
    assert row.p50_ms > 0 and "| offered/s |" in result.table()
