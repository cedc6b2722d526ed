"""The document pipeline's processors on documents the tests write themselves (a real PDF invoice and resume,
a text receipt and contract), with the store on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlmodel import select
from temporalio.exceptions import ApplicationError

from activities.stages import StageItem, load
from core.db import create_engine, migrate, session_factory
from core.models import ProcessedDocument
from core.payloads import BlobStore
from core.settings import get_settings
from examples.pipelines import documents
from examples.pipelines.context import dispose_engines
from tests.support.documents import (
    Document,
    all_documents,
    contract_text,
    invoice_pdf,
    other_text,
    pdf,
    receipt_text,
    resume_pdf,
)
from tests.support.target import serve
from workflows import errors

PIPELINE = "document-pipeline"


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def env_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Processors read the store's URL from the settings; each test gets its own SQLite file."""
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/store.db")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
async def store(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The Conveyor store on SQLite and PostgreSQL, migrated, as the processors' settings name it."""
    engine = create_engine(database_url)
    await migrate(engine)
    await engine.dispose()
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    await dispose_engines()
    get_settings.cache_clear()


def item_for(blobs: BlobStore, document: Document | None, stage: str, data: dict[str, Any]) -> StageItem:
    return StageItem(
        pipeline=PIPELINE,
        stage=stage,
        execution_id=f"{PIPELINE}/{uuid.uuid4()}",
        data=data,
        blob=blobs.put(document.data) if document is not None else None,
        _blobs=blobs,
    )


async def classify_and_extract(blobs: BlobStore, document: Document) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run CLASSIFICATION then DATA EXTRACTION the way the definition chains them."""
    meta = {"filename": document.filename, "content_type": document.content_type}
    classified = await documents.classify(item_for(blobs, document, "classification", meta))
    item = item_for(blobs, document, "extraction", {"document_class": classified.data["document_class"]})
    extracted = await documents.extract(item)
    return classified.data, extracted.data


def test_processors_register_under_the_pipeline_stage_names() -> None:
    registered = load(["examples.pipelines.documents"])
    for name in ("classification", "extraction", "processing"):
        assert registered[name].task_queue == f"stage.{name}"
    assert registered["classification"].process is documents.classify


def test_generated_pdf_is_read_by_pypdf() -> None:
    text = documents.document_text(pdf(["first line", "second (with brackets)"]))
    assert text.splitlines() == ["first line", "second (with brackets)"]


@pytest.mark.parametrize("document", all_documents(), ids=lambda d: d.filename)
async def test_classify_and_extract(blobs: BlobStore, env_store: None, document: Document) -> None:
    classified, extracted = await classify_and_extract(blobs, document)
    assert classified["document_class"] == document.document_class
    assert extracted["document_class"] == document.document_class
    for name, value in document.fields.items():
        assert extracted["fields"].get(name) == value, name
    assert extracted["missing"] == []


async def test_invoice_fields_are_typed(blobs: BlobStore, env_store: None) -> None:
    _, extracted = await classify_and_extract(blobs, invoice_pdf(total=98765.43))
    fields = extracted["fields"]
    assert isinstance(fields["total"], float) and fields["total"] == 98765.43
    assert fields["invoice_date"] == "2024-03-15" and fields["due_date"] == "2024-04-14"
    assert set(fields) >= set(documents.FIELDS["invoice"])


async def test_other_has_no_fields(blobs: BlobStore, env_store: None) -> None:
    classified, extracted = await classify_and_extract(blobs, other_text())
    assert classified == {**classified, "document_class": "other", "confidence": 0.0}
    assert extracted == {"document_class": "other", "fields": {}, "missing": []}


async def test_a_broken_pdf_is_a_data_error(blobs: BlobStore, env_store: None) -> None:
    broken = Document("bad.pdf", "application/pdf", b"%PDF-1.4\nnot really a pdf", "other")
    with pytest.raises(ApplicationError) as caught:
        await documents.classify(item_for(blobs, broken, "classification", {}))
    assert caught.value.type == errors.VALIDATION_FAILED and caught.value.non_retryable


async def test_binary_file_is_a_data_error(blobs: BlobStore, env_store: None) -> None:
    binary = Document("x.bin", "application/octet-stream", b"\x00\x01\x02" * 100, "other")
    with pytest.raises(ApplicationError) as caught:
        await documents.classify(item_for(blobs, binary, "classification", {}))
    assert caught.value.type == errors.VALIDATION_FAILED


async def test_an_item_without_a_file_is_a_data_error(blobs: BlobStore, env_store: None) -> None:
    with pytest.raises(ApplicationError) as caught:
        await documents.classify(item_for(blobs, None, "classification", {}))
    assert caught.value.type == errors.VALIDATION_FAILED and caught.value.non_retryable


async def test_unknown_class_is_a_data_error(blobs: BlobStore, env_store: None) -> None:
    item = item_for(blobs, receipt_text(), "extraction", {"document_class": "poem"})
    with pytest.raises(ApplicationError) as caught:
        await documents.extract(item)
    assert caught.value.type == errors.VALIDATION_FAILED
    assert "document_class" in str(caught.value)


async def process(blobs: BlobStore, document: Document, **extra: Any) -> tuple[StageItem, dict[str, Any]]:
    _, extracted = await classify_and_extract(blobs, document)
    data = {**extracted, "filename": document.filename, **extra}
    item = item_for(blobs, None, "processing", data)
    return item, (await documents.process(item)).data


async def rows(url: str) -> list[ProcessedDocument]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.exec(select(ProcessedDocument).order_by("id"))).all())
    finally:
        await engine.dispose()


async def test_processing_flags_totals_over_the_threshold_and_records_them(
    blobs: BlobStore, store: str
) -> None:
    item, small = await process(blobs, invoice_pdf("INV-1", total=900.0), threshold=1000)
    assert small["status"] == "accepted" and small["flags"] == []
    _, large = await process(blobs, invoice_pdf("INV-2", total=1500.0), threshold=1000)
    assert large["status"] == "review" and large["flags"] == ["total_over_threshold"]
    _, receipt = await process(blobs, receipt_text(), threshold=5)
    assert receipt["flags"] == ["total_over_threshold"]
    saved = await rows(store)
    assert [(r.invoice_number, r.total, r.status, r.flags) for r in saved] == [
        ("INV-1", 900.0, "accepted", []),
        ("INV-2", 1500.0, "review", ["total_over_threshold"]),
        (None, 8.32, "review", ["total_over_threshold"]),
    ]
    assert saved[0].execution_id == item.execution_id
    assert saved[0].fields["vendor"] == "Acme Supplies Ltd" and saved[0].currency == "USD"


async def test_default_threshold_applies_without_one(blobs: BlobStore, store: str) -> None:
    _, result = await process(blobs, invoice_pdf("INV-3", total=documents.DEFAULT_THRESHOLD + 1))
    assert result["flags"] == ["total_over_threshold"]
    assert result["threshold"] == documents.DEFAULT_THRESHOLD


async def test_a_repeated_invoice_number_is_flagged_as_duplicate(blobs: BlobStore, store: str) -> None:
    first_item, first = await process(blobs, invoice_pdf("INV-77", total=100.0))
    _, second = await process(blobs, invoice_pdf("INV-77", total=100.0, vendor="Acme Supplies Ltd"))
    _, other = await process(blobs, invoice_pdf("INV-78", total=100.0))
    assert first["flags"] == [] and first["duplicate_of"] is None
    assert second["flags"] == ["duplicate_invoice"] and second["duplicate_of"] == first_item.execution_id
    assert second["status"] == "review"
    assert other["flags"] == []


async def test_a_retried_processing_rewrites_its_row(blobs: BlobStore, store: str) -> None:
    item, first = await process(blobs, invoice_pdf("INV-90", total=50.0))
    again = await documents.process(item)  # the stage's retry after its worker died mid-way
    assert again.data["document_id"] == first["document_id"]
    assert again.data["flags"] == []  # its own earlier run is not a duplicate
    assert len(await rows(store)) == 1


async def test_missing_required_fields_are_flagged(blobs: BlobStore, store: str) -> None:
    item = item_for(blobs, None, "processing", {"document_class": "invoice", "fields": {"vendor": "X"}})
    result = (await documents.process(item)).data
    assert result["flags"] == ["missing_fields"] and result["status"] == "review"


async def test_a_bad_threshold_names_the_field(blobs: BlobStore, env_store: None) -> None:
    item = item_for(
        blobs, None, "processing", {"document_class": "receipt", "fields": {}, "threshold": "lots"}
    )
    with pytest.raises(ApplicationError) as caught:
        await documents.process(item)
    assert caught.value.type == errors.VALIDATION_FAILED and "input.threshold" in str(caught.value)


def test_rule_flags_due_before_issue() -> None:
    fields = {"invoice_number": "A", "total": 1.0, "invoice_date": "2024-05-01", "due_date": "2024-04-01"}
    assert documents.rule_flags("invoice", fields, 100.0) == ["due_before_issue"]


@pytest.mark.parametrize("make", [contract_text, resume_pdf], ids=["contract", "resume"])
async def test_non_financial_documents_are_accepted(blobs: BlobStore, store: str, make: Any) -> None:
    _, result = await process(blobs, make())
    assert result["status"] == "accepted" and result["total"] is None


@pytest.fixture
async def chat(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[list[dict[str, Any]]]:
    """A stub of an OpenAI-compatible chat-completions API (an external service), configured as the
    provider; it answers the way a model does, with dates and amounts as written on the page."""
    seen: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        system = body["messages"][0]["content"]
        if "Classify" in system:
            answer: dict[str, Any] = {"label": "invoice", "confidence": 0.97, "scores": {"invoice": 0.97}}
        else:
            answer = {
                "fields": {
                    "invoice_number": "INV-2024-0042",
                    "invoice_date": "15 March 2024",
                    "due_date": "2024-04-14",
                    "total": "$1,234.50",
                    "currency": "usd",
                    "vendor": "Acme Supplies Ltd",
                    "customer": None,
                }
            }
        message = {"role": "assistant", "content": json.dumps(answer)}
        return {"choices": [{"index": 0, "message": message}], "model": body["model"], "usage": {}}

    async with serve(app) as url:
        monkeypatch.setenv("CONVEYOR_AI_PROVIDER", "openai")
        monkeypatch.setenv("CONVEYOR_AI_BASE_URL", f"{url}/v1")
        monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/store.db")
        get_settings.cache_clear()
        yield seen
        get_settings.cache_clear()


async def test_the_openai_provider_classifies_and_extracts_when_configured(
    blobs: BlobStore, chat: list[dict[str, Any]]
) -> None:
    classified, extracted = await classify_and_extract(blobs, invoice_pdf())
    assert classified["document_class"] == "invoice" and classified["confidence"] == 0.97
    # The model's answer is typed like the local rules' answer: ISO dates, numbers, currency codes.
    assert extracted["fields"] == {
        "invoice_number": "INV-2024-0042",
        "invoice_date": "2024-03-15",
        "due_date": "2024-04-14",
        "total": 1234.5,
        "currency": "USD",
        "vendor": "Acme Supplies Ltd",
        "customer": None,
    }
    assert extracted["missing"] == ["customer"]
    assert len(chat) == 2
    # The model saw the PDF's text and may answer "other".
    assert "Invoice Number: INV-2024-0042" in chat[0]["messages"][1]["content"]
    assert "other" in json.dumps(chat[0])


async def test_only_the_first_of_simultaneous_duplicates_goes_unflagged(blobs: BlobStore, store: str) -> None:
    _, extracted = await classify_and_extract(blobs, invoice_pdf("INV-500", total=10.0))
    items = [item_for(blobs, None, "processing", {**extracted, "filename": "inv-500.pdf"}) for _ in range(6)]
    results = await asyncio.gather(*(documents.process(item) for item in items))
    assert sorted(tuple(r.data["flags"]) for r in results) == [()] + [("duplicate_invoice",)] * 5
