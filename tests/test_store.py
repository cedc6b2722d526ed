"""The definition and key store on SQLite and on PostgreSQL, through the migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from core import definitions as store
from core.api_keys import Role, create_key, revoke_key, verify_key
from core.db import create_engine, migrate, session_factory
from core.errors import Conflict, NotFound
from core.models import DefinitionVersion
from workflows.definition import DefinitionInvalid

DOC = {"name": "shop", "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with session_factory(engine)() as session:
        yield session


def _with_value(value: int) -> dict[str, object]:
    return {**DOC, "steps": [{"id": "a", "type": "transform", "with": {"value": value}}]}


async def test_versions_are_immutable_and_publish_is_explicit(session: AsyncSession) -> None:
    first = await store.save_definition(session, document=DOC)
    assert (first.version.version, first.created, first.definition.active_version) == (1, True, 1)
    same = await store.save_definition(session, document={"steps": DOC["steps"], "name": "shop"})  # key order
    assert (same.version.version, same.created) == (1, False)
    second = await store.save_definition(session, document=_with_value(2))
    assert (second.version.version, second.definition.active_version) == (2, 1)
    assert (await store.runnable_version(session, name="shop")).version == 1
    await store.publish_version(session, name="shop", version=2)
    assert (await store.runnable_version(session, name="shop")).version == 2
    assert (await store.get_version(session, name="shop", version=1)).document == DOC
    assert [v.version for v in await store.list_versions(session, name="shop")] == [1, 2]


async def test_rejected_document_writes_nothing(session: AsyncSession) -> None:
    with pytest.raises(DefinitionInvalid):
        await store.save_definition(
            session, document={"name": "shop", "steps": [{"id": "a", "type": "bogus"}]}
        )
    assert await store.list_definitions(session, include_archived=True) == []
    assert (await session.exec(select(DefinitionVersion))).all() == []


async def test_concurrent_saves_get_distinct_versions(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)

    async def save(value: int) -> int:
        async with sessions() as session:
            return (await store.save_definition(session, document=_with_value(value))).version.version

    await save(0)
    versions = await asyncio.gather(*(save(v) for v in range(1, 4)))
    assert sorted(versions) == [2, 3, 4]


async def test_archive_and_restore(session: AsyncSession) -> None:
    await store.save_definition(session, document=DOC)
    await store.archive_definition(session, name="shop")
    with pytest.raises(Conflict):
        await store.runnable_version(session, name="shop")
    assert await store.list_definitions(session) == []
    restored = await store.save_definition(session, document=_with_value(5))
    assert restored.definition.archived is False
    with pytest.raises(NotFound):
        await store.get_definition(session, name="nobody")


async def test_api_keys_hash_verify_revoke(session: AsyncSession) -> None:
    row, key = await create_key(session, name="ci", role=Role.operator)
    assert key.startswith(f"cvk_{row.id}_") and key.split("_", 2)[2] not in row.secret_hash
    principal = await verify_key(session, key=key)
    assert principal is not None and principal.role is Role.operator
    assert await verify_key(session, key=key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await verify_key(session, key="garbage") is None
    await revoke_key(session, key_id=row.id)
    assert await verify_key(session, key=key) is None
