"""The README stays true: its configuration table lists every setting, and its worked example runs."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from core.settings import Settings
from tests.support.target import Target

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_configuration_table_lists_every_setting() -> None:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for field in Settings.model_fields:
        variable = f"CONVEYOR_{field.upper()}"
        assert variable in table, f"{variable} is missing from the README's configuration table"


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block


ROOT = Path(__file__).resolve().parents[1]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_resolves_inside_the_repository() -> None:
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", README, re.MULTILINE)}
    links = _LINK.findall(README)
    assert links
    for target in links:
        if target.startswith(("http://", "https://")):
            continue  # a page for readers (temporal.io), not a file of this repository
        path, _, fragment = target.partition("#")
        if path:
            resolved = (ROOT / path).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), f"README links {target}: no such file"
        else:
            assert fragment in anchors, f"README links #{fragment}: no such heading"


def _worked_example() -> dict[str, object]:
    section = README.split("## A worked example", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    document: dict[str, object] = yaml.safe_load(match.group(1))
    return document


@pytest.mark.parametrize(("supplier_price", "changed"), [(12.5, True), (10.0, False)])
async def test_worked_example_runs(
    api: httpx.AsyncClient, target: Target, supplier_price: float, changed: bool
) -> None:
    document = _worked_example()
    text = yaml.safe_dump(document).replace("http://127.0.0.1:8000/health", f"{target.url}/echo")
    saved = await api.post("/api/v1/definitions", content=text, headers={"content-type": "application/yaml"})
    assert saved.status_code == 201, saved.text
    graph = await api.get("/api/v1/definitions/price-check/graph")
    assert "s_route" in graph.text
    started = await api.post(
        "/api/v1/definitions/price-check/executions",
        json={"input": {"sku": "A-1", "supplier_price": supplier_price}, "wait": 20},
    )
    body = started.json()
    assert body["state"] == "COMPLETED", body
    assert body["output"]["changed"] is changed
    auth = [r["headers"].get("authorization") for r in target.requests if r.get("path") == "/echo"]
    assert "Bearer catalogue-secret" in auth
