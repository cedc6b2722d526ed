"""The outbound address guard (core/ssrf.py): the check itself, redirects against a real loopback server, and
steps, data fetches and notifications failing when they aim at Conveyor's own network.

DNS is not reachable from CI, so names are resolved by a resolver table injected into the guard (a stub of
the outside world's DNS, and only that); the step tests use the system resolver with address literals.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from core import names
from core.settings import Settings
from core.ssrf import (
    OUTBOUND_BLOCKED,
    GuardedTransport,
    OutboundBlocked,
    OutboundGuard,
    OutboundPolicy,
    Resolver,
    address_class,
    ip_literal,
    refuse_non_web,
    system_resolver,
)
from tests.support.connectors import add_connector, migrated_store
from tests.support.outcome import completes, fails
from tests.support.run import start
from tests.support.target import Target, serve
from tests.support.waiting import eventually
from workflows.messages import ExecutionSnapshot, Transition

PUBLIC = "93.184.215.14"
"""A public address (example.org's, at one time) for names the stub resolver answers."""


def resolver(table: dict[str, list[str]]) -> Resolver:
    """A stand-in for public DNS: names in ``table`` resolve, others fail as an unknown name does."""

    async def resolve(host: str, _port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


NO_DNS = resolver({})
"""For literals: a guard that resolved one would fail the test with an unknown name."""


@pytest.mark.parametrize(
    ("url", "address", "kind"),
    [
        ("http://127.1/", "127.0.0.1", "loopback"),
        ("http://0x7f000001/", "127.0.0.1", "loopback"),
        ("http://2130706433/", "127.0.0.1", "loopback"),
        ("http://0177.0.0.1/", "127.0.0.1", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1", "IPv4-mapped IPv6 (loopback)"),
        ("http://100.64.0.1/", "100.64.0.1", "carrier-grade NAT"),
        ("http://10.1/", "10.0.0.1", "private"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "cloud metadata"),
        ("http://[::1]:8080/", "::1", "loopback"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),
        ("http://192.168.1.10/", "192.168.1.10", "private"),
        ("http://172.31.255.1/", "172.31.255.1", "private"),
        ("http://169.254.10.1/", "169.254.10.1", "link-local"),
        ("http://[fe80::1]/", "fe80::1", "link-local"),
        ("http://[fd12::1]/", "fd12::1", "private"),
        ("http://224.0.0.1/", "224.0.0.1", "multicast"),
        ("http://240.0.0.1/", "240.0.0.1", "reserved"),
        ("https://0x7f.1/", "127.0.0.1", "loopback"),
        ("http://0x/", "0.0.0.0", "unspecified"),
        ("http://127.0.0.1./", "127.0.0.1", "loopback"),
        ("http://4294967295/", "255.255.255.255", "reserved"),
        ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe", "IPv4-embedding IPv6 (cloud metadata)"),
    ],
)
async def test_guard_refuses_private_address_forms(url: str, address: str, kind: str) -> None:
    guard = OutboundGuard(OutboundPolicy(), NO_DNS)
    with pytest.raises(OutboundBlocked) as refused:
        await guard.check(url)
    assert refused.value.address == address
    assert refused.value.address_class == kind
    assert refused.value.non_retryable and refused.value.type == OUTBOUND_BLOCKED
    assert kind in refused.value.message


async def test_guard_passes_a_public_name() -> None:
    guard = OutboundGuard(
        OutboundPolicy(), resolver({"example.org": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    )
    target = await guard.check("https://example.org/")
    assert target.host == "example.org" and str(target.address) == PUBLIC


async def test_guard_passes_example_org_through_real_dns() -> None:
    try:
        await system_resolver("example.org", 443)
    except OSError:
        pytest.skip("no DNS here; test_guard_passes_a_public_name covers the check with a stub resolver")
    target = await OutboundGuard(OutboundPolicy()).check("https://example.org/")
    assert address_class(target.address) is None


async def test_a_name_with_any_private_answer_is_refused() -> None:
    """One private record among public ones (DNS rebinding) is enough to refuse."""
    guard = OutboundGuard(OutboundPolicy(), resolver({"rebind.example": [PUBLIC, "127.0.0.1"]}))
    with pytest.raises(OutboundBlocked) as refused:
        await guard.check("http://rebind.example/")
    assert refused.value.address_class == "loopback" and refused.value.host == "rebind.example"


async def test_allow_list_of_networks_and_names() -> None:
    policy = OutboundPolicy.from_entries(["127.0.0.1/32", "10.0.0.0/8", "internal.example", " "])
    guard = OutboundGuard(
        policy, resolver({"internal.example": ["192.168.7.7"], "other.example": ["192.168.7.7"]})
    )
    assert str((await guard.check("http://127.0.0.1:9/")).address) == "127.0.0.1"
    assert str((await guard.check("http://10.1/")).address) == "10.0.0.1"
    assert str((await guard.check("http://internal.example/")).address) == "192.168.7.7"
    with pytest.raises(OutboundBlocked):
        await guard.check("http://127.0.0.2/")
    with pytest.raises(OutboundBlocked):
        await guard.check("http://other.example/")


def test_allow_list_setting_reads_a_comma_separated_list() -> None:
    settings = Settings(outbound_allow="127.0.0.1, ::1 ,intranet.example")
    assert settings.outbound_allow == ["127.0.0.1", "::1", "intranet.example"]
    policy = OutboundPolicy.from_settings(settings)
    assert "intranet.example" in policy.hosts and "api.openai.com" in policy.hosts


@pytest.mark.parametrize("host", ["example.org", "1.2.3.4.5", "08.0.0.1", "0x1g", "256.1.1.1.1", "::zz"])
def test_names_are_not_taken_for_addresses(host: str) -> None:
    assert ip_literal(host) is None


async def test_non_http_schemes_are_refused() -> None:
    with pytest.raises(ApplicationError, match="http or https") as refused:
        await OutboundGuard(OutboundPolicy(), NO_DNS).check("ftp://example.org/file")
    assert refused.value.type == OUTBOUND_BLOCKED and refused.value.non_retryable


@pytest.fixture
async def partner(target: Target) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose first hop, ``partner.example``, resolves (by the stub) to the loopback target and is
    allow-listed by name; every other loopback destination stays refused."""
    table = {"partner.example": ["127.0.0.1"], "localhost": ["127.0.0.1"]}
    guard = OutboundGuard(OutboundPolicy.from_entries(["partner.example"]), resolver(table))
    async with httpx.AsyncClient(transport=GuardedTransport(guard), follow_redirects=True) as http:
        yield http


def partner_url(target: Target, path: str) -> str:
    return target.url.replace("127.0.0.1", "partner.example") + path


@pytest.mark.parametrize(
    ("hop", "kind"),
    [
        ("http://127.0.0.1:{port}/echo", "loopback"),
        ("http://localhost:{port}/echo", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/echo", "IPv4-mapped IPv6 (loopback)"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ],
)
async def test_redirect_to_a_private_address_is_refused(
    partner: httpx.AsyncClient, target: Target, hop: str, kind: str
) -> None:
    port = target.url.rsplit(":", 1)[1]
    before = len(target.requests)
    with pytest.raises(OutboundBlocked) as refused:
        await partner.get(partner_url(target, "/redirect"), params={"to": hop.format(port=port)})
    assert refused.value.address_class == kind
    seen = target.requests[before:]
    # The first hop reached the real server, under its name; the second never left the guard.
    assert [r["path"] for r in seen] == ["/redirect"]
    assert seen[0]["host"] == f"partner.example:{port}"


async def test_pinned_connection_keeps_the_host_name(partner: httpx.AsyncClient, target: Target) -> None:
    response = await partner.get(
        partner_url(target, "/redirect"), params={"to": partner_url(target, "/echo?via=redirect")}
    )
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["query"] == {"via": "redirect"}
    assert echoed["headers"]["host"] == target.url.replace("http://127.0.0.1", "partner.example")
    assert str(response.url).startswith("http://partner.example:")


# Steps on a real worker: loopback is refused except 127.0.0.1 itself, where the target listens.


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.db"


@pytest.fixture
def settings(task_queue: str, store_url: str) -> Settings:
    return Settings(task_queue=task_queue, database_url=store_url, outbound_allow=["127.0.0.1/32"])


@pytest.fixture
async def sessions(store_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with migrated_store(store_url) as made:
        yield made


def one_step(step: dict[str, Any]) -> dict[str, Any]:
    return {"name": "ssrf", "steps": [{**step, "retry": {"max_attempts": 3, "initial_interval": "1h"}}]}


def assert_blocked(failure: Any, step_id: str, kind: str) -> None:
    assert failure.type == OUTBOUND_BLOCKED, failure
    assert kind in failure.error["message"]
    # Non-retryable: one attempt although the step allows three an hour apart.
    assert failure.step(step_id)["attempts"] == 1


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.1:{port}/echo", None),  # 127.0.0.1 is allow-listed: the guard parses 127.1 as it
        ("http://[::ffff:127.0.0.1]:{port}/echo", "IPv4-mapped IPv6"),
        ("http://0177.0.0.2:{port}/echo", "loopback"),
        ("http://10.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://127.0.0.1:{port}/redirect?to=http://127.0.0.2:{port}/echo", "loopback"),
        ("http://127.0.0.1:{port}/redirect?to=http://100.64.0.1/", "carrier-grade NAT"),
    ],
)
async def test_http_request_step_is_refused(
    client: Client, worker: Worker, target: Target, url: str, kind: str | None
) -> None:
    port = target.url.rsplit(":", 1)[1]
    step = {"id": "call", "type": "http_request", "with": {"url": url.format(port=port)}}
    if kind is None:
        result = await completes(client, worker.task_queue, one_step(step))
        assert result.output["status"] == 200
        return
    assert_blocked(await fails(client, worker.task_queue, one_step(step)), "call", kind)


async def test_data_fetch_from_a_metadata_connector_is_refused(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_connector(sessions, "metadata", "http", {"base_url": "http://169.254.169.254/latest/"})
    step = {"id": "fetch", "type": "data_fetch", "with": {"connector": "metadata", "path": "meta-data/"}}
    assert_blocked(await fails(client, worker.task_queue, one_step(step)), "fetch", "cloud metadata")


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        ({"channel": "webhook", "url": "http://192.168.0.1/hook", "message": "hi"}, "private"),
        ({"channel": "slack", "webhook_url": "http://[::1]/hook", "message": "hi"}, "loopback"),
    ],
)
async def test_notification_to_a_private_address_is_refused(
    client: Client, worker: Worker, config: dict[str, Any], kind: str
) -> None:
    step = {"id": "tell", "type": "notification", "with": config}
    assert_blocked(await fails(client, worker.task_queue, one_step(step)), "tell", kind)


async def test_a_body_that_never_ends_hits_the_overall_deadline(
    client: Client, worker: Worker, target: Target
) -> None:
    """httpx's timeout is per read; a byte every 100 ms would keep it alive for the whole 30 s drip."""
    step = {
        "id": "drip",
        "type": "http_request",
        "with": {"url": f"{target.url}/drip", "timeout": "1s"},
        "retry": {"max_attempts": 1},
    }
    failure = await fails(client, worker.task_queue, {"name": "ssrf", "steps": [step]})
    assert failure.type == "HttpTimeout", failure


def self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A certificate for ``name`` (and its key), so a loopback TLS server can pose as a public host."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    ("certified", "verifies"), [("partner.example", True), ("someone-else.example", False)]
)
async def test_tls_to_a_pinned_address_verifies_the_name(
    tmp_path: Path, certified: str, verifies: bool
) -> None:
    """The guard dials 127.0.0.1, yet the certificate must be valid for ``partner.example``: SNI and the
    hostname check use the name from the URL."""
    import asyncio
    import ssl

    cert, key = await asyncio.to_thread(self_signed, tmp_path, certified)
    async with serve(Target().app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        port = url.rsplit(":", 1)[1]
        trusted = ssl.create_default_context(cafile=str(cert))
        guard = OutboundGuard(
            OutboundPolicy.from_entries(["partner.example"]), resolver({"partner.example": ["127.0.0.1"]})
        )
        transport = GuardedTransport(guard, lambda: httpx.AsyncHTTPTransport(verify=trusted))
        async with httpx.AsyncClient(transport=transport) as http:
            if verifies:
                response = await http.get(f"https://partner.example:{port}/echo")
                assert response.status_code == 200
                assert response.json()["headers"]["host"] == f"partner.example:{port}"
            else:
                with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|hostname"):
                    await http.get(f"https://partner.example:{port}/echo")


async def test_a_refused_address_parks_at_once_instead_of_retrying(client: Client, worker: Worker) -> None:
    """No retry can pass the guard: the failure policy's retries are not spent on it (README, Security)."""
    definition = {
        **one_step({"id": "call", "type": "http_request", "with": {"url": "http://10.1/"}}),
        "failure": {"retries": ["1s", "1s"], "suspend": True},
    }
    handle = await start(client, worker.task_queue, definition)

    async def parked() -> list[str] | None:
        snapshot = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
        if snapshot.state != "SUSPENDED":
            return None
        moves = await handle.query(names.QUERY_HISTORY, result_type=list[Transition])
        return [move.to_state for move in moves]

    states = await eventually(parked, "the execution parks")
    assert "RETRYING" not in states, states
    await handle.cancel()


@pytest.mark.parametrize("url", ["http://a:99999/", "http://a:x/", "http:///p"])
def test_a_url_without_a_usable_host_or_port_is_a_config_error(url: str) -> None:
    """Not a ValueError the activity would retry: the definition must change."""
    with pytest.raises(ApplicationError) as refused:
        refuse_non_web(url)
    assert refused.value.type == "ConfigInvalid" and refused.value.non_retryable
