"""Every route of the app, called with no key and with a viewer, an operator and an admin key, answers as the
role table says: 401 without a key, 403 for too low a role, neither for a role that is enough.

The table is the documentation (README "Roles"): a route missing from it fails
``test_every_route_is_in_the_table``, so a new router cannot ship without deciding who may call it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.routes import Endpoint, endpoints

PUBLIC = "public"
"""No key needed: health, readiness, metrics, the OpenAPI document and its viewers."""
SIGNATURE = "signature"
"""Webhook ingress: the trigger's signature scheme authenticates, an API key means nothing."""
ROLES = ("viewer", "operator", "admin")

ROLE_TABLE: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/health"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/hooks/{trigger_id}"): SIGNATURE,
    ("GET", "/api/v1/stats"): "viewer",
    # Definitions: read and validate as viewer; write, publish, archive as admin.
    ("POST", "/api/v1/definitions"): "admin",
    ("POST", "/api/v1/definitions/validate"): "viewer",
    ("GET", "/api/v1/definitions"): "viewer",
    ("GET", "/api/v1/definitions/{name}"): "viewer",
    ("GET", "/api/v1/definitions/{name}/versions"): "viewer",
    ("GET", "/api/v1/definitions/{name}/versions/{version}"): "viewer",
    ("GET", "/api/v1/definitions/{name}/versions/{a}/diff/{b}"): "viewer",
    ("POST", "/api/v1/definitions/{name}/versions/{version}/publish"): "admin",
    ("GET", "/api/v1/definitions/{name}/graph"): "viewer",
    ("DELETE", "/api/v1/definitions/{name}"): "admin",
    # Executions: read as viewer; start and control as operator.
    ("POST", "/api/v1/definitions/{name}/executions"): "operator",
    ("GET", "/api/v1/executions"): "viewer",
    ("GET", "/api/v1/executions/{execution_id:path}"): "viewer",
    ("GET", "/api/v1/executions/{execution_id:path}/events"): "viewer",
    ("GET", "/api/v1/executions/{execution_id:path}/logs"): "viewer",
    ("GET", "/api/v1/executions/{execution_id:path}/history"): "viewer",
    ("POST", "/api/v1/executions/bulk/{action}"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/cancel"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/terminate"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/retry"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/skip"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/advance"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/suspend"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/resume"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/signals/{name}"): "operator",
    ("POST", "/api/v1/executions/{execution_id:path}/updates/{name}"): "operator",
    # Keys, connectors, triggers: configuration is admin; triggers are operated by operators.
    ("POST", "/api/v1/api-keys"): "admin",
    ("GET", "/api/v1/api-keys"): "admin",
    ("DELETE", "/api/v1/api-keys/{key_id}"): "admin",
    ("POST", "/api/v1/connectors"): "admin",
    ("GET", "/api/v1/connectors"): "viewer",
    ("GET", "/api/v1/connectors/{name}"): "viewer",
    ("PUT", "/api/v1/connectors/{name}"): "admin",
    ("DELETE", "/api/v1/connectors/{name}"): "admin",
    ("POST", "/api/v1/definitions/{name}/triggers"): "admin",
    ("GET", "/api/v1/triggers"): "viewer",
    ("GET", "/api/v1/triggers/{trigger_id}"): "viewer",
    ("PATCH", "/api/v1/triggers/{trigger_id}"): "admin",
    ("DELETE", "/api/v1/triggers/{trigger_id}"): "admin",
    ("POST", "/api/v1/triggers/{trigger_id}/pause"): "operator",
    ("POST", "/api/v1/triggers/{trigger_id}/resume"): "operator",
    ("POST", "/api/v1/triggers/{trigger_id}/run"): "operator",
    ("POST", "/api/v1/triggers/{trigger_id}/backfill"): "operator",
    # Pipelines: items and stage control as operator.
    ("POST", "/api/v1/pipelines/{name}/items"): "operator",
    ("GET", "/api/v1/pipelines/{name}/stages"): "viewer",
    ("GET", "/api/v1/pipelines/{name}/metrics"): "viewer",
    ("POST", "/api/v1/pipelines/{name}/stages/{stage}/pause"): "operator",
    ("POST", "/api/v1/pipelines/{name}/stages/{stage}/resume"): "operator",
    ("POST", "/api/v1/pipelines/{name}/stages/{stage}/retry"): "operator",
    # Codec server: decoding shows data (viewer); encoding feeds Temporal (operator).
    ("POST", "/codec/encode"): "operator",
    ("POST", "/codec/decode"): "viewer",
    # Lifecycles and entities: any key reaches them, then the lifecycle's own permissions decide per
    # transition (workflows/lifecycles.py ROLE_PERMISSIONS); SLA targets need MANAGE_SLA (admin).
    ("GET", "/api/v1/lifecycles"): "viewer",
    ("GET", "/api/v1/lifecycles/{entity_type}"): "viewer",
    ("POST", "/api/v1/lifecycles"): "admin",
    ("POST", "/api/v1/entities/{entity_type}"): "viewer",
    ("GET", "/api/v1/entities/{entity_type}"): "viewer",
    ("GET", "/api/v1/entities/{entity_type}/{entity_id}"): "viewer",
    ("POST", "/api/v1/entities/{entity_type}/{entity_id}/transitions"): "viewer",
    ("GET", "/api/v1/entities/{entity_type}/{entity_id}/history"): "viewer",
    ("GET", "/api/v1/automations"): "viewer",
    ("POST", "/api/v1/automations"): "admin",
    ("POST", "/api/v1/sla-configs"): "admin",
    ("GET", "/api/v1/sla-configs"): "viewer",
}
"""(method, path) -> who may call it: ``public``, ``signature`` or the lowest API key role."""

