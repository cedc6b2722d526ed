"""The ``ai_process`` activity: picks the provider and records what the call did."""

from __future__ import annotations

from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._retry import jittered_delay
from activities._secrets import with_secrets
from activities.ai.local import LocalProvider
from activities.ai.openai import OpenAiProvider
from activities.ai.provider import AiJob, AiProvider
from core.settings import Settings
from workflows import errors
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import AiProcessConfig, parse_config


class AiActivities:
    """The ``ai_process`` step over the configured providers."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self._settings = settings
        self._providers: dict[str, AiProvider] = {
            "local": LocalProvider(),
            "openai": OpenAiProvider(client, settings),
        }

    @activity.defn(name="ai_process")
    async def ai_process(self, request: StepRequest) -> StepOutcome:
        """Run the step's task (classify, extract, enrich, summarize, translate) through its provider."""
        config = _config(with_secrets(request.config, self._settings.secrets))
        provider = self._providers[config.provider or self._settings.ai_provider]
        timeout = float(config.timeout) if config.timeout is not None else self._settings.ai_timeout_s
        info = activity.info()
        activity.logger.info("%s by the %s provider (attempt %d)", config.task, provider.name, info.attempt)
        answer = await provider.run(
            AiJob(config=config, model=config.model, timeout=timeout, backoff=jittered_delay(request))
        )
        metadata: dict[str, Any] = {"provider": provider.name, "task": config.task}
        if answer.model:
            metadata["model"] = answer.model
        if answer.usage:
            metadata["usage"] = answer.usage
        line = f"{config.task} by the {provider.name} provider" + (
            f" ({answer.model})" if answer.model else ""
        )
        return StepOutcome(
            output=answer.output,
            attempt=info.attempt,
            logs=[{"level": "info", "message": line, "metadata": metadata}],
        )


def _config(values: dict[str, Any]) -> AiProcessConfig:
    try:
        return parse_config(AiProcessConfig, values)
    except ValueError as exc:
        raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None
