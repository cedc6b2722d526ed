"""The document pipeline's stages: NEW → CLASSIFICATION → DATA EXTRACTION → PROCESSING → DONE.

An uploaded PDF or text file is a blob; each stage reads what it needs from it (the text is extracted again
rather than carried through Temporal's history, which keeps the histories small).

- ``classification``: invoice, receipt, contract, resume or other, by the configured AI provider (the
  built-in local rules with the keywords below, or the OpenAI-compatible API when ``CONVEYOR_AI_PROVIDER``
  is ``openai``). A document no keyword matches is ``other``.
- ``extraction``: the class's typed fields (``FIELDS``), dates as ISO ``YYYY-MM-DD`` and amounts as numbers:
  the provider's ``extract`` task, then rules for what the generic extractor does not know (the parties of a
  contract, a receipt's merchant on its first line, a resume's skills list).
- ``processing``: business rules, then a row in the store's ``documents`` table (one per execution, so a
  retried stage rewrites its row). Flags: ``total_over_threshold`` (total above ``threshold``, from the
  step's input), ``duplicate_invoice`` (an earlier document has the same invoice number; documents with
  one number are recorded one at a time, so of two processed at once exactly the later is flagged),
  ``missing_fields`` (a required field was not found), ``due_before_issue``. Status ``review`` when any flag
  is set, else ``accepted``.
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

from pypdf import PdfReader
from pypdf.errors import PdfReadError
from sqlalchemy import text as sql
from sqlmodel import col, select
from temporalio.exceptions import ApplicationError

from activities.ai.local import EMAIL
from activities.ai.local import extract as local_extract
from activities.stages import StageItem, StageResult, stage
from core.models import ProcessedDocument
from examples.pipelines.ai import run_task
from examples.pipelines.context import settings_of, store_session
from workflows import errors

CLASSES: dict[str, list[str]] = {
    "invoice": ["invoice number", "bill to", "amount due", "due date", "remit", "payment terms"],
    "receipt": ["receipt", "cashier", "card ending", "thank you for your purchase", "subtotal"],
    "contract": ["agreement", "parties", "whereas", "hereby", "governing law", "termination", "shall"],
    "resume": ["curriculum vitae", "experience", "education", "skills", "employment", "references"],
}
"""Label -> keywords the local provider counts for it (on top of its own vocabulary)."""
OTHER = "other"

FIELDS: dict[str, dict[str, str]] = {
    "invoice": {
        "invoice_number": "string",
        "invoice_date": "date",
        "due_date": "date",
        "total": "number",
        "currency": "string",
        "vendor": "string",
        "customer": "string",
    },
    "receipt": {"merchant": "string", "date": "date", "total": "number", "currency": "string"},
    "contract": {"parties": "list", "effective_date": "date", "term": "string", "governing_law": "string"},
    "resume": {"name": "string", "email": "email", "phone": "string", "skills": "list"},
}
"""Fields extracted per class, with the ``ai_process`` type asked for."""
REQUIRED: dict[str, tuple[str, ...]] = {
    "invoice": ("invoice_number", "total"),
    "receipt": ("total",),
    "contract": ("parties",),
    "resume": ("name",),
}
ALIASES: dict[str, tuple[str, ...]] = {
    "vendor": ("from", "seller", "supplier", "issued by"),
    "customer": ("bill to", "billed to", "client", "sold to"),
    "merchant": ("store", "shop"),
    "invoice_number": ("invoice no", "invoice #"),
    "invoice_date": ("date", "issue date"),
    "total": ("amount due", "total due", "balance due"),
    "name": ("full name",),
}
"""Other labels a field goes by on real documents, tried when its own name is not on the page."""
DEFAULT_THRESHOLD = 10_000.0
MAX_TEXT = 200_000
"""Characters of a document the stages read (a longer one is cut: classification needs the start)."""
MODEL_TEXT = 20_000
"""Characters sent to an OpenAI-compatible model: the head of a document carries its class and fields."""


# -- text -------------------------------------------------------------------------------------------------


def document_text(data: bytes) -> str:
    """The text of a PDF (every page) or of a text file (UTF-8, else Latin-1)."""
    if data.lstrip()[:5] == b"%PDF-":
        try:
            reader = PdfReader(io.BytesIO(data))
            text = "\n".join(page.extract_text() or "" for page in reader.pages)
        except (PdfReadError, ValueError, KeyError, TypeError) as exc:
            raise ApplicationError(
                f"the file is not a readable PDF: {exc}", type=errors.VALIDATION_FAILED, non_retryable=True
            ) from None
    else:
        if b"\x00" in data[:1024]:
            raise ApplicationError(
                "the file is neither a PDF nor text", type=errors.VALIDATION_FAILED, non_retryable=True
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    return text[:MAX_TEXT]


async def _item_text(item: StageItem) -> str:
    try:
        data = item.read_blob()
    except (ValueError, FileNotFoundError) as exc:  # no file, or the blob is gone: retrying will not help
        raise ApplicationError(str(exc), type=errors.VALIDATION_FAILED, non_retryable=True) from None
    # Parsing a PDF is CPU work: in a thread, so the worker's event loop keeps polling and heartbeating.
    return await asyncio.to_thread(document_text, data)


# -- classification ---------------------------------------------------------------------------------------


async def classify_text(item: StageItem, text: str) -> dict[str, Any]:
    """``{document_class, confidence, scores}`` from the configured provider."""
    settings = settings_of(item)
    labels: dict[str, list[str]] = dict(CLASSES)
    if settings.ai_provider == "openai":
        labels[OTHER] = []  # a model can say "none of these"; the local rules say it by matching nothing
    sent = text[:MODEL_TEXT] if settings.ai_provider == "openai" else text
    answer = await run_task(settings, task="classify", text=sent, labels=labels)
    label = answer.get("label")
    return {
        "document_class": label if label in CLASSES else OTHER,
        "confidence": answer.get("confidence", 0.0),
        "scores": answer.get("scores", {}),
    }


@stage("classification")
async def classify(item: StageItem) -> StageResult:
    """CLASSIFICATION: which of the document classes the file is."""
    text = await _item_text(item)
    result = await classify_text(item, text)
    return StageResult({**result, "chars": len(text)})


# -- extraction -------------------------------------------------------------------------------------------

_PARTIES = re.compile(r"\bbetween\s+(.+?)\s+and\s+(.+?)(?:\s*\(|[.;]|,\s|$)", re.IGNORECASE)
_TERM = re.compile(r"\bterm\s+of\s+(\d+|one|two|three|six|twelve)\s+(month|year|week|day)s?\b", re.I)
_LAW = re.compile(r"\blaws?\s+of\s+(.+?)(?:[.;]|$)", re.IGNORECASE)
_AS_OF = re.compile(r"\b(?:as\s+of|effective(?:\s+date)?:?)\s+(.{6,40})", re.IGNORECASE)
_NUMBERS = {"one": 1, "two": 2, "three": 3, "six": 6, "twelve": 12}
_UNIT_MONTHS = {"month": 1, "year": 12}


def extract_fields(document_class: str, text: str) -> dict[str, Any]:
    """The class's fields found by the local rules, typed; absent ones are None."""
    wanted = FIELDS.get(document_class, {})
    if not wanted:
        return {}
    found: dict[str, Any] = local_extract(text, {k: v for k, v in wanted.items() if v != "list"})["fields"]
    for name in wanted:
        if found.get(name) is None and name in ALIASES:
            for alias in ALIASES[name]:
                value = local_extract(text, {alias: wanted[name]})["fields"][alias]
                if value is not None:
                    found[name] = value
                    break
    flat = " ".join(text.split())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if document_class == "receipt" and found.get("merchant") is None and lines:
        found["merchant"] = lines[0]  # a till prints the shop's name first
    if document_class == "resume":
        if found.get("name") is None and lines:
            found["name"] = lines[0]
        found["skills"] = _list_after(text, "skills")
    if document_class == "contract":
        parties = _PARTIES.search(flat)
        found["parties"] = [_clean_party(p) for p in parties.groups()] if parties else []
        term = _TERM.search(flat)
        if term:
            count = _NUMBERS.get(term.group(1).lower()) or int(term.group(1))
            unit = term.group(2).lower()
            found["term"] = f"{count} {unit}{'s' if count != 1 else ''}"
            if unit in _UNIT_MONTHS:
                found["term_months"] = count * _UNIT_MONTHS[unit]
        law = _LAW.search(flat)
        found["governing_law"] = law.group(1).strip() if law else None
        as_of = _AS_OF.search(flat)
        if as_of:
            dated = local_extract(as_of.group(1), {"date": "date"})["fields"]["date"]
            found["effective_date"] = dated or found.get("effective_date")
    return found


