"""Every route of the app, for tests that must cover all of them (roles, body limits)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

_PARAM = re.compile(r"\{[^}:]+(?::[^}]+)?\}")


@dataclass(frozen=True)
class Endpoint:
    """One method of one route, and whether the handler reads a request body."""

    method: str
    path: str
    reads_body: bool

    def url(self, value: str = "1") -> str:
        """The path with every parameter filled with ``value``."""
        return _PARAM.sub(value, self.path)


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Each (method, path) the app serves, HEAD left out (it follows GET)."""
    found: list[Endpoint] = []
    for context in iter_route_contexts(app.routes):
        route = context.route
        reads_body = isinstance(route, APIRoute) and (
            route.body_field is not None or "requestBody" in (route.openapi_extra or {})
        )
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                found.append(Endpoint(method, context.path or "", reads_body))
    return found
