"""Typed settings, read once from ``CONVEYOR_*`` environment variables and an optional ``.env`` file."""

from __future__ import annotations

import json
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class AuthMode(StrEnum):
    """Whether the API checks API keys."""

    ON = "on"
    OFF = "off"


class Settings(BaseSettings):
    """Everything Conveyor can be configured with; each field is ``CONVEYOR_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_", env_file=".env", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///.data/conveyor.db",
        description="SQLAlchemy URL of the store: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    temporal_address: str = Field(default="localhost:7233", description="Temporal frontend host:port")
    temporal_namespace: str = Field(default="default", description="Temporal namespace")
    task_queue: str = Field(
        default="conveyor", description="Task queue of the interpreter and its activities"
    )
    stage_modules: list[str] = Field(
        default=["examples.pipelines.documents", "examples.pipelines.products"],
        description="Modules whose import registers stage processors (JSON list); stage workers load them",
    )
    max_upload_bytes: int = Field(
        default=25_000_000, description="Largest file a pipeline item upload accepts"
    )

    auth: AuthMode = Field(
        default=AuthMode.ON, description="API key checks; 'off' only for local development"
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, description="An admin API key stored (hashed) at start, to create the first keys with"
    )

    api_host: str = Field(default="127.0.0.1", description="Address the API listens on")
    api_port: int = Field(default=8000, description="Port the API listens on")
    temporal_port: int = Field(default=7233, description="Port of the dev server started by `make run`")
    temporal_ui_port: int = Field(
        default=8233, description="Web UI port of the dev server started by `make run`"
    )
    data_dir: Path = Field(default=Path(".data"), description="Where `make run` keeps its files")
    examples_dir: Path | None = Field(
        default=None, description="Definitions in this folder are created and published when the API starts"
    )
    migrate_on_start: bool = Field(default=True, description="Apply database migrations when the API starts")

    blob_dir: Path = Field(
        default=Path(".data/blobs"),
        description="Blob store for large payloads; API and workers must share it",
    )
    payload_ref_bytes: int = Field(
        default=256 * 1024, description="Payloads larger than this travel through Temporal by reference"
    )
    secrets_file: Path | None = Field(
        default=None,
        description="More secrets: a JSON object or NAME=value lines (the environment wins on a clash)",
    )
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Values for {{ secrets.NAME }}, resolved inside activities only (CONVEYOR_SECRETS__NAME)",
    )
    http_timeout_s: float = Field(default=30.0, description="Default timeout of http_request and webhooks")
    http_max_response_bytes: int = Field(default=5_000_000, description="Largest response body a step keeps")
    max_request_bytes: int = Field(default=1_000_000, description="Largest request body the API accepts")
    outbound_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs, addresses or host names outbound HTTP may reach although not public "
        "(comma-separated; e.g. 127.0.0.1,10.0.0.0/8 for local development)",
    )
    custom_code_unsandboxed: Literal["refuse", "allow"] = Field(
        default="refuse",
        description="'allow' runs custom_code without a sandbox where bubblewrap is missing or not permitted "
        "(the code can then read and reach what the worker can); 'refuse' fails those steps",
    )
    custom_code_bwrap: str = Field(
        default="bwrap", description="The bubblewrap program custom_code runs in: a name on PATH or a path"
    )
    payload_encryption_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="AES-256-GCM keys by key id, base64 of 32 bytes "
        "(CONVEYOR_PAYLOAD_ENCRYPTION_KEYS__<ID>); set to encrypt every payload Conveyor stores in Temporal",
    )
    payload_encryption_key_id: str | None = Field(
        default=None,
        description="Id of the key new payloads are encrypted with (default: the only key); the others "
        "still decrypt, so keys can rotate",
    )
    secret_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="AES-256-GCM keys by key id, base64 of 32 bytes (CONVEYOR_SECRET_KEYS__<ID>), that "
        "connector credentials and webhook secrets are stored encrypted with; required by the API and the "
        "main worker",
    )
    secret_key_id: str | None = Field(
        default=None,
        description="Id of the key secrets are sealed with (default: the only key); the API reseals every "
        "stored secret under it at start, the others still open, so keys can rotate",
    )
    temporal_ui_origin: str | None = Field(
        default=None,
        description="Origin of the Temporal Web UI (e.g. http://localhost:8233), the only one CORS lets "
        "call the codec endpoint",
    )
    max_wait_s: float = Field(default=60.0, description="Longest `wait` a start request may ask for")

    ai_provider: Literal["local", "openai"] = Field(
        default="local", description="Provider of ai_process steps that name none: local rules or openai"
    )
    ai_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="Base URL of the OpenAI-compatible API (POST {base}/chat/completions)",
    )
    ai_model: str = Field(default="gpt-4o-mini", description="Model of ai_process steps that name none")
    ai_api_key: SecretStr | None = Field(
        default=None, description="Bearer key for the OpenAI-compatible API (unset: no Authorization)"
    )
    ai_timeout_s: float = Field(default=60.0, gt=0, description="Default timeout of one AI provider call")

    webhook_max_body_bytes: int = Field(
        default=1_000_000, ge=1, description="Largest webhook body /hooks/{id} reads (413 beyond)"
    )
    webhook_dedupe_ttl_s: int = Field(
        default=30 * 86_400, ge=60, description="How long a webhook delivery id is remembered in SQL"
    )
    webhook_secret_overlap_s: int = Field(
        default=86_400, ge=0, description="How long a rotated-out webhook secret stays valid"
    )

    smtp_host: str | None = Field(
        default=None, description="SMTP server of the email notification channel (unset: email is off)"
    )
    smtp_port: int = Field(default=25, description="Port of the SMTP server")
    smtp_username: str | None = Field(default=None, description="SMTP login, when the server wants one")
    smtp_password: SecretStr | None = Field(default=None, description="Password of the SMTP login")
    smtp_from: str = Field(default="conveyor@localhost", description="Sender address of notification emails")
    smtp_starttls: bool = Field(default=False, description="Upgrade the SMTP connection with STARTTLS")

    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines for people (text) or one JSON object per line (json)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level of log lines the API and workers print"
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL for traces (unset: OTEL_EXPORTER_OTLP_ENDPOINT, else off)",
    )
    worker_metrics_address: str | None = Field(
        default=None, description="host:port where a worker serves Prometheus metrics (unset: off)"
    )

    @field_validator("outbound_allow", mode="before")
    @classmethod
    def _split_allow(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _read_secrets_file(self) -> Settings:
        if self.secrets_file is not None:
            from_file = _secrets_from(self.secrets_file)
            self.secrets = {**from_file, **self.secrets}
        return self


def _secrets_from(path: Path) -> dict[str, SecretStr]:
    """Secrets in a JSON object or ``NAME=value`` lines; names are matched without regard to case."""
    text = path.read_text()
    if text.lstrip().startswith("{"):
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a secrets file in JSON is one object of NAME: value")
        return {str(k).lower(): SecretStr(str(v)) for k, v in values.items()}
    pairs: dict[str, SecretStr] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{path}:{number}: expected NAME=value")
        pairs[name.strip().lower()] = SecretStr(value.strip().strip('"').strip("'"))
    return pairs


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return Settings()
