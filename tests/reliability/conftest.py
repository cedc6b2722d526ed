"""Fixtures of the reliability suite: the effect receiver on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.effects import REPORTS, Receiver
from tests.support.target import serve


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A fresh idempotency-keyed receiver on a loopback port (the external system the steps call)."""
    server = Receiver()
    async with serve(server.app) as url:
        server.url = url
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The counts of every reliability test, shown even when output is captured (as in CI)."""
    if REPORTS:
        terminalreporter.section("reliability counts")
        for line in REPORTS:
            terminalreporter.write_line(line)
