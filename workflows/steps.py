"""The step catalog: which step types exist, where they run, and the shape of each one's ``with``.

Config models are checked twice: at validation time on the document (template strings stand in for any
value), and at run time on the rendered values, so an expression that yields the wrong type fails the step
with the field at fault.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workflows import expressions, sql
from workflows.data_ops import NORMALIZERS
from workflows.definition import SAVING, SecondsOrTemplate, TimeoutOrTemplate, json_path, saving

if TYPE_CHECKING:
    from workflows.definition import Step


class StepConfig(BaseModel):
    """Base of every ``with`` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AggregateSpec(StepConfig):
    """``aggregate``: metrics such as ``{"total": {"sum": "price"}, "n": {"count": true}}``, per group."""

    group_by: str | list[str] | None = None
    metrics: dict[str, dict[Literal["sum", "count", "avg", "min", "max"], Any]] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_function_each(self) -> AggregateSpec:
        for name, spec in self.metrics.items():
            if len(spec) != 1:
                raise ValueError(f"metric {name!r} needs exactly one of sum, count, avg, min, max")
        return self


class TransformConfig(StepConfig):
    """``transform``: ``value`` with its templates rendered, or list operations over ``items``.

    The operations apply in this order: ``filter`` (a per-item template), ``fields`` (mapping rules
    ``{target: source path}``), ``map`` (a per-item template tree), ``normalize`` (``{field: [trim, lower,
    number, date, ...]}``), ``aggregate``. ``item`` and ``index`` are bound inside per-item templates.
    """

    value: Any = None
    items: Any = None
    filter: Any = None
    fields: dict[str, str] | None = None
    map: Any = None
    normalize: dict[str, str | list[str]] | None = None
    aggregate: AggregateSpec | None = None

    @model_validator(mode="after")
    def _value_or_items(self) -> TransformConfig:
        operations = ("filter", "fields", "map", "normalize", "aggregate")
        given = "value" in self.model_fields_set
        if given == ("items" in self.model_fields_set):
            raise ValueError("a transform needs exactly one of 'value' and 'items'")
        if given and any(getattr(self, name) is not None for name in operations):
            raise ValueError("list operations (filter, fields, map, normalize, aggregate) need 'items'")
        for target, names in (self.normalize or {}).items():
            for name in [names] if isinstance(names, str) else names:
                if name not in NORMALIZERS:
                    known = ", ".join(sorted(NORMALIZERS))
                    raise ValueError(f"normalize.{target}: unknown operation {name!r}; known: {known}")
        return self


class Rule(StepConfig):
    """One ``validate`` rule."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    rule: Literal["required", "type", "min", "max", "pattern", "one_of", "json_schema"]
    field: str | None = None
    value: float | None = None
    type: Literal["string", "number", "integer", "boolean", "object", "array", "null"] | None = None
    pattern: str | None = None
    values: list[Any] | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    message: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        needs = {"min": "value", "max": "value", "type": "type", "pattern": "pattern", "one_of": "values"}
        if self.rule in needs and getattr(self, needs[self.rule]) is None:
            raise ValueError(f"a {self.rule} rule needs {needs[self.rule]!r}")
        if self.rule == "json_schema":
            if self.json_schema is None:
                raise ValueError("a json_schema rule needs 'schema'")
            try:
                Draft202012Validator.check_schema(self.json_schema)
            except SchemaError as exc:
                raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from None
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        return self


class ValidateConfig(StepConfig):
    """``validate``: check ``items`` (a list or one object) → ``{valid, invalid, errors}``."""

    items: Any
    rules: list[Rule] = Field(min_length=1)
    fail_on_invalid: bool = False


EVENT_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
"""The signal or update names a ``wait`` step waits for."""


class WaitConfig(StepConfig):
    """``wait``: until the signal or update named ``event`` arrives (its payload is the output)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    event: str = Field(pattern=EVENT_NAME)
    timeout: TimeoutOrTemplate | None = None
    """More than 0s: a wait that may not wait is a mistake (a template yielding 0 fails the step)."""
    default: Any = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _schema(self) -> WaitConfig:
        if self.json_schema is not None:
            try:
                Draft202012Validator.check_schema(self.json_schema)
            except SchemaError as exc:
                raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from None
        if self.event in RESERVED_EVENTS:
            raise ValueError(f"{self.event!r} is a control update of every execution; pick another name")
        return self


RESERVED_EVENTS = frozenset({"retry", "skip", "suspend", "resume"})


class EmitConfig(StepConfig):
    """``emit``: publish ``event`` with ``data``; event triggers that match start their definitions."""

    event: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")
    data: Any = None


