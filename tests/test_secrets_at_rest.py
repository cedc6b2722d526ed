"""Secrets at rest: connector credentials and webhook secrets are sealed in the store (SQLite and PostgreSQL),
masked wherever a step that used them shows up, opened across a key rotation, refused with a wrong or
missing key, and sealed by the migration when a store written in clear is upgraded.

Everything runs through the real API, worker, dev server and stores; the only stand-in is the loopback target
(tests/support/target.py) that echoes the headers a connector sent."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities._masking import SecretMasker
from api.app import create_app
from core import connectors, devstack, triggers
from core.db import alembic_config, create_engine, migrate, session_factory
from core.devstack import dev_key
from core.models import Trigger
from core.sealing import KeyConfigInvalid, SealedValueUnreadable, Sealer, new_key, secret_sealer
from core.settings import Settings, get_settings
from core.signatures import sign_github
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.outcome import history_text
from tests.support.target import Target
from worker import conveyor_worker

TOKEN = "bearer-T0ken-4815162342"
QUERY_KEY = "query-K3y-0987654321"
HEADER_KEY = "header-K3y-1122334455"
SQL_PASSWORD = "Sql-Pa55word-778899"
BASIC_USER = "partner"
BASIC_PASSWORD = "basic-Pa55-665544"
BASIC_PAIR = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
HOOK_SECRET = "hook-Secret-0123456789"
CREDENTIALS = (TOKEN, QUERY_KEY, HEADER_KEY, SQL_PASSWORD, BASIC_PASSWORD, BASIC_PAIR, HOOK_SECRET)
MASK = "***"

HOOKED = {"name": "hooked", "steps": [{"id": "echo", "type": "transform", "with": {"value": "{{ input }}"}}]}
NO_SUSPEND = {"suspend": False, "retries": []}


def keys(**values: str) -> dict[str, SecretStr]:
    return {key_id: SecretStr(value) for key_id, value in values.items()}


@pytest.fixture
def no_key_in_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings without the suite's key for secrets at rest: keys from the environment are merged into
    those a test gives, so tests of the keys themselves take it away."""
    for name in [name for name in os.environ if name.startswith("CONVEYOR_SECRET_KEYS__")]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def http_connectors(target: Target) -> list[dict[str, Any]]:
    """Connectors to the echoing target with each kind of credential an HTTP connector holds."""
    return [
        {
            "name": "bearer-api",
            "type": "http",
            "config": {
                "base_url": f"{target.url}/echo/items?api_key={QUERY_KEY}",
                "auth": {"type": "bearer", "token": TOKEN},
            },
        },
        {
            "name": "basic-api",
            "type": "http",
            "config": {
                "base_url": f"{target.url}/echo/items",
                "auth": {"type": "basic", "username": BASIC_USER, "password": BASIC_PASSWORD},
            },
        },
        {
            "name": "header-api",
            "type": "http",
            "config": {
                "base_url": f"{target.url}/echo",
                "auth": {"type": "api_key", "header": "X-Api-Key", "token": HEADER_KEY},
                "headers": {"Accept": "application/json"},
            },
        },
    ]


SQL_CONNECTOR = {
    "name": "warehouse",
    "type": "sql",
    "config": {"url": f"postgresql+asyncpg://app:{SQL_PASSWORD}@db.internal:5432/shop"},
}


async def raw_rows(database_url: str) -> str:
    """The connectors and triggers tables as raw SQL reads them, every column as the driver hands it back."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            found = [
                (await connection.execute(text(f"SELECT * FROM {table}"))).all()
                for table in ("connectors", "triggers")
            ]
    finally:
        await engine.dispose()
    return repr(found)


async def create(api: httpx.AsyncClient, *connectors_: dict[str, Any]) -> None:
    for body in connectors_:
        created = await api.post("/api/v1/connectors", json=body)
        assert created.status_code == 201, created.text


async def webhook(api: httpx.AsyncClient, **config: object) -> dict[str, str]:
    saved = await api.post("/api/v1/definitions", json=HOOKED, params={"publish": True})
    assert saved.status_code in (200, 201), saved.text
    created = await api.post(
        "/api/v1/definitions/hooked/triggers", json={"type": "webhook", "config": config}
    )
    assert created.status_code == 201, created.text
    hook: dict[str, str] = created.json()
    return hook


async def deliver(api: httpx.AsyncClient, hook: dict[str, str], secret: str) -> httpx.Response:
    body = json.dumps({"order": uuid.uuid4().hex}).encode()
    headers = {
        "content-type": "application/json",
        "X-Hub-Signature-256": sign_github(body, secret),
        "X-GitHub-Delivery": uuid.uuid4().hex,
    }
    return await api.post(hook["url"], content=body, headers=headers)


@pytest.fixture
def settings(task_queue: str, database_url: str) -> Settings:
    """The worker reads connectors from the API's store."""
    return Settings(task_queue=task_queue, database_url=database_url)


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment, task_queue: str, worker: object, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(api_settings(temporal_env, task_queue, database_url)) as http:
        yield http


