"""``custom_code`` against hostile code: every way out of its limits the code once had, shut by the sandbox
(bubblewrap), and the one way out a step may open, ``allow_hosts``, through the worker's proxy and the
outbound guard. Everything here is real: bwrap, the dev server, the store on SQLite, an HTTP server on
loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.code import OPEN_FILES_LIMIT
from activities.egress import MAX_CONNECTIONS
from activities.sandbox import EGRESS_SOCKET, find_sandbox
from core.settings import Settings
from tests.support.connectors import add_connector, migrated_store
from tests.support.outcome import completes, fails
from tests.support.processes import ROOT, pids_with_argument
from tests.support.target import Target
from tests.support.waiting import eventually, until
from worker import conveyor_worker
from workflows.definition import DefinitionInvalid, parse

NO_RETRY = {"max_attempts": 1}
SECRET = "worker-only-secret-7f3a"


def code(step_id: str, source: str, **with_: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "custom_code", "with": {"code": source, **with_}, "retry": NO_RETRY}


def definition(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "hostile", "steps": list(steps)}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.db"


@pytest.fixture
def settings(task_queue: str, store_url: str) -> Settings:
    """The worker's settings: a store on SQLite in this test's folder, and a secret the code must not see."""
    return Settings(task_queue=task_queue, database_url=store_url, secrets={"WORKER_ONLY": SecretStr(SECRET)})


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique argument for processes the test's code starts; any left afterwards are killed."""
    made = f"conveyor-test-{uuid.uuid4().hex}"
    yield made
    for pid in pids_with_argument(made):
        os.kill(pid, signal.SIGKILL)


# -- the escapes of issue 12, each a regression test -----------------------------------------------------


async def test_a_setsid_child_does_not_outlive_the_timeout(
    client: Client, worker: Worker, marker: str
) -> None:
    source = (
        "import os, sys, time\n"
        "def main(marker):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            os.setsid()\n"
        "            sleep = 'import time; time.sleep(120)'\n"
        "            os.execv(sys.executable, [sys.executable, '-c', sleep, marker])\n"
        "    except OSError as exc:\n"
        "        print('no child:', exc)\n"
        "    time.sleep(60)\n"
    )
    failure = await fails(
        client, worker.task_queue, definition(code("fork", source, input=marker, timeout="2s"))
    )
    assert failure.type == "CodeTimeout"

    async def none_left() -> bool:
        return not await asyncio.to_thread(pids_with_argument, marker)

    await until(none_left, "every process the code started is gone", within_s=15)


async def test_no_process_environment_is_readable(client: Client, worker: Worker) -> None:
    """The worker's environment (secrets live there in production) through /proc, smuggled out reversed so
    the masking of outputs cannot recognise it."""
    source = (
        "import os\n"
        "def main(input):\n"
        "    found = {}\n"
        "    for pid in {os.getppid(), 1}:\n"
        "        try:\n"
        "            found[str(pid)] = open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1')[::-1]\n"
        "        except OSError as exc:\n"
        "            found[str(pid)] = type(exc).__name__\n"
        "    return found\n"
    )
    own = (await asyncio.to_thread(Path("/proc/self/environ").read_bytes)).decode("latin-1").split("\0")
    worker_environment = {entry for entry in own if "=" in entry}
    result = await completes(client, worker.task_queue, definition(code("environ", source)))
    seen = {entry for text in result.output.values() for entry in text[::-1].split("\0")}
    assert not seen & worker_environment, "the code read the worker's environment"


async def test_the_store_and_its_connector_tokens_are_out_of_reach(
    client: Client, worker: Worker, store_url: str
) -> None:
    token = f"connector-token-{uuid.uuid4().hex}"
    async with migrated_store(store_url) as sessions:
        await add_connector(
            sessions,
            "crm",
            "http",
            {"base_url": "https://crm.example.com", "auth": {"type": "bearer", "token": token}},
        )
    path = make_url(store_url).database
    assert path and await asyncio.to_thread(Path(path).is_file)
    source = (
        "def main(path):\n"
        "    try:\n"
        "        data = open(path, 'rb').read()\n"
        "    except OSError as exc:\n"
        "        return {'error': type(exc).__name__}\n"
        "    at = data.find(b'\"token\"')\n"
        "    return {'size': len(data), 'near_token': data[at:at + 120].decode('latin-1')[::-1]}\n"
    )
    result = await completes(client, worker.task_queue, definition(code("store", source, input=path)))
    assert token[::-1] not in json.dumps(result.output)
    assert result.output == {"error": "FileNotFoundError"}