class EntityConfig(StepConfig):
    """``entity``: create an entity (``fields``) or move one (``id`` and ``target_state``)."""

    action: Literal["create", "transition"]
    entity_type: str
    id: str | None = None
    """create: the new entity's id (default: one derived from the execution and step, stable on retry)."""
    fields: dict[str, Any] = Field(default_factory=dict)
    target_state: str | None = None
    notes: str = ""
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _action_needs(self) -> EntityConfig:
        if self.action == "transition" and (self.id is None or self.target_state is None):
            raise ValueError("a transition needs 'id' and 'target_state'")
        return self


class SubWorkflowConfig(StepConfig):
    """``sub_workflow``: run another definition as a child; its output is this step's output."""

    definition: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    version: int | None = Field(default=None, ge=1)
    input: Any = None


STAGE_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def stage_queue(stage: str) -> str:
    """The task queue a stage's workers poll unless its step names another."""
    return f"stage.{stage}"


class StageConfig(StepConfig):
    """``stage``: a registered stage processor, run by the workers polling the stage's own task queue."""

    stage: str = Field(pattern=STAGE_NAME)
    """The processor's name; written as it is (no template), so the pipeline's stages are known up front."""
    label: str | None = Field(default=None, max_length=80)
    """How people call the stage (``DATA EXTRACTION``); the name when absent."""
    input: Any = None
    """What the processor gets as ``item.data``."""
    blob: str | None = None
    """Key of the item's file in the blob store (an uploaded item's ``{{ input.file.blob }}``)."""
    task_queue: str | None = Field(default=None, pattern=r"^[^{}\s]{1,200}$")
    """A queue other than ``stage.<stage>``; literal too (the stage's workers are started for it)."""
    heartbeat_timeout: TimeoutOrTemplate = 30.0
    """A worker that stops heartbeating this long (it died) loses the item to another worker."""


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

    @field_validator("until")
    @classmethod
    def _iso(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and saving(info) and not expressions.is_template(value):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an ISO 8601 time, e.g. '2030-01-31T09:00:00Z' (or a template)"
                ) from None
        return value

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


WEB_SCHEMES = ("http", "https")


def _web_url(value: Any, info: ValidationInfo) -> Any:
    """Saving: a URL written out is http(s) with a host, and so is the scheme written before a template
    (``file://{{ input.path }}``). A URL a template yields is checked by the outbound guard as it is sent."""
    if not isinstance(value, str) or not saving(info):
        return value
    written = re.split(r"\{[{%]", value, maxsplit=1)[0]
    templated = written != value
    if templated and "://" not in written:
        return value  # the template gives the scheme
    parts = urlsplit(written)
    if parts.scheme.lower() not in WEB_SCHEMES:
        which = f"not {parts.scheme!r}" if parts.scheme else "this one has no scheme"
        raise ValueError(f"must be an http:// or https:// URL, {which}")
    if not templated and not parts.netloc:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _path_below_base_url(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str) and saving(info) and ("://" in value or value.startswith("//")):
        raise ValueError("a path below the connector's base_url, not a URL")
    return value


