"""``ai_process`` on the real dev server: the offline local provider, and the OpenAI-compatible provider
against a real local HTTP server that speaks chat completions."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from core.settings import Settings
from tests.support.outcome import completes, fails
from tests.support.run import start
from tests.support.target import serve
from workflows.definition import DefinitionInvalid, parse
from workflows.interpreter import DefinitionWorkflow

API_KEY = "ai-test-key"
FAST_RETRY = {"max_attempts": 3, "initial_interval": "100ms", "backoff": 1.0}

INVOICE = """ACME Supplies Ltd.
INVOICE
Invoice No.: INV-2024-0042
Invoice date: March 15, 2024
Due date: 2024-04-14
Bill to: Globex Corp, billing@globex.example
Widgets   10 x $12.50
Subtotal: $125.00
VAT 20%: $25.00
Total: $150.00
Payment terms: net 30."""
RECEIPT = """Corner Cafe
RECEIPT
2 x Coffee   €7.00
Paid by card ending 4242. Cashier: Tom
Total paid €7.00. Thank you for your purchase!"""
CONTRACT = """SERVICE AGREEMENT
This Agreement is made between Acme Ltd and Globex Corp (the parties). The parties hereby agree that the
supplier shall deliver widgets every month. Either party may end this agreement with 30 days notice.
Governing law: England and Wales."""


class ChatServer:
    """A chat-completions endpoint: answers by task, and misbehaves on demand by model name."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.requests: list[dict[str, Any]] = []
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.url = ""

        @self.app.post("/v1/chat/completions")
        async def complete(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append({"headers": dict(request.headers), "json": body})
            model = body["model"]
            self.counts[model] += 1
            if model.startswith("limited-") and self.counts[model] == 1:
                return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "1"})
            if model == "missing-model":
                return JSONResponse({"error": {"message": "model not found"}}, status_code=404)
            if model == "prose-model":
                content = "Sure! The label is invoice."
            else:
                content = json.dumps(
                    self._answer(body["messages"][0]["content"], body["messages"][1]["content"])
                )
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
                }
            )

    @staticmethod
    def _answer(system: str, user: str) -> dict[str, Any]:
        if "Classify" in system:
            return {"label": "INVOICE", "confidence": 0.93, "scores": {"invoice": 0.93, "receipt": 0.07}}
        if "Extract" in system:
            return {"fields": {"invoice_number": "INV-9", "total": 99.5, "po_number": None}}
        if "Summarize" in system:
            return {"summary": f"{len(user.split())} words about widgets."}
        if "Translate" in system:
            return {"text": "Bonjour le monde"}
        return {"fields": {"category": "hardware", "title": "not overwritten"}}


@pytest.fixture(scope="session")
async def chat() -> AsyncIterator[ChatServer]:
    server = ChatServer()
    async with serve(server.app) as url:
        server.url = url
        yield server


@pytest.fixture
def settings(task_queue: str, chat: ChatServer) -> Settings:
    """The local provider by default; the OpenAI-compatible one at the chat server when a step asks."""
    return Settings(
        task_queue=task_queue,
        ai_base_url=f"{chat.url}/v1",
        ai_model="default-model",
        ai_api_key=SecretStr(API_KEY),
        ai_timeout_s=5,
    )


def ai(step_id: str, with_: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "ai_process", "with": with_, **fields}


def definition(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "ai", "steps": list(steps), **fields}


# -- local provider --------------------------------------------------------------------------------------


async def test_local_classify_tells_invoice_receipt_and_contract_apart(
    client: Client, worker: Worker
) -> None:
    labels = ["invoice", "receipt", "contract"]
    result = await completes(
        client,
        worker.task_queue,
        definition(
            *(
                ai(name, {"task": "classify", "text": f"{{{{ input.{name} }}}}", "labels": labels})
                for name in ("invoice", "receipt", "contract")
            ),
            output={name: f"{{{{ steps.{name}.output }}}}" for name in ("invoice", "receipt", "contract")},
        ),
        {"invoice": INVOICE, "receipt": RECEIPT, "contract": CONTRACT},
    )
    for name in ("invoice", "receipt", "contract"):
        answer = result.output[name]
        assert answer["label"] == name, answer
        assert 0.5 < answer["confidence"] <= 1
        assert set(answer["scores"]) == set(labels)
        assert answer["scores"][name] == max(answer["scores"].values())


async def test_local_classify_with_keywords_per_label(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            ai(
                "route",
                {
                    "task": "classify",
                    "data": {
                        "subject": "Parcel arrived damaged",
                        "body": "The box was crushed, I want my money",
                    },
                    "labels": {"shipping": ["parcel", "crushed", "box"], "billing": ["charge", "money"]},
                },
            ),
            ai("none", {"task": "classify", "text": "hello there", "labels": ["invoice", "receipt"]}),
            output={"route": "{{ steps.route.output }}", "none": "{{ steps.none.output }}"},
        ),
    )
    assert result.output["route"]["label"] == "shipping"
    assert result.output["route"]["scores"] == {"shipping": 0.75, "billing": 0.25}
    assert result.output["none"] == {
        "label": None,
        "confidence": 0.0,
        "scores": {"invoice": 0.0, "receipt": 0.0},
    }