def _clean_party(name: str) -> str:
    # "Initech LLC ("Provider")": the defined term in brackets is not part of the name.
    name = re.sub(r"\s*\([^)]*\)", "", name)
    return name.strip(" ,\"'").removeprefix("the ").strip()


def _list_after(text: str, label: str) -> list[str]:
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key.strip().lower() == label:
            return [part.strip() for part in re.split(r"[,;•|]", rest) if part.strip()]
    return []


def normalise(document_class: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Fields as the later stages want them: ISO dates, numbers for amounts, upper-case currency codes."""
    types = FIELDS.get(document_class, {})
    return {name: _typed(name, types.get(name), value) for name, value in fields.items()}


def _typed(name: str, kind: str | None, value: Any) -> Any:
    if kind == "number" and value is not None and not isinstance(value, (int, float)):
        value = local_extract(f"{name}: {value}", {name: "number"})["fields"][name]
    elif kind == "date" and isinstance(value, str):
        value = local_extract(value, {"date": "date"})["fields"]["date"] or value
    elif kind == "list" and value is not None and not isinstance(value, list):
        value = [part.strip() for part in str(value).split(",") if part.strip()]
    elif kind == "email" and isinstance(value, str):
        match = EMAIL.search(value)
        value = match.group(0) if match else None
    if name == "currency" and isinstance(value, str):
        value = value.upper()
    if isinstance(value, str):
        value = value.strip() or None
    return value


async def extract_document(item: StageItem, document_class: str, text: str) -> dict[str, Any]:
    """``{document_class, fields, missing}``: through the OpenAI-compatible provider when configured (its
    answer is typed the same way), else the local rules."""
    settings = settings_of(item)
    wanted = FIELDS.get(document_class, {})
    if wanted and settings.ai_provider == "openai":
        answer = await run_task(settings, task="extract", text=text[:MODEL_TEXT], fields=wanted)
        raw = dict(answer.get("fields") or {})
    else:
        raw = extract_fields(document_class, text)
    fields = normalise(document_class, raw)
    return {
        "document_class": document_class,
        "fields": fields,
        "missing": [name for name in wanted if fields.get(name) in (None, [])],
    }


@stage("extraction")
async def extract(item: StageItem) -> StageResult:
    """DATA EXTRACTION: the typed fields of the class CLASSIFICATION found."""
    document_class = str(item.data.get("document_class") or OTHER)
    if document_class not in CLASSES and document_class != OTHER:
        raise ApplicationError(
            f"input.document_class: {document_class!r} is not one of {[*CLASSES, OTHER]}",
            type=errors.VALIDATION_FAILED,
            non_retryable=True,
        )
    return StageResult(await extract_document(item, document_class, await _item_text(item)))


# -- processing -------------------------------------------------------------------------------------------


def _threshold(value: Any) -> float:
    if value is None or value == "":
        return DEFAULT_THRESHOLD
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ApplicationError(
            f"input.threshold: {value!r} is not a number", type=errors.VALIDATION_FAILED, non_retryable=True
        ) from None


def rule_flags(document_class: str, fields: dict[str, Any], threshold: float) -> list[str]:
    """The flags that need no store: over the threshold, required fields missing, due before issued."""
    flags = []
    total = fields.get("total")
    if isinstance(total, (int, float)) and total > threshold:
        flags.append("total_over_threshold")
    if any(fields.get(name) in (None, [], "") for name in REQUIRED.get(document_class, ())):
        flags.append("missing_fields")
    issued, due = fields.get("invoice_date"), fields.get("due_date")
    if isinstance(issued, str) and isinstance(due, str) and len(issued) == len(due) == 10 and due < issued:
        flags.append("due_before_issue")
    return flags


@stage("processing")
async def process(item: StageItem) -> StageResult:
    """PROCESSING: apply the business rules and record the document in the store's ``documents`` table."""
    data = item.data
    document_class = str(data.get("document_class") or OTHER)
    fields = data.get("fields") or {}
    if not isinstance(fields, dict):
        raise ApplicationError(
            "input.fields: expected an object of extracted fields",
            type=errors.VALIDATION_FAILED,
            non_retryable=True,
        )
    threshold = _threshold(data.get("threshold"))
    flags = rule_flags(document_class, fields, threshold)
    total = fields.get("total") if isinstance(fields.get("total"), (int, float)) else None
    number = fields.get("invoice_number") if document_class == "invoice" else None
    duplicate_of: str | None = None
    async with store_session(settings_of(item)) as session:
        bind = session.bind
        if number and bind is not None and bind.dialect.name == "postgresql":
            # Two invoices with one number processed at once: the second waits for the first's commit, so
            # it sees the first's row. (SQLite has one writer at a time, which does the same.)
            connection = await session.connection()
            await connection.execute(sql("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": str(number)})
        row = (
            await session.exec(
                select(ProcessedDocument).where(ProcessedDocument.execution_id == item.execution_id)
            )
        ).first()
        if row is None:
            row = ProcessedDocument(
                pipeline=item.pipeline,
                execution_id=item.execution_id,
                document_class=document_class,
                fields={},
                status="pending",
            )
        row.filename = str(data["filename"])[:255] if data.get("filename") else None
        row.document_class = document_class
        row.invoice_number = str(number)[:128] if number else None
        row.total = float(total) if total is not None else None
        currency = fields.get("currency")
        row.currency = str(currency)[:8] if currency else None
        row.fields = fields
        session.add(row)
        await session.flush()  # the row's id orders it among documents with the same invoice number
        if row.invoice_number:
            earlier = (
                await session.exec(
                    select(ProcessedDocument)
                    .where(
                        ProcessedDocument.invoice_number == row.invoice_number,
                        col(ProcessedDocument.id) < row.id,
                    )
                    .order_by(col(ProcessedDocument.id))
                )
            ).first()
            if earlier is not None:
                flags.append("duplicate_invoice")
                duplicate_of = earlier.execution_id
        row.flags = flags
        row.status = "review" if flags else "accepted"
        session.add(row)
        await session.commit()
        document_id = row.id
    return StageResult(
        {
            "document_id": document_id,
            "document_class": document_class,
            "status": "review" if flags else "accepted",
            "flags": flags,
            "duplicate_of": duplicate_of,
            "threshold": threshold,
            "total": total,
        }
    )
