"""The step catalog: which step types exist, where they run, and the shape of each one's ``with``.

Config models are checked twice: at validation time on the document (template strings stand in for any
value), and at run time on the rendered values, so an expression that yields the wrong type fails the step
with the field at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workflows.definition import SecondsOrTemplate, json_path

if TYPE_CHECKING:
    from workflows.definition import Step


class StepConfig(BaseModel):
    """Base of every ``with`` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformConfig(StepConfig):
    """``transform``: the step's output is ``value`` with its templates rendered."""

    value: Any


class SetConfig(StepConfig):
    """``set``: every key becomes ``vars.<key>``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _names(self) -> SetConfig:
        for name in self.model_extra or {}:
            if not name.isidentifier():
                raise ValueError(f"{name!r} is not a variable name (letters, digits, _)")
        if not self.model_extra:
            raise ValueError("set needs at least one variable")
        return self


class DelayConfig(StepConfig):
    """``delay``: a durable timer for ``duration``, or until the ISO 8601 time ``until``."""

    duration: SecondsOrTemplate | None = None
    until: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> DelayConfig:
        if (self.duration is None) == (self.until is None):
            raise ValueError("a delay needs exactly one of 'duration' and 'until'")
        return self


class FailConfig(StepConfig):
    """``fail``: end the execution as failed."""

    message: str = "failed by a fail step"
    error_code: str = "FAILED_BY_DEFINITION"


class SucceedConfig(StepConfig):
    """``succeed``: end the execution at once, with ``output`` as its result."""

    output: Any = None


class HttpAuth(StepConfig):
    """Credentials for an outgoing request; values are usually ``{{ secrets.NAME }}``."""

    type: Literal["bearer", "api_key", "basic"]
    token: str | None = None
    header: str = "X-API-Key"
    username: str | None = None
    password: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> HttpAuth:
        needed = {"bearer": ("token",), "api_key": ("token",), "basic": ("username", "password")}[self.type]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.type} auth needs {', '.join(missing)}")
        return self


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class HttpRequestConfig(StepConfig):
    """``http_request`` / ``api_call``: one HTTP request; the output is ``{status, headers, body}``."""

    method: HttpMethod = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)
    body: Any = None
    form: dict[str, Any] | None = None
    auth: HttpAuth | None = None
    timeout: SecondsOrTemplate | None = None
    raise_for_status: bool = True

    @model_validator(mode="before")
    @classmethod
    def _upper_method(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            data = {**data, "method": data["method"].upper()}
        return data


class NotificationConfig(StepConfig):
    """``notification``: a message to a channel (``log`` or ``webhook``)."""

    channel: Literal["log", "webhook"]
    message: str | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"
    url: str | None = None
    payload: Any = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _channel_needs(self) -> NotificationConfig:
        if self.channel == "webhook" and not self.url:
            raise ValueError("the webhook channel needs 'url'")
        if self.channel == "log" and self.message is None:
            raise ValueError("the log channel needs 'message'")
        return self


class NoConfig(StepConfig):
    """Steps configured by structure (``cases``, ``steps``) rather than ``with``."""


C = TypeVar("C", bound=StepConfig)


@dataclass(frozen=True)
class StepType:
    """What the interpreter knows of one step type."""

    config: type[StepConfig]
    activity: str | None = None
    """Activity type that runs it, or None when it runs in the workflow itself."""
    structure: frozenset[str] = frozenset()
    required_structure: frozenset[str] = frozenset()
    extra_roots: frozenset[str] = field(default_factory=frozenset)


STEP_TYPES: dict[str, StepType] = {
    "transform": StepType(TransformConfig),
    "set": StepType(SetConfig),
    "switch": StepType(
        NoConfig, structure=frozenset({"cases", "default"}), required_structure=frozenset({"cases"})
    ),
    "delay": StepType(DelayConfig),
    "fail": StepType(FailConfig),
    "succeed": StepType(SucceedConfig),
    "http_request": StepType(HttpRequestConfig, activity="http_request"),
    "api_call": StepType(HttpRequestConfig, activity="http_request"),
    "notification": StepType(NotificationConfig, activity="notification"),
}


def config_problems(step: Step) -> Iterator[tuple[str, str]]:
    """Problems with a step's ``with`` as written, as (path below ``with``, message)."""
    try:
        STEP_TYPES[step.type].config.model_validate(step.with_)
    except ValidationError as exc:
        for error in exc.errors():
            yield json_path(tuple(error["loc"]))[1:], error["msg"]


def parse_config(model: type[C], rendered: dict[str, Any]) -> C:
    """A step's rendered ``with`` as its config model; raises ``ValueError`` naming the fields at fault."""
    try:
        return model.model_validate(rendered)
    except ValidationError as exc:
        reasons = "; ".join(f"with{json_path(tuple(e['loc']))[1:]}: {e['msg']}" for e in exc.errors())
        raise ValueError(reasons) from None