async def test_local_extract_reads_an_invoice(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            ai(
                "read",
                {
                    "task": "extract",
                    "text": "{{ input.document }}",
                    "fields": {
                        "invoice_number": "string",
                        "total": "number",
                        "invoice_date": "date",
                        "due_date": "date",
                        "email": "email",
                        "currency": "string",
                        "po_number": "string",
                    },
                },
            )
        ),
        {"document": INVOICE},
    )
    assert result.output == {
        "fields": {
            "invoice_number": "INV-2024-0042",
            "total": 150.0,
            "invoice_date": "2024-03-15",
            "due_date": "2024-04-14",
            "email": "billing@globex.example",
            "currency": "USD",
            "po_number": None,
        },
        "missing": ["po_number"],
    }


async def test_local_extract_without_fields_finds_what_it_knows(client: Client, worker: Worker) -> None:
    result = await completes(
        client, worker.task_queue, definition(ai("read", {"task": "extract", "text": INVOICE}))
    )
    fields = result.output["fields"]
    assert fields["emails"] == ["billing@globex.example"]
    assert fields["dates"] == ["2024-03-15", "2024-04-14"]
    assert fields["amounts"] == [12.5, 125.0, 25.0, 150.0]
    assert fields["invoice_number"] == "INV-2024-0042"
    assert fields["total"] == 150.0
    assert fields["payment_terms"] == "net 30."


async def test_local_summarize_keeps_the_leading_sentences(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(ai("gist", {"task": "summarize", "text": CONTRACT, "max_sentences": 2})),
    )
    assert result.output == {
        "summary": "This Agreement is made between Acme Ltd and Globex Corp (the parties). "
        "The parties hereby agree that the supplier shall deliver widgets every month."
    }


async def test_local_enrich_adds_derived_fields(client: Client, worker: Worker) -> None:
    product = {
        "title": "Red Widget XL",
        "description": "A large red widget for offices. Ask sales@acme.example",
    }
    result = await completes(
        client,
        worker.task_queue,
        definition(ai("more", {"task": "enrich", "data": product, "labels": ["office", "garden"]})),
    )
    output = result.output
    assert {k: output[k] for k in product} == product
    assert output["word_count"] == 13, "sales@acme.example counts as three words"
    assert output["category"] == "office"
    assert output["keywords"][:2] == ["red", "widget"]
    assert output["entities"] == {"emails": ["sales@acme.example"]}


async def test_local_translate_is_unsupported(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            ai("fr", {"task": "translate", "text": "hello", "target_language": "fr"}, retry=FAST_RETRY)
        ),
    )
    assert failure.type == "AiUnsupported"
    assert "cannot translate" in failure.error["message"]
    assert failure.step("fr")["attempts"] == 1


# -- OpenAI-compatible provider ----------------------------------------------------------------------------


def _calls(chat: ChatServer, model: str) -> list[dict[str, Any]]:
    return [r for r in chat.requests if r["json"]["model"] == model]


async def test_openai_classify_sends_a_chat_completion(
    client: Client, worker: Worker, chat: ChatServer
) -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"
    handle = await start(
        client,
        worker.task_queue,
        definition(
            ai(
                "sort",
                {
                    "task": "classify",
                    "text": "{{ input.text }}",
                    "labels": {"invoice": ["amount due"], "receipt": []},
                    "provider": "openai",
                    "model": model,
                    "instructions": "Prefer invoice when unsure.",
                },
            )
        ),
        {"text": INVOICE},
    )
    result = await handle.result()
    assert result.output == {
        "label": "invoice",
        "confidence": 0.93,
        "scores": {"invoice": 0.93, "receipt": 0.07},
    }
    [call] = _calls(chat, model)
    assert call["headers"]["authorization"] == f"Bearer {API_KEY}"
    body = call["json"]
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    system = body["messages"][0]["content"]
    assert '["invoice", "receipt"]' in system
    assert "invoice: amount due" in system
    assert "Prefer invoice when unsure." in system
    assert body["messages"][1]["content"] == INVOICE
    [line] = [line for line in await handle.query(DefinitionWorkflow.logs) if "provider" in line.message]
    assert line.metadata["model"] == model
    assert line.metadata["usage"]["total_tokens"] == 60
    assert API_KEY not in json.dumps([r.metadata for r in await handle.query(DefinitionWorkflow.logs)])


