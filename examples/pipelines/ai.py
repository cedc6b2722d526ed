"""Run one ``ai_process`` task from a stage processor, through the same providers as the ``ai_process`` step.

The provider is the configured one (``CONVEYOR_AI_PROVIDER``): the built-in local rules by default, the
OpenAI-compatible API when set to ``openai`` — exactly as an ``ai_process`` step that names no provider.
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError

from activities.ai.local import LocalProvider
from activities.ai.openai import OpenAiProvider
from activities.ai.provider import AiJob
from core.settings import Settings
from core.ssrf import outbound_client
from workflows import errors
from workflows.steps import AiProcessConfig, parse_config


async def run_task(settings: Settings, **values: Any) -> dict[str, Any]:
    """The task's output (``{label, confidence, scores}`` for classify, ``{fields, missing}`` for extract, the
    enriched record for enrich); ``values`` are an ``ai_process`` step's ``with``."""
    try:
        config = parse_config(AiProcessConfig, values)
    except ValueError as exc:
        raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None
    timeout = float(config.timeout) if config.timeout is not None else settings.ai_timeout_s
    job = AiJob(config=config, model=config.model, timeout=timeout)
    if (config.provider or settings.ai_provider) == "openai":
        async with outbound_client(settings) as client:
            return (await OpenAiProvider(client, settings).run(job)).output
    return (await LocalProvider().run(job)).output
