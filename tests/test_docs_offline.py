"""The API's docs pages work without the internet: every file they load is served by the API itself."""

from __future__ import annotations

import re

import httpx
import pytest

_ABSOLUTE = re.compile(r"""(?:https?:)?//[^\s'"<>]+""")
_LOADED = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: ['"]([^'"]+)['"]""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_what_the_api_serves(api: httpx.AsyncClient, page: str) -> None:
    answer = await api.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert _ABSOLUTE.findall(html) == [], "the page names another host (a CDN): blank when offline"
    loaded = {a or b for a, b in _LOADED.findall(html)}
    assert any(url.endswith(".js") for url in loaded), html
    assert "/openapi.json" in loaded
    for url in sorted(loaded):
        assert url.startswith("/"), url
        asset = await api.get(url)
        assert asset.status_code == 200, f"{page} loads {url}: {asset.status_code}"
        assert asset.content, url


async def test_swagger_ui_calls_no_online_validator(api: httpx.AsyncClient) -> None:
    html = (await api.get("/docs")).text
    assert '"validatorUrl": null' in html