# -- (a) the store holds no clear credential ---------------------------------------------------------------


async def test_store_rows_hold_no_clear_credential_or_webhook_secret(
    api: httpx.AsyncClient, database_url: str, target: Target
) -> None:
    await create(api, SQL_CONNECTOR, *http_connectors(target))
    given = await webhook(api, scheme="github", secret=HOOK_SECRET)
    generated = await webhook(api, scheme="github")
    assert generated["secret"]

    stored = await raw_rows(database_url)
    assert "warehouse" in stored and given["id"] in stored and generated["id"] in stored
    for secret in (*CREDENTIALS, generated["secret"]):
        assert secret not in stored, f"{secret!r} is stored in clear"
    assert "aes256gcm:" in stored

    # Still usable: the API shows the masked configuration, deliveries verify against the sealed secrets.
    shown = (await api.get("/api/v1/connectors/bearer-api")).json()["config"]
    assert shown["auth"]["type"] == "bearer" and shown["auth"]["token"] == MASK
    assert shown["base_url"] == f"{target.url}/echo/items?api_key={MASK}"
    assert (await deliver(api, given, HOOK_SECRET)).status_code == 202
    assert (await deliver(api, generated, generated["secret"])).status_code == 202
    assert (await deliver(api, given, "not-the-secret-at-all")).status_code == 401


# -- (b) credentials a step used are masked wherever the step shows up -------------------------------------


def fetch(step_id: str, connector: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "data_fetch",
        "with": {"connector": connector, "items": "items"},
        "retry": {"max_attempts": 1},
        **fields,
    }


ECHOES = {
    "name": "echoes-credentials",
    "failure": NO_SUSPEND,
    "steps": [
        fetch("bearer", "bearer-api"),
        fetch("basic", "basic-api"),
        # /echo answers an object, not a list: the step fails quoting the body, echoed headers and all.
        fetch("header", "header-api", on_error="continue"),
    ],
    "output": {"bearer": "{{ steps.bearer.output }}", "basic": "{{ steps.basic.output }}"},
}