def _runnable_sql(*, read_only: bool) -> Any:
    """Saving: the SQL is one statement a step runs (the activity parses it again for its connector)."""

    def check(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and saving(info):
            problem = sql.problem_at_save(value, read_only=read_only)
            if problem is not None:
                raise ValueError(problem)
        return value

    return check


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
    timeout: TimeoutOrTemplate | None = None
    raise_for_status: bool = True
    idempotency_key: bool = False
    """Send ``Idempotency-Key: <execution id>/<step id>/<activity id>``: one value per run of the step (a
    loop item is a run), the same on every retry of it, so a receiver that dedupes sees a request sent
    again after a worker died as the same effect."""

    _url = field_validator("url")(_web_url)

    @model_validator(mode="before")
    @classmethod
    def _upper_method(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            data = {**data, "method": data["method"].upper()}
        return data


class NotificationConfig(StepConfig):
    """``notification``: a message to a channel: ``log``, ``webhook``, ``email`` (SMTP) or ``slack``."""

    channel: Literal["log", "webhook", "email", "slack"]
    message: str | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"
    url: str | None = None
    webhook_url: str | None = None
    """Slack's incoming-webhook URL (``url`` works too); usually ``{{ secrets.SLACK_WEBHOOK }}``."""
    payload: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    to: list[str] | str | None = None
    """Email recipients: a list, or one string with addresses separated by commas."""
    subject: str | None = None

    _urls = field_validator("url", "webhook_url")(_web_url)

    @model_validator(mode="after")
    def _channel_needs(self) -> NotificationConfig:
        if self.channel == "webhook" and not self.url:
            raise ValueError("the webhook channel needs 'url'")
        if self.channel in ("log", "email") and self.message is None:
            raise ValueError(f"the {self.channel} channel needs 'message'")
        if self.channel == "email" and not self.to:
            raise ValueError("the email channel needs 'to'")
        if self.channel == "slack":
            if not (self.url or self.webhook_url):
                raise ValueError("the slack channel needs 'webhook_url' (or 'url')")
            if self.message is None and self.payload is None:
                raise ValueError("the slack channel needs 'message' (or a 'payload')")
        return self


def _sql_without_templates(value: Any) -> Any:
    if expressions.is_template(value):
        raise ValueError(
            "SQL cannot be built with templates: write :name placeholders in the SQL and put the values "
            "in 'params' (templates are allowed there), e.g. sql: 'select * from t where id = :id', "
            "params: {id: '{{ input.id }}'}"
        )
    return value


def _template_or(kind: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and not expressions.is_template(value):
            raise ValueError(f"expected {kind}, or a {{{{ template }}}} that yields one")
        return value

    return check


class DatabaseQueryConfig(StepConfig):
    """``database_query``: one parameterised SQL statement on a named connector.

    A select answers ``{rows, row_count}``; a write (on a connector that allows writes) ``{row_count}``.
    """

    connector: str = Field(min_length=1)
    sql: str = Field(min_length=1)
    params: dict[str, Any] | str = Field(default_factory=dict)
    """Values of the statement's ``:name`` placeholders; templates allowed."""
    params_each: list[dict[str, Any]] | str | None = None
    """Run the statement once per item (executemany), each item merged over ``params``."""
    max_rows: int = Field(default=1000, ge=1, le=100_000)

    _sql = field_validator("sql", mode="before")(_sql_without_templates)
    _runnable = field_validator("sql")(_runnable_sql(read_only=False))
    _params = field_validator("params", mode="before")(_template_or("an object"))
    _params_each = field_validator("params_each", mode="before")(_template_or("a list of objects"))


class FetchPaging(StepConfig):
    """A step's paging overrides of its connector's ``paging``."""

    max_pages: int | None = Field(default=None, ge=1, le=1000)
    page_size: int | None = Field(default=None, ge=1)
    style: Literal["page", "cursor", "none"] | None = None


class DataFetchConfig(StepConfig):
    """``data_fetch``: read from a connector with paging; the output is ``{items, pages}``.

    For an HTTP connector: ``path`` below its base URL, ``query``, ``method``, ``body`` and ``items``, a
    dotted path to the list in each response body. For a SQL connector: ``query`` (or ``sql``) is a select
    with ``:name`` placeholders and ``params``.
    """

    connector: str = Field(min_length=1)
    path: str = ""
    method: HttpMethod = "GET"
    query: dict[str, Any] | str | None = None
    sql: str | None = None
    params: dict[str, Any] | str = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    items: str | None = None
    paging: FetchPaging = FetchPaging()
    max_items: int = Field(default=10_000, ge=1, le=1_000_000)
    timeout: TimeoutOrTemplate | None = None

    _sql = field_validator("sql", "query", mode="before")(_sql_without_templates)
    _runnable = field_validator("sql", "query")(_runnable_sql(read_only=True))
    _path = field_validator("path")(_path_below_base_url)
    _params = field_validator("params", mode="before")(_template_or("an object"))

    @model_validator(mode="before")
    @classmethod
    def _upper_method(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            data = {**data, "method": data["method"].upper()}
        return data

    @model_validator(mode="after")
    def _one_query(self) -> DataFetchConfig:
        if self.sql is not None and isinstance(self.query, str):
            raise ValueError("give the SQL in 'sql' or in 'query', not both")
        return self


_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def host_and_port(entry: str) -> tuple[str, int | None]:
    """``api.example.com`` or ``api.example.com:8443`` (``[2001:db8::1]:443``) as (lowercase host, port)."""
    problem = ValueError(f"{entry!r} is not a host or host:port (e.g. api.example.com:8443)")
    try:
        parts = urlsplit(f"//{entry}")
    except ValueError:
        raise problem from None
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc or not parts.hostname:
        raise problem
    host = parts.hostname.removesuffix(".")
    if ":" in host:
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise problem from None
    elif not _HOST_NAME.fullmatch(host):
        raise problem
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return host, port


def _host_or_template(entry: str) -> str:
    if not expressions.is_template(entry):
        host_and_port(entry)
    return entry


class CustomCodeConfig(StepConfig):
    """``custom_code``: Python source run in a separate, limited process; JSON in, JSON out.

    The code defines ``def main(input)`` and its return value is the output, or sets a global ``result``.
    """

    code: str = Field(min_length=1)
    input: Any = None
    timeout: SecondsOrTemplate = 10.0
    memory_mb: int = Field(default=256, ge=32, le=8192)
    max_output_bytes: int = Field(default=1_000_000, ge=1, le=1_000_000)
    allow_hosts: list[Annotated[str, AfterValidator(_host_or_template)]] = Field(
        default_factory=list, max_length=50
    )
    """What the code may reach over HTTP(S), through the worker's proxy and the outbound guard: ``host``
    (ports 80 and 443) or ``host:port``. Empty: no network at all."""

    @field_validator("code")
    @classmethod
    def _compiles(cls, code: str) -> str:
        # A template is only code once rendered; the run-time check of the rendered config compiles it then.
        # compile() only parses: nothing of the user's code runs here.
        if not expressions.is_template(code):
            try:
                compile(code, "<custom_code>", "exec", dont_inherit=True)
            except SyntaxError as exc:
                raise ValueError(f"code does not compile (line {exc.lineno}): {exc.msg}") from None
            except ValueError as exc:
                raise ValueError(f"code does not compile: {exc}") from None
        return code

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, timeout: float | str) -> float | str:
        if isinstance(timeout, float) and not 0 < timeout <= 3600:
            raise ValueError("timeout must be more than 0s and at most 1h")
        return timeout


AiTask = Literal["classify", "extract", "enrich", "summarize", "translate"]
AiFieldType = Literal["string", "number", "integer", "boolean", "date", "email", "list"]


class AiProcessConfig(StepConfig):
    """``ai_process``: one AI task over ``text`` or ``data``, by a local or an OpenAI-compatible provider."""

    task: AiTask
    text: Any = None
    data: Any = None
    labels: list[str] | dict[str, list[str]] | None = None
    """classify: the labels, or label -> keywords that count for it."""
    fields: list[str] | dict[str, AiFieldType] | None = None
    """extract: the field names, or name -> type; without it, every field the provider recognises."""
    target_language: str | None = None
    source_language: str | None = None
    max_sentences: int = Field(default=3, ge=1, le=50)
    instructions: str | None = None
    provider: Literal["local", "openai"] | None = None
    model: str | None = None
    timeout: TimeoutOrTemplate | None = None

    @model_validator(mode="after")
    def _task_needs(self) -> AiProcessConfig:
        if self.text is None and self.data is None:
            raise ValueError("ai_process needs 'text' or 'data'")
        if self.task == "classify" and not self.labels:
            raise ValueError("classify needs 'labels'")
        if self.task == "translate" and not self.target_language:
            raise ValueError("translate needs 'target_language'")
        for name, task in (("fields", "extract"), ("target_language", "translate")):
            if getattr(self, name) is not None and self.task != task:
                raise ValueError(f"'{name}' applies only to {task}, not {self.task}")
        if self.labels is not None and self.task not in {"classify", "enrich"}:
            raise ValueError(f"'labels' applies only to classify and enrich, not {self.task}")
        return self

    @property
    def content(self) -> Any:
        """What the task works on: ``text`` when given, else ``data``."""
        return self.text if self.text is not None else self.data


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
    lazy: frozenset[str] = frozenset()
    """``with`` keys rendered per item by the step itself rather than once before it runs."""


STEP_TYPES: dict[str, StepType] = {
    "transform": StepType(TransformConfig, lazy=frozenset({"filter", "map"})),
    "validate": StepType(ValidateConfig),
    "foreach": StepType(
        NoConfig,
        structure=frozenset({"items", "parallelism", "max_items", "batch_size", "on_item_error", "steps"}),
        required_structure=frozenset({"items", "steps"}),
    ),
    "parallel": StepType(
        NoConfig, structure=frozenset({"branches", "fail_fast"}), required_structure=frozenset({"branches"})
    ),
    "wait": StepType(WaitConfig, structure=frozenset({"on_timeout"})),
    "sub_workflow": StepType(SubWorkflowConfig),
    "emit": StepType(EmitConfig, activity="emit"),
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
    "database_query": StepType(DatabaseQueryConfig, activity="database_query"),
    "data_fetch": StepType(DataFetchConfig, activity="data_fetch"),
    "custom_code": StepType(CustomCodeConfig, activity="custom_code"),
    "ai_process": StepType(AiProcessConfig, activity="ai_process"),
    "stage": StepType(StageConfig, activity="stage"),
    "entity": StepType(EntityConfig, activity="entity"),
}


def config_problems(step: Step) -> Iterator[tuple[str, str]]:
    """Problems with a step's ``with`` as written, as (path below ``with``, message)."""
    try:
        STEP_TYPES[step.type].config.model_validate(step.with_, context=SAVING)
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