async def test_nothing_of_the_worker_machine_is_in_view(
    client: Client, worker: Worker, blob_dir: Path, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"WORKER_ONLY={SECRET}\n")
    paths = [
        str(ROOT / "pyproject.toml"),
        str(ROOT / "core" / "settings.py"),
        str(Path(sys.prefix) / "pyvenv.cfg"),
        str(blob_dir),
        str(secrets_file),
        "/etc/passwd",
    ]
    source = "import os\ndef main(paths):\n    return [p for p in paths if os.path.exists(p)]\n"
    result = await completes(client, worker.task_queue, definition(code("look", source, input=paths)))
    assert result.output == []


async def test_a_raw_socket_to_loopback_is_refused(
    client: Client, worker: Worker, target: Target, temporal_env: WorkflowEnvironment
) -> None:
    """Neither a server on loopback (the target stands for the API) nor Temporal's frontend is reachable."""
    temporal_port = int(temporal_env.client.service_client.config.target_host.rsplit(":", 1)[1])
    ports = [urlsplit(target.url).port, temporal_port]
    source = (
        "import socket\n"
        "def main(ports):\n"
        "    seen = {}\n"
        "    for port in ports:\n"
        "        try:\n"
        "            with socket.create_connection(('127.0.0.1', port), timeout=5):\n"
        "                seen[str(port)] = 'connected'\n"
        "        except OSError as exc:\n"
        "            seen[str(port)] = type(exc).__name__\n"
        "    return seen\n"
    )
    result = await completes(client, worker.task_queue, definition(code("dial", source, input=ports)))
    assert result.output == {str(port): "ConnectionRefusedError" for port in ports}


async def test_the_code_runs_as_an_unprivileged_user(client: Client, worker: Worker) -> None:
    source = (
        "import os\n"
        "def main(input):\n"
        "    status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())\n"
        "    return {'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),\n"
        "            'groups': os.getgroups(), 'caps': int(status['CapEff'], 16)}\n"
    )
    result = await completes(client, worker.task_queue, definition(code("who", source)))
    output = result.output
    assert 0 not in (output["uid"], output["euid"], output["gid"], *output["groups"]), output
    assert output["caps"] == 0, "no capabilities"


async def test_the_worker_machine_sees_an_unprivileged_user_too(
    client: Client, worker: Worker, marker: str
) -> None:
    """Seen from outside, the code's process is not root either (not merely root mapped to another uid)."""
    source = (
        "import os, sys\n"
        "def main(marker):\n"
        "    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', marker])\n"
    )
    handle_failure = asyncio.create_task(
        fails(client, worker.task_queue, definition(code("exec", source, input=marker, timeout="30s")))
    )

    async def running() -> list[int] | None:
        return await asyncio.to_thread(pids_with_argument, marker) or None

    pids = await eventually(running, "the code's process runs")
    status = await asyncio.to_thread(Path(f"/proc/{pids[0]}/status").read_text)
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    handle_failure.cancel()
    assert "0" not in uids, status


async def test_the_worker_cannot_be_signalled(client: Client, worker: Worker) -> None:
    source = (
        "import os, signal\n"
        "def main(pid):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGCONT)\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n"
        "    return 'signalled'\n"
    )
    result = await completes(client, worker.task_queue, definition(code("signal", source, input=os.getpid())))
    assert result.output in ("ProcessLookupError", "PermissionError")


async def test_killing_the_sandbox_kills_every_process_in_it(marker: str) -> None:
    """What the step relies on past its process limit: the sandbox's PID namespace dies whole. Here the
    command may fork (no runner, no limits), and its grandchild leaves the session first."""
    sandbox = await find_sandbox("bwrap")
    source = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        sleep = 'import time; time.sleep(120)'\n"
        "        os.execv(sys.executable, [sys.executable, '-c', sleep, sys.argv[1] + ':orphan'])\n"
        "    os._exit(0)\n"
        "time.sleep(120)\n"
    )
    process = await asyncio.create_subprocess_exec(
        *sandbox.command(["-I", "-S", "-c", source, marker]), env={}, start_new_session=True
    )

    async def orphans() -> list[int] | None:
        return await asyncio.to_thread(pids_with_argument, f"{marker}:orphan") or None

    (orphan,) = await eventually(orphans, "the orphaned grandchild runs")
    status = await asyncio.to_thread(Path(f"/proc/{orphan}/status").read_text)
    assert "PPid:\t" + str(process.pid) not in status, "it left its parent"
    os.killpg(process.pid, signal.SIGKILL)
    await process.wait()

    async def none_left() -> bool:
        return not await asyncio.to_thread(pids_with_argument, marker)

    await until(none_left, "the orphan died with the sandbox", within_s=15)