async def test_connector_credentials_are_masked_in_the_execution_and_the_worker_logs(
    api: httpx.AsyncClient, client: Client, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the libraries' included, at its most talkative
    await create(api, *http_connectors(target))
    saved = await api.post("/api/v1/definitions", json=ECHOES, params={"publish": True})
    assert saved.status_code in (200, 201), saved.text
    before = len(target.requests)
    started = await api.post(
        f"/api/v1/definitions/{ECHOES['name']}/executions", json={"input": {}, "wait": 30}
    )
    assert started.status_code in (200, 201), started.text
    execution_id = started.json()["execution_id"]

    # The credentials really went out, so masked answers are not an accident.
    sent = [r["headers"] for r in target.requests[before:]]
    assert [h.get("authorization") for h in sent] == [f"Bearer {TOKEN}", f"Basic {BASIC_PAIR}", None]
    assert sent[2]["x-api-key"] == HEADER_KEY

    view = await api.get(f"/api/v1/executions/{execution_id}")
    shown = view.json()
    assert shown["state"] == "COMPLETED", shown
    [bearer] = shown["output"]["bearer"]["items"]
    assert bearer["headers"]["authorization"] == f"Bearer {MASK}" and bearer["query"] == {"api_key": MASK}
    [basic] = shown["output"]["basic"]["items"]
    assert basic["headers"]["authorization"] == f"Basic {MASK}"
    [header] = [step for step in shown["steps"] if step["id"] == "header"]
    assert header["error"]["code"] == "UnexpectedResponse", header
    assert header["error"]["details"]["body"]["headers"]["x-api-key"] == MASK
    logs = await api.get(f"/api/v1/executions/{execution_id}/logs")
    [summary] = [line for line in logs.json() if line["step"] == "bearer"]
    assert summary["metadata"]["url"].endswith(f"/echo/items?api_key={MASK}")

    history = history_text(await client.get_workflow_handle(execution_id).fetch_history())
    logged = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert f"api_key={MASK}" in logged, "the worker logged the request URL, masked"
    for where, text_ in (
        ("the execution", view.text),
        ("its logs", logs.text),
        ("the history", history),
        ("the worker's logs", logged),
    ):
        for secret in (TOKEN, QUERY_KEY, HEADER_KEY, BASIC_PASSWORD, BASIC_PAIR):
            assert secret not in text_, f"{secret!r} shows in {where}"


# -- (c) rotation, (d) wrong and missing keys --------------------------------------------------------------


@asynccontextmanager
async def api_with(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(api_settings(temporal_env, task_queue, database_url, **overrides)) as http:
        yield http


async def key_ids(database_url: str) -> list[str]:
    """The key id of every sealed value in the connectors and triggers tables, in order."""
    stored = await raw_rows(database_url)
    return [part.split(":", 1)[0] for part in stored.split("aes256gcm:")[1:]]


async def start_api(settings: Settings) -> None:
    """Run the API's start (and its stop), as uvicorn does before it serves."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass


READ = {"name": "reads-supplier", "failure": NO_SUSPEND, "steps": [fetch("read", "bearer-api")]}


async def run_read(api: httpx.AsyncClient) -> dict[str, Any]:
    started = await api.post(f"/api/v1/definitions/{READ['name']}/executions", json={"input": {}, "wait": 30})
    assert started.status_code in (200, 201), started.text
    result: dict[str, Any] = started.json()
    return result


async def prepare(api: httpx.AsyncClient, target: Target) -> dict[str, str]:
    """A connector, a definition that reads through it, and a webhook: three sealed values."""
    await create(api, http_connectors(target)[0])
    saved = await api.post("/api/v1/definitions", json=READ, params={"publish": True})
    assert saved.status_code in (200, 201), saved.text
    return await webhook(api, scheme="github", secret=HOOK_SECRET)


@pytest.mark.usefixtures("no_key_in_settings")
async def test_a_new_key_opens_old_rows_and_the_start_reseals_them_under_it(
    temporal_env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    database_url: str,
    target: Target,
    caplog: pytest.LogCaptureFixture,
) -> None:
    k1, k2 = new_key(), new_key()
    old = {"secret_keys": keys(k1=k1)}
    both = {"secret_keys": keys(k1=k1, k2=k2), "secret_key_id": "k2"}
    new = {"secret_keys": keys(k2=k2)}
    worker = {"task_queue": task_queue, "database_url": database_url}

    async with api_with(temporal_env, task_queue, database_url, **old) as api:
        hook = await prepare(api, target)
        assert await key_ids(database_url) == ["k1", "k1"]  # the connector, the webhook secret
        # Step 1 of a rotation: the new key reaches the workers (here already active); what the old key
        # sealed still opens there.
        async with conveyor_worker(client, Settings(**worker, **both)):  # type: ignore[arg-type]
            assert (await run_read(api))["state"] == "COMPLETED"
        assert await key_ids(database_url) == ["k1", "k1"], "reading moves nothing"

    # Step 2: the API starts with the new key active and reseals every stored secret under it.
    caplog.set_level(logging.INFO, logger="conveyor.api")
    async with api_with(temporal_env, task_queue, database_url, **both) as api:
        assert await key_ids(database_url) == ["k2", "k2"]
        assert (await deliver(api, hook, HOOK_SECRET)).status_code == 202
    assert "2 sealed secret(s) (k1: 2); 2 resealed; all under the active key k2 now" in caplog.text

    # Step 3: the old key is gone everywhere, and nothing needed it any more.
    async with (
        api_with(temporal_env, task_queue, database_url, **new) as api,
        conveyor_worker(client, Settings(**worker, **new)),  # type: ignore[arg-type]
    ):
        assert (await run_read(api))["state"] == "COMPLETED"
        assert (await deliver(api, hook, HOOK_SECRET)).status_code == 202
        shown = (await api.get("/api/v1/connectors/bearer-api")).json()
        assert shown["config"]["auth"]["token"] == MASK


@pytest.mark.usefixtures("no_key_in_settings")
async def test_a_wrong_or_missing_key_is_an_error_never_clear_text(
    temporal_env: WorkflowEnvironment, client: Client, task_queue: str, database_url: str, target: Target
) -> None:
    k1 = new_key()
    right = {"secret_keys": keys(k1=k1)}
    async with api_with(temporal_env, task_queue, database_url, **right) as api:
        await prepare(api, target)

    # No key at all: neither the API nor the worker starts, and both say what to set.
    bare = Settings(task_queue=task_queue, database_url=database_url, secret_keys={})
    with pytest.raises(KeyConfigInvalid, match=r"set CONVEYOR_SECRET_KEYS__<ID>"):
        await start_api(bare)
    with pytest.raises(KeyConfigInvalid, match=r"set CONVEYOR_SECRET_KEYS__<ID>"):
        async with conveyor_worker(client, bare):
            pass
    with pytest.raises(KeyConfigInvalid, match=r"CONVEYOR_SECRET_KEYS__K1 is 5 bytes"):
        await start_api(Settings(database_url=database_url, secret_keys=keys(k1="c2hvcnQ=")))

    # Another key under the id, or the id missing: the API does not start, and names the rows at fault.
    with pytest.raises(KeyConfigInvalid) as wrong:
        await start_api(Settings(database_url=database_url, secret_keys=keys(k1=new_key())))
    assert "2 secret(s) in the store do not open" in str(wrong.value)
    assert "connector:bearer-api cannot be decrypted: key 'k1' here is not the key it was sealed with" in str(
        wrong.value
    )
    assert "trigger:" in str(wrong.value)
    with pytest.raises(
        KeyConfigInvalid, match=r"sealed with key 'k1', which CONVEYOR_SECRET_KEYS__\* does not"
    ):
        await start_api(Settings(database_url=database_url, secret_keys=keys(k2=new_key())))

    # A worker with the wrong key fails the step saying why; it never goes on without the credentials.
    async with (
        api_with(temporal_env, task_queue, database_url, **right) as api,
        conveyor_worker(
            client, Settings(task_queue=task_queue, database_url=database_url, secret_keys=keys(k1=new_key()))
        ),
    ):
        before = len(target.requests)
        failed = await run_read(api)
    assert failed["state"] == "FAILED", failed
    assert failed["error"]["code"] == "SecretUnreadable"
    assert "connector:bearer-api cannot be decrypted" in failed["error"]["message"]
    assert len(target.requests) == before, "nothing was sent"

    # A value put back in clear is refused, not read as it stands.
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            clear = json.dumps(http_connectors(target)[0]["config"])
            await connection.execute(text("UPDATE connectors SET sealed_config = :clear"), {"clear": clear})
    finally:
        await engine.dispose()
    with pytest.raises(
        KeyConfigInvalid, match="connector:bearer-api cannot be decrypted: it is not a sealed value"
    ):
        await start_api(Settings(database_url=database_url, **right))  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_key_in_settings")
async def test_a_secret_sealed_later_under_a_key_this_api_lacks_is_a_503(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str
) -> None:
    async with api_with(temporal_env, task_queue, database_url, secret_keys=keys(k1=new_key())) as api:
        hook = await webhook(api, scheme="github", secret=HOOK_SECRET)
        # A replica already on a key this one lacks rotates the secret while this one runs.
        other = secret_sealer(Settings(secret_keys=keys(k9=new_key())))
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                entry = triggers.secret_entry(other, hook["id"], HOOK_SECRET)
                await connection.execute(
                    trigger_table.update().where(trigger_table.c.id == hook["id"]).values(secrets=[entry])
                )
        finally:
            await engine.dispose()
        answer = await deliver(api, hook, HOOK_SECRET)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error_code"] == "SECRET_UNREADABLE"
    assert "sealed with key 'k9'" in answer.json()["message"]
    assert HOOK_SECRET not in answer.text


# -- (e) a store written in clear is sealed by the migration -----------------------------------------------


def table(name: str, /, **columns: Any) -> sa.TableClause:
    """A table of the store as SQL sees it, with only the columns a test writes."""
    return sa.table(name, *(sa.column(column, type_) for column, type_ in columns.items()))


STAMP = sa.DateTime(timezone=True)
connector_table = table(
    "connectors", name=sa.String, type=sa.String, config=sa.JSON, created_at=STAMP, updated_at=STAMP
)
trigger_table = table(
    "triggers",
    id=sa.String,
    definition=sa.String,
    type=sa.String,
    config=sa.JSON,
    secrets=sa.JSON,
    paused=sa.Boolean,
    created_at=STAMP,
    updated_at=STAMP,
)
definition_table = table(
    "definitions",
    name=sa.String,
    latest_version=sa.Integer,
    archived=sa.Boolean,
    created_at=STAMP,
    updated_at=STAMP,
)
CLEAR_CONNECTORS = {
    "warehouse": ("sql", SQL_CONNECTOR["config"]),
    "supplier": (
        "http",
        {
            "base_url": "https://supplier.example/api",
            "auth": {"type": "bearer", "token": TOKEN},
            "headers": {"X-Api-Key": HEADER_KEY},
        },
    ),
}


async def alembic(engine: AsyncEngine, operation: str, revision: str, sealer: Sealer | None = None) -> None:
    def run(connection: sa.Connection) -> None:
        getattr(command, operation)(alembic_config(connection, sealer), revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def store_in_clear(engine: AsyncEngine) -> None:
    """The store as Conveyor left it before secrets were sealed: the tables of then, credentials in clear."""
    await alembic(engine, "upgrade", "0002")
    await alembic(engine, "upgrade", "0003")
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            definition_table.insert().values(
                name="hooked", latest_version=0, archived=False, created_at=now, updated_at=now
            )
        )
        for name, (type_, config) in CLEAR_CONNECTORS.items():
            await connection.execute(
                connector_table.insert().values(
                    name=name, type=type_, config=config, created_at=now, updated_at=now
                )
            )
        entry = {"value": HOOK_SECRET, "created_at": now.isoformat(), "expires_at": None}
        await connection.execute(
            trigger_table.insert().values(
                id="t1",
                definition="hooked",
                type="webhook",
                config={"scheme": "github"},
                secrets=[entry],
                paused=False,
                created_at=now,
                updated_at=now,
            )
        )


async def test_the_migration_seals_a_store_written_in_clear_and_needs_the_key(
    database_url: str, no_key_in_settings: None
) -> None:
    engine = create_engine(database_url)
    try:
        await store_in_clear(engine)
        before = await raw_rows(database_url)
        assert TOKEN in before and HOOK_SECRET in before

        # Without a key the migration stops, saying what to set, and leaves the store as it was.
        with pytest.raises(KeyConfigInvalid, match=r"set CONVEYOR_SECRET_KEYS__<ID>"):
            await migrate(engine)
        assert await raw_rows(database_url) == before

        sealer = secret_sealer(Settings(secret_keys=keys(k1=new_key())))
        await migrate(engine, sealer=sealer)
        after = await raw_rows(database_url)
        for secret in (TOKEN, HEADER_KEY, SQL_PASSWORD, HOOK_SECRET):
            assert secret not in after, f"{secret!r} is still in clear"
        async with session_factory(engine)() as session:
            for name, (type_, config) in CLEAR_CONNECTORS.items():
                row = await connectors.get_connector(session, name=name)
                assert connectors.open_config(sealer, row) == config
                assert row.config == connectors.masked_config(type_, config)
            trigger = await session.get(Trigger, "t1")
            assert trigger is not None
            assert triggers.active_secrets(trigger, sealer) == [HOOK_SECRET]
            assert triggers.masked_secrets(trigger)[0]["hint"] == "…6789"

        # And back: the downgrade opens them again, for a release that reads them in clear.
        await alembic(engine, "downgrade", "0002", sealer)  # leaves 0003 and the other heads
        reverted = await raw_rows(database_url)
        assert TOKEN in reverted and HOOK_SECRET in reverted and "aes256gcm" not in reverted
    finally:
        await engine.dispose()


# -- the pieces --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_key_in_settings")
def test_a_sealed_value_opens_only_with_its_key_and_for_its_row() -> None:
    sealer = secret_sealer(Settings(secret_keys=keys(k1=new_key())))
    token = sealer.seal(TOKEN, context="connector:a")
    assert token.startswith("aes256gcm:k1:") and TOKEN not in token
    assert sealer.open(token, context="connector:a") == TOKEN
    assert sealer.seal(TOKEN, context="connector:a") != token, "a fresh nonce each time"
    with pytest.raises(SealedValueUnreadable, match="connector:b cannot be decrypted"):
        sealer.open(token, context="connector:b")  # copied onto another row
    tampered = token[:-6] + ("AAAA" if token[-6:-2] != "AAAA" else "BBBB") + token[-2:]
    with pytest.raises(SealedValueUnreadable, match="altered"):
        sealer.open(tampered, context="connector:a")


def test_every_form_of_a_connector_credential_is_masked() -> None:
    sql = connectors.parse_config("sql", {"url": "postgresql+asyncpg://app:p%40ss-w0rd@db/shop"})
    assert {"p%40ss-w0rd", "p@ss-w0rd"} <= set(connectors.credentials(sql))
    http = connectors.parse_config(
        "http",
        {
            "base_url": "https://x.example/api?api_key=a%2Bb-key&page=1",
            "auth": {"type": "basic", "username": BASIC_USER, "password": BASIC_PASSWORD},
            "headers": {"X-Session": "sess-123456", "Accept": "application/json"},
        },
    )
    found = set(connectors.credentials(http))
    assert {"a%2Bb-key", "a+b-key", BASIC_PASSWORD, BASIC_PAIR, "sess-123456"} <= found
    assert "application/json" not in found and BASIC_USER not in found and "1" not in found


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://app:ab@db/shop failed", f"postgresql://app:{MASK}@db/shop failed"),
        ("https://:ab@host/x", f"https://:{MASK}@host/x"),
        ("password=ab host=db", f"password={MASK} host=db"),
        ('{"api_token": "ab", "user": "ab"}', f'{{"api_token": "{MASK}", "user": "ab"}}'),
        ("Authorization: Bearer ab", f"Authorization: Bearer {MASK}"),
        ("PGPASSWORD='ab';", f"PGPASSWORD='{MASK}';"),
        # Not as the credential, or not the whole value: left as it is.
        ("table abc, ab tab", "table abc, ab tab"),
        ("password=abc token=xab", "password=abc token=xab"),
        ("https://app@ab.example/", "https://app@ab.example/"),
        # The long secret beside it, everywhere.
        ("long-secret in any text", f"{MASK} in any text"),
    ],
)
def test_a_short_secret_is_masked_where_it_stands_as_a_credential(text: str, masked: str) -> None:
    masker = SecretMasker(["ab"]).with_values(["long-secret"])
    assert masker.text(text) == masked
    assert masker.data({"password": "ab", "name": "ab", "rows": [text]}) == {
        "password": MASK,
        "name": "ab",
        "rows": [masked],
    }


def test_a_stack_starting_while_another_makes_the_key_gets_that_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``make run`` at the same moment on one data folder: the second, reading while the first is still
    making the key, gets a whole key, and both get the same one."""
    path = tmp_path / "secret-key"
    meanwhile: list[str] = []

    def slow_key() -> str:
        if not meanwhile:  # the first stack, mid-way through making its key: the second one starts
            meanwhile.append("")
            with concurrent.futures.ThreadPoolExecutor(1) as other:
                meanwhile[0] = other.submit(dev_key, path).result(timeout=30)
        return new_key()

    monkeypatch.setattr(devstack, "new_key", slow_key)
    first = dev_key(path)
    assert meanwhile[0] == first
    assert len(base64.b64decode(first, validate=True)) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret-key"], "no temporary file left behind"


def test_make_run_keeps_one_development_key(tmp_path: Path) -> None:
    path = tmp_path / "secret-key"
    key = dev_key(path)
    assert len(base64.b64decode(key, validate=True)) == 32
    assert path.stat().st_mode & 0o777 == 0o600, "only its owner reads it"
    assert dev_key(path) == key, "the next `make run` opens what this one sealed"
