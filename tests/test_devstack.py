"""``python -m core.devstack`` (``make run``) as a user runs it: the real dev server, worker and API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.target import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 45.0  # generous: two cores, and the worker imports the stage processors too
STOP_TIMEOUT_S = 15.0

pytestmark = pytest.mark.skipif(
    not (ROOT / "api" / "app.py").exists(), reason="the API (api/app.py) does not exist yet"
)


class Stack:
    """A running ``python -m core.devstack`` and everything it has printed."""

    def __init__(self, tmp_path: Path) -> None:
        self.api_port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
        env.update(
            CONVEYOR_API_PORT=str(self.api_port),
            CONVEYOR_TEMPORAL_PORT=str(free_port()),
            CONVEYOR_TEMPORAL_UI_PORT=str(free_port()),
            CONVEYOR_DATA_DIR=str(tmp_path),
            CONVEYOR_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/conveyor.db",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "core.devstack"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def expect(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        """The first output line matching ``pattern``, waiting for it up to ``timeout`` seconds."""
        wanted = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    if found := wanted.search(line):
                        return found
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    pytest.fail(f"no line matching {pattern!r} within {timeout:g}s; output:\n{self.output()}")
                self._changed.wait(left)

    def output(self) -> str:
        return "\n".join(self._lines)

    def children(self) -> dict[str, int]:
        """The children's pids as the banner lists them."""
        line = self.expect(r"Processes\s+(.*)").group(1)
        return {name: int(pid) for name, pid in re.findall(r"(\w+) pid (\d+)", line)}

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig`` and wait for the exit code (and the rest of the output)."""
        self.process.send_signal(sig)
        code = self.process.wait(timeout=STOP_TIMEOUT_S)
        self._reader.join(timeout=5)
        return code


def child_pids(parent: int) -> set[int]:
    """Live processes whose parent is ``parent``, from /proc."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        state, ppid = fields[0], int(fields[1])
        if ppid == parent and state != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: dict[str, int], timeout: float = 5.0) -> dict[str, int]:
    """Those of ``pids`` still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := {name: pid for name, pid in pids.items() if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        yield running
    finally:
        # A failed test must not leave a dev server and an API behind for the rest of the session.
        children = child_pids(running.process.pid)
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


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


def test_reports_a_dead_child_and_stops_the_rest(stack: Stack) -> None:
    stack.expect(r"Conveyor is running")
    children = stack.children()
    os.kill(children["worker"], signal.SIGKILL)

    stack.expect(r"worker exited unexpectedly with code -9 \(SIGKILL\)")
    code = stack.process.wait(timeout=STOP_TIMEOUT_S)
    assert code != 0
    assert wait_gone(children) == {}
