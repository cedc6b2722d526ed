"""``python -m core.devstack`` (``make run``) as a user runs it: the real dev server, worker and API."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.devstack import MAX_QUICK_CRASHES, MAX_RESTART_DELAY_S, STABLE_S, Restarts
from tests.support.devstack import (
    ROOT,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Stack,
    alive,
    child_pids,
    running_stack,
    wait_gone,
)

pytestmark = pytest.mark.skipif(
    not (ROOT / "api" / "app.py").exists(), reason="the API (api/app.py) does not exist yet"
)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def definition_names(body: Any) -> set[str]:
    items = body["items"] if isinstance(body, dict) else body
    return {item["name"] for item in items}


def test_runs_the_stack_and_stops_cleanly_on_sigint(stack: Stack) -> None:
    stack.expect(r"Conveyor is running")
    children = stack.children()
    assert set(children) == {"temporal", "worker", "api"}
    assert child_pids(stack.process.pid) == set(children.values())
    stack.expect(rf"API\s+http://127\.0\.0\.1:{stack.api_port}$")
    stack.expect(r"API docs\s+http://\S+/docs")
    stack.expect(r"API keys\s+off: every caller is admin; .*CONVEYOR_AUTH=on CONVEYOR_BOOTSTRAP_ADMIN_KEY=")
    stack.expect(r"Temporal Web UI\s+http://localhost:\d+")
    stack.expect(r"temporal workflow list")
    stack.expect(r"made a development key for secrets at rest: \S+/secret-key")  # a fresh machine works

    assert httpx.get(f"{stack.api_url}/health").status_code == 200
    response = httpx.get(f"{stack.api_url}/api/v1/definitions")
    assert response.status_code == 200
    examples = {yaml.safe_load(path.read_text())["name"] for path in (ROOT / "examples").glob("*.yaml")}
    assert definition_names(response.json()) >= examples

    assert stack.stop(signal.SIGINT) == 0, stack.output()
    assert wait_gone(children) == {}
    assert "Traceback" not in stack.output()
    assert "unexpectedly" not in stack.output()


def test_the_banner_says_when_keys_are_on(tmp_path: Path) -> None:
    key = "cvk_devstack1_" + "k" * 32
    with running_stack(tmp_path, auth="on", bootstrap_admin_key=key) as stack:
        stack.expect(r"API keys\s+on: every call needs a key; CONVEYOR_BOOTSTRAP_ADMIN_KEY is an admin key")
        assert httpx.get(f"{stack.api_url}/api/v1/definitions").status_code == 401
        assert stack.stop(signal.SIGTERM) == 0, stack.output()
        assert key not in stack.output()


def test_a_crashed_worker_or_api_is_started_again(stack: Stack) -> None:
    stack.expect(r"Conveyor is running")
    children = stack.children()
    for name in ("worker", "api"):
        os.kill(children[name], signal.SIGKILL)
        stack.expect(rf"{name} exited unexpectedly with code -9 \(SIGKILL\); starting it again in 1s")
        again = int(stack.expect(rf"{name} started again \(pid (\d+)\)").group(1))
        assert again != children[name] and alive(again)
        children[name] = again
    assert alive(children["temporal"]), "the others ran on"

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:  # the new worker polls, the new API answers: ready again
        try:
            if httpx.get(f"{stack.api_url}/ready", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail(f"the stack never became ready again:\n{stack.output()}")
    assert stack.process.poll() is None
    assert stack.stop(signal.SIGINT) == 0, stack.output()
    assert wait_gone(children) == {}


def test_restart_delays_grow_and_a_child_that_keeps_crashing_is_given_up() -> None:
    restarts = Restarts()
    quick = [restarts.delay(uptime_s=1.0) for _ in range(MAX_QUICK_CRASHES)]
    assert quick == [1.0, 2.0, 4.0, 8.0, 16.0] and max(quick) <= MAX_RESTART_DELAY_S
    assert restarts.delay(uptime_s=1.0) is None  # one quick crash too many: broken, not unlucky

    recovered = Restarts()
    assert [recovered.delay(uptime_s=1.0) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert recovered.delay(uptime_s=STABLE_S) == 1.0  # it ran a while: a fresh start


def test_a_worker_that_cannot_start_stops_the_rest(tmp_path: Path) -> None:
    # No such stage module: the worker fails at every start. Whether it dies before the stack is up (then
    # nothing is restarted) or after (then it is given up after its quick crashes), the stack ends.
    policy = Restarts()
    bound = START_TIMEOUT_S + sum(policy.delay(uptime_s=0) or 0 for _ in range(MAX_QUICK_CRASHES))
    with running_stack(tmp_path, stage_modules='["no_such_module"]') as stack:
        stack.expect(r"worker exited unexpectedly with code 1; stopping the others", timeout=bound)
        assert stack.process.wait(timeout=STOP_TIMEOUT_S) != 0
        assert child_pids(stack.process.pid) == set()