async def test_the_code_can_verify_https_certificates(client: Client, worker: Worker) -> None:
    source = "import ssl\nresult = ssl.create_default_context().cert_store_stats()['x509_ca']\n"
    result = await completes(client, worker.task_queue, definition(code("certs", source)))
    assert result.output > 0, "the CA certificates are in the sandbox"


# -- the way out a step may open: allow_hosts, through the worker's proxy and the outbound guard ----------

FETCH = (
    "import json, urllib.request, urllib.error\n"
    "def main(url):\n"
    "    try:\n"
    "        with urllib.request.urlopen(url, timeout=10) as response:\n"
    "            return {'status': response.status, 'body': json.load(response)}\n"
    "    except urllib.error.HTTPError as exc:\n"
    "        return {'status': exc.code, 'reason': exc.reason}\n"
    "    except OSError as exc:\n"
    "        return {'error': type(exc).__name__, 'message': str(exc)}\n"
)


async def fetch(
    client: Client, task_queue: str, target: Target, allow_hosts: list[str] | None = None
) -> tuple[dict[str, Any], str]:
    """What ``FETCH`` of the target's echo route answers, and the marker in its query that tells the
    requests of this test apart from others the target saw."""
    mark = uuid.uuid4().hex
    with_ = {} if allow_hosts is None else {"allow_hosts": allow_hosts}
    step = code("get", FETCH, input=f"{target.url}/echo?mark={mark}", **with_)
    result = await completes(client, task_queue, definition(step))
    return result.output, mark


def reached(target: Target, mark: str) -> bool:
    return any(r.get("query", {}).get("mark") == mark for r in target.requests)


async def test_without_allow_hosts_the_code_has_no_network(
    client: Client, worker: Worker, target: Target
) -> None:
    output, mark = await fetch(client, worker.task_queue, target)
    assert output["error"] == "URLError"
    assert "Connection refused" in output["message"]
    assert not reached(target, mark)


async def test_an_allowed_host_is_reached_through_the_proxy(
    client: Client, worker: Worker, target: Target
) -> None:
    authority = urlsplit(target.url).netloc
    output, mark = await fetch(client, worker.task_queue, target, [authority])
    assert output["status"] == 200
    assert output["body"]["query"] == {"mark": mark}
    assert output["body"]["headers"]["host"] == authority
    assert not any(name.startswith("proxy-") for name in output["body"]["headers"])


async def test_a_connect_tunnel_to_an_allowed_host_carries_any_protocol(
    client: Client, worker: Worker, target: Target
) -> None:
    """HTTPS goes through ``CONNECT host:port``; a plain request through the tunnel shows it is opaque."""
    authority = urlsplit(target.url).netloc
    mark = uuid.uuid4().hex
    source = (
        "import os, socket\n"
        "from urllib.parse import urlsplit\n"
        "def main(input):\n"
        "    proxy = urlsplit(os.environ['https_proxy'])\n"
        "    with socket.create_connection((proxy.hostname, proxy.port), timeout=10) as sock:\n"
        "        stream = sock.makefile('rwb')\n"
        "        stream.write(f\"CONNECT {input['authority']} HTTP/1.1\\r\\n\\r\\n\".encode())\n"
        "        stream.flush()\n"
        "        answer = stream.readline().decode().strip()\n"
        "        while stream.readline() not in (b'\\r\\n', b''):\n"
        "            pass\n"
        "        stream.write(f\"GET /echo?mark={input['mark']} HTTP/1.1\\r\\nHost: x\\r\\n\"\n"
        '                     f"Connection: close\\r\\n\\r\\n".encode())\n'
        "        stream.flush()\n"
        "        return {'connect': answer, 'then': stream.readline().decode().strip()}\n"
    )
    result = await completes(
        client,
        worker.task_queue,
        definition(
            code("tunnel", source, input={"authority": authority, "mark": mark}, allow_hosts=[authority])
        ),
    )
    assert result.output == {"connect": "HTTP/1.1 200 Connection established", "then": "HTTP/1.1 200 OK"}
    assert reached(target, mark)


