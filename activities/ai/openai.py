"""An OpenAI-compatible chat-completions provider (OpenAI, Azure-style gateways, vLLM, Ollama, LiteLLM...).

The model is asked for one JSON object of the task's shape (``response_format: json_object``) and the answer
is checked against that shape. 429 retries after the server's Retry-After; 5xx, timeouts and connection
errors retry with backoff; other 4xx do not retry; an answer of the wrong shape is ``AiBadResponse``, retried,
as a model may answer better the next time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError

from activities.ai.provider import AiAnswer, AiJob, enriched, field_types, label_keywords
from core.settings import Settings
from workflows import errors
from workflows.steps import AiProcessConfig

_EXCERPT = 500
_SYSTEM = (
    "You are a data-processing function inside a workflow engine. Answer with exactly one JSON object and "
    "nothing else. "
)


class OpenAiProvider:
    """Chat completions at ``CONVEYOR_AI_BASE_URL`` with ``CONVEYOR_AI_API_KEY``."""

    name = "openai"

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    async def run(self, job: AiJob) -> AiAnswer:
        """Ask the model for the task's JSON and return it in the task's output shape."""
        config = job.config
        model = job.model or self._settings.ai_model
        headers = {}
        if self._settings.ai_api_key is not None:
            headers["Authorization"] = f"Bearer {self._settings.ai_api_key.get_secret_value()}"
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": _SYSTEM + _instructions(config)},
                {"role": "user", "content": _user_content(config.content)},
            ],
            "response_format": {"type": "json_object"},
            "temperature": 0,
        }
        url = f"{self._settings.ai_base_url.rstrip('/')}/chat/completions"
        try:
            response = await self._client.post(url, json=body, headers=headers, timeout=job.timeout)
        except httpx.TimeoutException as exc:
            raise ApplicationError(
                f"the AI provider did not answer within {job.timeout:g}s",
                type=errors.AI_PROVIDER_ERROR,
                next_retry_delay=job.backoff,
            ) from exc
        except httpx.TransportError as exc:
            raise ApplicationError(
                f"the AI provider cannot be reached: {exc}",
                type=errors.AI_PROVIDER_ERROR,
                next_retry_delay=job.backoff,
            ) from exc
        _raise_for_status(response, job.backoff)
        answer, usage = _answer(response)
        return AiAnswer(_output(config, answer), model=model, usage=usage)


def _instructions(config: AiProcessConfig) -> str:
    task = config.task
    if task == "classify":
        labels = label_keywords(config)
        hints = "; ".join(f"{label}: {', '.join(words)}" for label, words in labels.items() if words)
        text = (
            f"Classify the input into exactly one of these labels: {json.dumps(list(labels))}. "
            + (f"Keywords that suggest a label: {hints}. " if hints else "")
            + 'Answer {"label": <one of the labels>, "confidence": <0 to 1>, '
            '"scores": {<each label>: <0 to 1>}}.'
        )
    elif task == "extract":
        fields = field_types(config)
        wanted = (
            ", ".join(f"{name} ({kind})" if kind else name for name, kind in fields.items())
            if fields
            else "every field you can identify (invoice_number, total, currency, dates, emails, ...)"
        )
        text = (
            f"Extract these fields from the input: {wanted}. Use null for a field the input does not hold; "
            'dates as YYYY-MM-DD, amounts as numbers. Answer {"fields": {<field>: <value>}}.'
        )
    elif task == "summarize":
        text = (
            f"Summarize the input in at most {config.max_sentences} sentence(s), in its own language. "
            'Answer {"summary": <text>}.'
        )
    elif task == "translate":
        source = f" from {config.source_language}" if config.source_language else ""
        text = (
            f"Translate the input text{source} into {config.target_language}, keeping its meaning and tone. "
            'Answer {"text": <translation>}.'
        )
    else:
        text = (
            "Enrich the input record with useful derived fields (for example category, keywords, normalized "
            'names, attributes) without repeating its own fields. Answer {"fields": {<new field>: <value>}}.'
        )
    if config.instructions:
        text += f" Further instructions: {config.instructions}"
    return text


def _user_content(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)


def _raise_for_status(response: httpx.Response, backoff: timedelta | None) -> None:
    status = response.status_code
    if status < 400:
        return
    details = {"status": status, "body": response.text[:_EXCERPT]}
    if status == 429:
        delay = _retry_after(response.headers.get("retry-after"))
        after = f", retry after {delay.total_seconds():g}s" if delay else ""
        raise ApplicationError(
            f"the AI provider rate-limited the call (429){after}",
            details,
            type=errors.RATE_LIMITED,
            next_retry_delay=delay or backoff,
        )
    if status >= 500:
        raise ApplicationError(
            f"the AI provider failed ({status})",
            details,
            type=errors.AI_PROVIDER_ERROR,
            next_retry_delay=backoff,
        )
    raise ApplicationError(
        f"the AI provider refused the request ({status})",
        details,
        type=errors.AI_REQUEST_REJECTED,
        non_retryable=True,
    )


def _retry_after(value: str | None) -> timedelta | None:
    if not value:
        return None
    if value.strip().isdigit():
        return timedelta(seconds=int(value.strip()))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return timedelta(seconds=max((when - datetime.now(UTC)).total_seconds(), 0))


def _bad(message: str, content: Any = None) -> ApplicationError:
    excerpt = content if content is None or len(str(content)) <= _EXCERPT else str(content)[:_EXCERPT] + "…"
    return ApplicationError(message, {"answer": excerpt}, type=errors.AI_BAD_RESPONSE)


def _answer(response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON object the model answered with, and the call's token usage."""
    try:
        body = response.json()
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _bad("the AI provider's response is not a chat completion", response.text) from None
    if not isinstance(content, str):
        raise _bad("the model's answer has no text content", content)
    try:
        answer = json.loads(content)
    except ValueError:
        raise _bad("the model's answer is not JSON", content) from None
    if not isinstance(answer, dict):
        raise _bad("the model's answer is not a JSON object", content)
    usage = body.get("usage") if isinstance(body, dict) else None
    return answer, usage if isinstance(usage, dict) else {}


