"""Registers Conveyor's search attributes on a Temporal cluster; running it again adds only missing ones.

python -m deploy.search_attributes      # CONVEYOR_TEMPORAL_ADDRESS, CONVEYOR_TEMPORAL_NAMESPACE

The dev server of ``make run`` registers them at start; a real cluster (docker compose, Temporal's Helm chart)
needs this once per namespace before the API starts executions. It waits for the frontend to answer first,
so it can run as a one-shot container or Job beside a cluster that is still starting.
"""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from core import names
from core.settings import get_settings

KINDS = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}
WAIT_S = 120.0


def wanted() -> dict[str, int]:
    """Conveyor's search attributes and their types, as the dev server's start flags name them."""
    flags = names.search_attribute_flags()
    pairs = (flag.split("=", 1) for flag in flags[1::2])
    return {name: KINDS[kind] for name, kind in pairs}


async def register(client: Client) -> list[str]:
    """Add the attributes the namespace lacks; returns their names."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {k: v for k, v in wanted().items() if k not in listed.custom_attributes}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)  # type: ignore[arg-type]
        )
    return sorted(missing)


async def main() -> None:
    settings = get_settings()
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        try:
            client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
            break
        except RuntimeError as exc:  # the frontend is not up yet
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit(f"Temporal at {settings.temporal_address} did not answer: {exc}") from exc
            await asyncio.sleep(2)
    added = await register(client)
    print(f"search attributes added: {', '.join(added) or 'none (all present)'}")


if __name__ == "__main__":
    asyncio.run(main())