async def test_a_host_the_step_does_not_allow_is_refused_by_the_proxy(
    client: Client, worker: Worker, target: Target
) -> None:
    port = urlsplit(target.url).port
    output, mark = await fetch(client, worker.task_queue, target, ["api.example.com", f"localhost:{port}"])
    assert output["status"] == 403
    assert "not in the step's allow_hosts" in output["reason"]
    assert not reached(target, mark)


async def test_the_outbound_guard_still_applies_to_allowed_hosts(
    client: Client, task_queue: str, target: Target
) -> None:
    """A step cannot allow what the operator did not: without CONVEYOR_OUTBOUND_ALLOW, loopback is refused."""
    guarded = Settings(task_queue=task_queue, outbound_allow=[])
    async with conveyor_worker(client, guarded) as strict:
        output, mark = await fetch(client, strict.task_queue, target, [urlsplit(target.url).netloc])
    assert output["status"] == 403
    assert "loopback" in output["reason"]
    assert not reached(target, mark)


HOARD = (
    "import socket, time\n"
    "def main(path):\n"
    "    held, error = [], None\n"
    "    try:\n"
    "        for _ in range(2000):\n"
    "            held.append(socket.socket(socket.AF_UNIX))\n"
    "            held[-1].connect(path)\n"
    "    except OSError as exc:\n"
    "        error = exc.strerror\n"
    "    time.sleep(1)\n"
    "    return {'opened': len(held), 'error': error}\n"
)


async def test_idle_connections_to_the_proxy_cannot_exhaust_the_worker_files(
    client: Client, worker: Worker
) -> None:
    """Code that opens connections to the proxy and sends nothing: its own limit of open files stops it
    early, and the worker (this process) holds no more than the proxy's limit of them meanwhile."""
    before = peak = len(os.listdir("/proc/self/fd"))

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(os.listdir("/proc/self/fd")))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    step = code("hoard", HOARD, input=EGRESS_SOCKET, allow_hosts=["api.example.com"])
    try:
        result = await completes(client, worker.task_queue, definition(step))
    finally:
        watcher.cancel()
    assert result.output["error"] == "Too many open files"
    assert result.output["opened"] < OPEN_FILES_LIMIT
    # The proxy's connections, and the run's own pipes, socket and scratch folder.
    assert peak - before <= MAX_CONNECTIONS + 16, peak - before


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("https://api.example.com", "a host or host:port"),
        ("api.example.com/v1", "a host or host:port"),
        ("api.example.com:99999", "port"),
        ("user@api.example.com", "a host or host:port"),
        ("", "a host or host:port"),
    ],
)
def test_a_bad_allow_hosts_entry_is_rejected_at_validation(entry: str, message: str) -> None:
    step = {"id": "run", "type": "custom_code", "with": {"code": "result = 1", "allow_hosts": [entry]}}
    with pytest.raises(DefinitionInvalid) as caught:
        parse({"name": "code", "steps": [step]})
    problems = {p.path: p.message for p in caught.value.problems}
    assert "$.steps[0].with.allow_hosts[0]" in problems, problems
    assert message in problems["$.steps[0].with.allow_hosts[0]"]


# -- where no sandbox is available ---------------------------------------------------------------------


@pytest.mark.parametrize("bwrap", ["/nonexistent/bwrap", "false"], ids=["missing", "not-permitted"])
async def test_without_a_sandbox_custom_code_is_refused(client: Client, task_queue: str, bwrap: str) -> None:
    unsandboxed = Settings(task_queue=task_queue, custom_code_bwrap=bwrap)
    async with conveyor_worker(client, unsandboxed) as plain:
        failure = await fails(client, plain.task_queue, definition(code("run", "result = 1")))
    assert failure.type == "CodeSandboxUnavailable"
    assert "CONVEYOR_CUSTOM_CODE_UNSANDBOXED=allow" in failure.error["message"]
    assert failure.step("run")["attempts"] == 1, "not retried"


async def test_an_admin_may_allow_unsandboxed_code(client: Client, task_queue: str) -> None:
    allowed = Settings(
        task_queue=task_queue, custom_code_bwrap="/nonexistent/bwrap", custom_code_unsandboxed="allow"
    )
    async with conveyor_worker(client, allowed) as plain:
        result = await completes(
            client, plain.task_queue, definition(code("run", "def main(n):\n    return n * 2", input=21))
        )
    assert result.output == 42
