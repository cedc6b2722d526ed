"""The FastAPI application: ``uvicorn api.app:app``. It owns its clients through ``lifespan``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlmodel.ext.asyncio.session import AsyncSession

from activities._masking import SecretMasker, masked_logs
from api.body_limit import BodyLimit, body_limit
from api.deps import Resources
from api.errors import install_error_handlers
from api.json_guard import JsonGuard
from api.routers import (
    api_keys,
    automations,
    codec,
    connectors,
    definitions,
    entities,
    events,
    executions,
    health,
    hooks,
    lifecycles,
    pipelines,
    stats,
    triggers,
)
from api.routers.codec import CodecCors
from core.api_keys import Role, create_key
from core.db import create_engine, migrate, session_factory
from core.definitions import save_definition
from core.logging import configure_logging
from core.resealing import reseal
from core.sealing import secret_sealer
from core.settings import Settings, get_settings
from core.stats import StuckGauge
from core.telemetry import instrument_api, setup_tracing
from core.temporal import connect
from core.untrusted import InputRefused, parse_yaml
from workflows.definition import DefinitionInvalid

log = logging.getLogger("conveyor.api")

DOCS_ASSETS = "/docs-assets"
"""Where the API serves the Swagger UI and ReDoc files its docs pages load."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured app; tests pass their own settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or get_settings()
        # uvicorn configures only its own loggers; a host that configured logging (a test run) keeps its own.
        configure_logging(config, force=False)
        setup_tracing(config, service="conveyor-api")
        sealer = secret_sealer(config)  # no key for secrets at rest: no start
        engine = create_engine(config.database_url)
        try:
            if config.migrate_on_start:
                await migrate(engine, sealer=sealer)
            sessions = session_factory(engine)
            # Every stored secret must open with these keys before anything is served; older keys' move on.
            log.info("secrets at rest: %s", (await reseal(sessions, sealer)).summary())
            temporal = await connect(config, readable=True)
            resources = Resources(config, engine, sessions, temporal, sealer, StuckGauge(temporal))
            app.state.resources = resources
            await _bootstrap(resources)
            # The API reads the same secrets (and its bootstrap key): whatever it logs shows them masked.
            secrets = [s.get_secret_value() for s in config.secrets.values()]
            if config.bootstrap_admin_key is not None:
                secrets.append(config.bootstrap_admin_key.get_secret_value())
            with masked_logs(SecretMasker(secrets)):
                yield
        finally:
            await engine.dispose()

    # The docs pages load Swagger UI and ReDoc from the package's own copies, not a CDN: /docs works offline.
    app = FastAPIOffline(
        title="Conveyor",
        version="0.1.0",
        description="Versioned, declarative business workflows on Temporal.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        # Swagger UI would otherwise show a badge fetched from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    install_error_handlers(app)
    instrument_api(app)

    # Innermost: the guard reads the body through BodyLimit's counting, so an oversized body is a 413 first.
    app.add_middleware(JsonGuard)
    # Settings are read per request: create_app() without settings defers them to the first use.
    app.add_middleware(BodyLimit, limit=lambda path: body_limit(settings or get_settings(), path))
    app.add_middleware(CodecCors, origin=lambda: (settings or get_settings()).temporal_ui_origin)

    # events before executions: the bare /executions/{execution_id:path} would swallow its suffixed paths.
    for router in (
        health.router,
        stats.router,
        definitions.router,
        events.router,
        executions.router,
        api_keys.router,
        connectors.router,
        triggers.router,
        pipelines.router,
        hooks.router,
        codec.router,
        lifecycles.router,
        entities.router,
        automations.router,
    ):
        app.include_router(router)
    return app


async def _bootstrap(resources: Resources) -> None:
    """Store the bootstrap admin key and load the example definitions, when the settings ask for them."""
    settings = resources.settings
    async with resources.sessions() as session:
        if settings.bootstrap_admin_key is not None:
            await create_key(
                session,
                name="bootstrap admin",
                role=Role.admin,
                key=settings.bootstrap_admin_key.get_secret_value(),
            )
        if settings.examples_dir is not None:
            await load_examples(session, settings.examples_dir)


async def load_examples(session: AsyncSession, folder: Path) -> None:
    """Create and publish every ``*.yaml`` / ``*.json`` definition in ``folder``."""
    for path, text in await asyncio.to_thread(_read_folder, folder):
        try:
            document = parse_yaml(text, what=path.name)
            saved = await save_definition(session, document=document, publish=True)
        except (DefinitionInvalid, InputRefused) as exc:
            log.error("example %s is not a valid definition: %s", path.name, exc)
            continue
        log.info(
            "example %s: %s v%d%s",
            path.name,
            saved.definition.name,
            saved.version.version,
            "" if saved.created else " (unchanged)",
        )


def _read_folder(folder: Path) -> list[tuple[Path, str]]:
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml"), *folder.glob("*.json")])
    return [(path, path.read_text()) for path in paths]


app = create_app()