def _output(config: AiProcessConfig, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer in the task's output shape, or ``AiBadResponse`` when it does not have that shape."""
    task = config.task
    if task == "classify":
        labels = {label.lower(): label for label in label_keywords(config)}
        label = answer.get("label")
        if not isinstance(label, str) or label.lower() not in labels:
            raise _bad(f"the model's label is not one of {sorted(labels.values())}", answer)
        raw_scores = answer.get("scores")
        scores = {
            labels[str(k).lower()]: float(v)
            for k, v in (raw_scores.items() if isinstance(raw_scores, dict) else ())
            if str(k).lower() in labels and isinstance(v, int | float) and not isinstance(v, bool)
        }
        confidence = answer.get("confidence", scores.get(labels[label.lower()], 1.0))
        if not isinstance(confidence, int | float) or isinstance(confidence, bool):
            raise _bad("the model's confidence is not a number", answer)
        return {"label": labels[label.lower()], "confidence": float(confidence), "scores": scores}
    if task == "extract":
        fields = answer.get("fields", answer)
        if not isinstance(fields, dict):
            raise _bad("the model's fields are not an object", answer)
        wanted = field_types(config)
        values = {name: fields.get(name) for name in wanted} if wanted else fields
        return {"fields": values, "missing": [name for name, value in values.items() if value is None]}
    if task == "summarize":
        summary = answer.get("summary")
        if not isinstance(summary, str):
            raise _bad("the model's answer has no summary text", answer)
        return {"summary": summary}
    if task == "translate":
        text = answer.get("text")
        if not isinstance(text, str):
            raise _bad("the model's answer has no translated text", answer)
        return {"text": text, "language": config.target_language}
    added = answer.get("fields", answer)
    if not isinstance(added, dict):
        raise _bad("the model's fields are not an object", answer)
    return enriched(config.content, added)