BODIES: dict[tuple[str, str], Any] = {
    # The permission is checked after the body is read, so the body must be valid to reach the check.
    ("POST", "/api/v1/sla-configs"): {"entity_type": "rbac-probe", "target_minutes": 5},
}
BOOTSTRAP = "cvk_rbac0000_" + "r" * 40


def test_every_route_is_in_the_table() -> None:
    served = {(e.method, e.path) for e in endpoints(create_app())}
    missing = sorted(served - ROLE_TABLE.keys())
    assert not missing, f"routes without a row in ROLE_TABLE (say who may call them): {missing}"
    stale = sorted(ROLE_TABLE.keys() - served)
    assert not stale, f"ROLE_TABLE rows for routes that no longer exist: {stale}"


@pytest.fixture
async def secured(
    temporal_env: WorkflowEnvironment, task_queue: str, worker: Worker, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    """The API with auth on (and a worker, so /ready is ready), and headers for no key and each role."""
    settings = api_settings(
        temporal_env,
        task_queue,
        f"sqlite+aiosqlite:///{tmp_path}/api.db",
        auth="on",
        bootstrap_admin_key=BOOTSTRAP,
    )
    async with running_api(settings) as http:
        callers: dict[str, dict[str, str]] = {"none": {}}
        for role in ROLES:
            made = await http.post(
                "/api/v1/api-keys",
                json={"name": role, "role": role},
                headers={"Authorization": f"Bearer {BOOTSTRAP}"},
            )
            assert made.status_code == 201, made.text
            callers[role] = {"Authorization": f"Bearer {made.json()['key']}"}
        yield http, callers


def expected(rule: str, caller: str) -> str:
    """``401``, ``403`` or ``ok`` (anything but 401/403) for ``caller`` on a route with ``rule``."""
    if rule in (PUBLIC, SIGNATURE):
        return "ok"
    if caller == "none":
        return "401"
    return "ok" if ROLES.index(caller) >= ROLES.index(rule) else "403"


async def call(http: httpx.AsyncClient, endpoint: Endpoint, headers: dict[str, str]) -> httpx.Response:
    body = BODIES.get((endpoint.method, endpoint.path), {})
    if endpoint.method in ("POST", "PUT", "PATCH"):
        return await http.request(endpoint.method, endpoint.url("rbac-probe"), json=body, headers=headers)
    return await http.request(endpoint.method, endpoint.url("rbac-probe"), headers=headers)


async def test_every_route_answers_each_role_as_the_table_says(
    secured: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    http, callers = secured
    wrong: list[str] = []
    checked = 0
    for endpoint in endpoints(create_app()):
        rule = ROLE_TABLE.get((endpoint.method, endpoint.path))
        if rule is None:
            continue  # test_every_route_is_in_the_table reports it
        statuses: dict[str, int] = {}
        for caller, headers in callers.items():
            response = await call(http, endpoint, headers)
            statuses[caller] = response.status_code
            got = str(response.status_code) if response.status_code in (401, 403) else "ok"
            if response.status_code >= 500:
                wrong.append(
                    f"{endpoint.method} {endpoint.path} as {caller}: {response.status_code} "
                    f"{response.text[:100]}"
                )
            elif got != expected(rule, caller):
                wrong.append(
                    f"{endpoint.method} {endpoint.path} as {caller}: {response.status_code}, "
                    f"table says {rule} -> {expected(rule, caller)} ({response.text[:120]})"
                )
            checked += 1
        if rule == SIGNATURE and len(set(statuses.values())) != 1:
            wrong.append(f"{endpoint.method} {endpoint.path}: an API key changed the answer {statuses}")
    assert not wrong, "\n".join(wrong)
    assert checked == len(callers) * len(ROLE_TABLE), "every row was exercised for every caller"


async def test_a_revoked_or_unknown_key_is_401(
    secured: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    http, callers = secured
    admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
    keys = (await http.get("/api/v1/api-keys", headers=admin)).json()
    viewer_id = next(k["id"] for k in keys if k["name"] == "viewer")
    assert (await http.get("/api/v1/definitions", headers=callers["viewer"])).status_code == 200
    assert (await http.delete(f"/api/v1/api-keys/{viewer_id}", headers=admin)).status_code == 200
    revoked = await http.get("/api/v1/definitions", headers=callers["viewer"])
    assert revoked.status_code == 401 and revoked.json()["error_code"] == "UNAUTHENTICATED"
    unknown = await http.get(
        "/api/v1/definitions", headers={"Authorization": "Bearer cvk_nope0000_" + "n" * 40}
    )
    assert unknown.status_code == 401
