"""``ai_process``: classify, extract, enrich, summarize and translate through a provider.

Providers implement :class:`AiProvider`: the built-in :class:`LocalProvider` (rules, offline) and
:class:`OpenAiProvider` (any OpenAI-compatible chat-completions endpoint).
"""

from activities.ai.activity import AiActivities
from activities.ai.local import LocalProvider
from activities.ai.openai import OpenAiProvider
from activities.ai.provider import AiAnswer, AiJob, AiProvider

__all__ = ["AiActivities", "AiAnswer", "AiJob", "AiProvider", "LocalProvider", "OpenAiProvider"]