async def test_openai_uses_the_settings_model_for_the_other_tasks(
    client: Client, worker: Worker, chat: ChatServer
) -> None:
    before = len(_calls(chat, "default-model"))
    result = await completes(
        client,
        worker.task_queue,
        definition(
            ai(
                "read",
                {
                    "task": "extract",
                    "data": {"doc": "Invoice INV-9"},
                    "fields": ["invoice_number", "total", "po_number"],
                    "provider": "openai",
                },
            ),
            ai("gist", {"task": "summarize", "text": "one two three", "provider": "openai"}),
            ai(
                "fr",
                {
                    "task": "translate",
                    "text": "Hello world",
                    "target_language": "French",
                    "provider": "openai",
                },
            ),
            ai("more", {"task": "enrich", "data": {"title": "Widget"}, "provider": "openai"}),
            output={
                "read": "{{ steps.read.output }}",
                "gist": "{{ steps.gist.output }}",
                "fr": "{{ steps.fr.output }}",
                "more": "{{ steps.more.output }}",
            },
        ),
    )
    assert result.output == {
        "read": {
            "fields": {"invoice_number": "INV-9", "total": 99.5, "po_number": None},
            "missing": ["po_number"],
        },
        "gist": {"summary": "3 words about widgets."},
        "fr": {"text": "Bonjour le monde", "language": "French"},
        "more": {"category": "hardware", "title": "Widget"},
    }
    calls = _calls(chat, "default-model")[before:]
    assert len(calls) == 4
    assert json.loads(calls[0]["json"]["messages"][1]["content"]) == {"doc": "Invoice INV-9"}
    assert "into French" in calls[2]["json"]["messages"][0]["content"]


async def test_openai_429_waits_for_retry_after(client: Client, worker: Worker, chat: ChatServer) -> None:
    model = f"limited-{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    result = await completes(
        client,
        worker.task_queue,
        definition(
            ai(
                "gist",
                {"task": "summarize", "text": "a b", "provider": "openai", "model": model},
                retry=FAST_RETRY,
            )
        ),
    )
    assert time.monotonic() - began >= 0.9, "the 100ms backoff was replaced by the 1s Retry-After"
    assert result.output == {"summary": "2 words about widgets."}
    assert result.steps[0].attempts == 2
    assert chat.counts[model] == 2


async def test_openai_answer_that_is_not_json_is_a_bad_response(
    client: Client, worker: Worker, chat: ChatServer
) -> None:
    before = chat.counts["prose-model"]
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            ai(
                "sort",
                {
                    "task": "classify",
                    "text": "x",
                    "labels": ["invoice"],
                    "provider": "openai",
                    "model": "prose-model",
                },
                retry={**FAST_RETRY, "max_attempts": 2},
            )
        ),
    )
    assert failure.type == "AiBadResponse"
    assert failure.error["message"] == "the model's answer is not JSON"
    assert failure.error["details"] == {"answer": "Sure! The label is invoice."}
    assert failure.step("sort")["attempts"] == 2, "a model may answer better the next time"
    assert chat.counts["prose-model"] == before + 2


async def test_openai_label_outside_the_labels_is_a_bad_response(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            ai(
                "sort",
                {"task": "classify", "text": "x", "labels": ["receipt", "contract"], "provider": "openai"},
                retry={"max_attempts": 1},
            )
        ),
    )
    assert failure.type == "AiBadResponse"
    assert "not one of ['contract', 'receipt']" in failure.error["message"]


async def test_openai_4xx_fails_without_retry(client: Client, worker: Worker, chat: ChatServer) -> None:
    before = chat.counts["missing-model"]
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            ai(
                "gist",
                {"task": "summarize", "text": "x", "provider": "openai", "model": "missing-model"},
                retry=FAST_RETRY,
            )
        ),
    )
    assert failure.type == "AiRequestRejected"
    assert failure.error["details"]["status"] == 404
    assert chat.counts["missing-model"] == before + 1


# -- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("with_", "path", "message"),
    [
        ({"task": "sentiment", "text": "x"}, "$.steps[0].with.task", "Input should be 'classify'"),
        ({"task": "classify", "text": "x"}, "$.steps[0].with", "classify needs 'labels'"),
        ({"task": "translate", "text": "x"}, "$.steps[0].with", "translate needs 'target_language'"),
        ({"task": "summarize"}, "$.steps[0].with", "needs 'text' or 'data'"),
        (
            {"task": "summarize", "text": "x", "fields": ["a"]},
            "$.steps[0].with",
            "'fields' applies only to extract",
        ),
        (
            {"task": "extract", "text": "x", "fields": {"a": "colour"}},
            "$.steps[0].with.fields",
            "Input should be",
        ),
        (
            {"task": "summarize", "text": "x", "provider": "claude"},
            "$.steps[0].with.provider",
            "Input should be",
        ),
        ({"task": "summarize", "text": "x", "max_sentences": 0}, "$.steps[0].with.max_sentences", "greater"),
    ],
)
def test_bad_config_is_rejected_at_validation(with_: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        parse({"name": "ai", "steps": [{"id": "think", "type": "ai_process", "with": with_}]})
    problems = [(p.path, p.message) for p in caught.value.problems]
    assert any(where.startswith(path) and message in text for where, text in problems), problems
