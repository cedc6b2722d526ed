"""The document pipeline of examples/ end to end: documents the tests generate (a PDF invoice, a text
receipt, a contract, a PDF resume) uploaded through the API, through real stage workers, to DONE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.stages import StageProcessor, load
from core import names
from tests.support.documents import (
    Document,
    contract_text,
    invoice_pdf,
    other_text,
    receipt_text,
    resume_pdf,
)
from tests.support.pipelines import Stack, completed_runs, create, metrics, result, stack, stage_of
from tests.support.waiting import until
from worker import stage_workers

__all__ = ["stack"]  # the fixture, shared with the generic pipeline tests

PIPELINE = "document-pipeline"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "document-pipeline.yaml"


def processors(*names: str) -> list[StageProcessor]:
    registered = load(["examples.pipelines.documents"])
    return [registered[name] for name in names]


async def upload(stack: Stack, document: Document, **metadata: Any) -> str:
    answer = await stack.http.post(
        f"/api/v1/pipelines/{PIPELINE}/items",
        files={"file": (document.filename, document.data, document.content_type)},
        data={"metadata": json.dumps(metadata)} if metadata else None,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["execution_id"])


@pytest.fixture
async def pipeline(stack: Stack) -> Stack:
    await create(stack, yaml.safe_load(EXAMPLE.read_text()))
    return stack


async def test_each_document_is_classified_and_its_fields_extracted(pipeline: Stack) -> None:
    documents = [invoice_pdf(), receipt_text(), contract_text(), resume_pdf(), other_text()]
    stages = processors("classification", "extraction", "processing")
    async with stage_workers(pipeline.client, pipeline.settings, stages, max_concurrent=2):
        items = [await upload(pipeline, document) for document in documents]
        views = [await result(pipeline, item) for item in items]
    for document, view, item in zip(documents, views, items, strict=True):
        assert view["state"] == "COMPLETED", view
        output = view["output"]
        assert output["document_class"] == document.document_class, (document.filename, output)
        for field, value in document.fields.items():
            assert output["fields"].get(field) == value, (document.filename, field, output["fields"])
        assert output["status"] in {"accepted", "review"}
        assert await stage_of(pipeline.client, item) == names.STAGE_DONE
    invoice = views[0]["output"]
    assert invoice["status"] == "accepted" and invoice["flags"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_business_rules_flag_large_totals_and_duplicate_invoices(pipeline: Stack) -> None:
    stages = processors("classification", "extraction", "processing")
    async with stage_workers(pipeline.client, pipeline.settings, stages, max_concurrent=2):
        first = await result(pipeline, await upload(pipeline, invoice_pdf("INV-7", total=1200.0)))
        again = await result(pipeline, await upload(pipeline, invoice_pdf("INV-7", total=1200.0)))
        large = await result(
            pipeline, await upload(pipeline, invoice_pdf("INV-8", total=25000.0), threshold=5000)
        )
    assert first["output"]["flags"] == [] and first["output"]["status"] == "accepted"
    assert "duplicate_invoice" in again["output"]["flags"] and again["output"]["status"] == "review"
    assert again["output"]["duplicate_of"]
    assert "total_over_threshold" in large["output"]["flags"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_documents_wait_at_data_extraction_while_no_worker_serves_it(pipeline: Stack) -> None:
    documents = [invoice_pdf("INV-100"), receipt_text(), contract_text()]
    async with stage_workers(
        pipeline.client, pipeline.settings, processors("classification", "processing"), max_concurrent=2
    ):
        items = [await upload(pipeline, document) for document in documents]

        async def waiting() -> bool:
            report = await metrics(pipeline, PIPELINE)
            at = [await stage_of(pipeline.client, item) for item in items]
            return report["queue_lengths"]["extraction"] > 0 and at == ["extraction"] * len(items)

        await until(waiting, "every document to wait at DATA EXTRACTION")
        stages = {row["stage"]: row for row in (await metrics(pipeline, PIPELINE))["stages"]}
        assert stages["extraction"]["label"] == "DATA EXTRACTION"
        assert stages["extraction"]["processed"] == 0
        async with stage_workers(
            pipeline.client, pipeline.settings, processors("extraction"), max_concurrent=2
        ):
            views = [await result(pipeline, item) for item in items]
    assert [view["output"]["document_class"] for view in views] == ["invoice", "receipt", "contract"]
    for stage in ("classification", "extraction", "processing"):
        assert await completed_runs(pipeline.settings, stage) == dict.fromkeys(items, 1), stage
