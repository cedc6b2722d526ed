"""The definition document as a tree of frozen models, and its validation with JSON paths.

Pure code: the API validates documents with it and the interpreter parses its snapshot with it, so a
document the API accepted is exactly the document the workflow runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from workflows import expressions
from workflows.durations import MAX_SECONDS, format_duration, parse_duration

SAVING: Mapping[str, Any] = {"saving": True}
"""Validation context of a document being validated or saved (:func:`parse`, :func:`config_problems`).

Some checks of values written literally run only then: an execution parses its snapshot, and each step's
rendered ``with``, without this context, so a check added later never changes what an execution that
started before it does. Rendered values those checks would have refused fail in the step itself (the
interpreter's duration checks, the outbound guard of HTTP steps, the SQL activity's parser)."""


MAX_TEMPLATE_TEXT = 100_000
"""Characters of template source in one document, all templates together. Validating compiles every template,
at up to about 25 µs a character; past the cap the rest are not compiled and the document is refused."""


def saving(info: ValidationInfo) -> bool:
    """Whether a validator runs on a document being saved (see :data:`SAVING`)."""
    return bool(info.context and info.context.get("saving"))


def _duration(value: Any, info: ValidationInfo, *, positive: bool = False) -> float:
    seconds = parse_duration(value)
    if saving(info):
        if seconds > MAX_SECONDS:
            raise ValueError(f"{value!r} is longer than {format_duration(MAX_SECONDS)} (ten years)")
        if positive and seconds == 0:
            raise ValueError("a timeout must be more than 0s; leave it out for the default")
    return seconds


def _seconds(value: Any, info: ValidationInfo) -> float:
    return _duration(value, info)


def _timeout(value: Any, info: ValidationInfo) -> float:
    return _duration(value, info, positive=True)


def _seconds_or_template(value: Any, info: ValidationInfo) -> Any:
    return value if expressions.is_template(value) else _duration(value, info)


def _timeout_or_template(value: Any, info: ValidationInfo) -> Any:
    return value if expressions.is_template(value) else _duration(value, info, positive=True)


Seconds = Annotated[float, BeforeValidator(_seconds)]
"""A duration of at most ten years (``30s``, ``1h30m``, or seconds)."""
Timeout = Annotated[float, BeforeValidator(_timeout)]
"""A duration that bounds something, so more than 0s: a timeout of nothing would never let it run."""
SecondsOrTemplate = Annotated[float | str, BeforeValidator(_seconds_or_template)]
"""A duration, or a template rendered to one when the step runs."""
TimeoutOrTemplate = Annotated[float | str, BeforeValidator(_timeout_or_template)]
"""A timeout, or a template rendered to one when the step runs."""
StepId = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""What names a definition, a connector, a stage: lower-case letters, digits, ``_`` and ``-``."""
Slug = Annotated[str, Field(pattern=SLUG)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RetrySpec(_Frozen):
    """How an activity step is retried (Temporal RetryPolicy)."""

    max_attempts: int = Field(default=3, ge=1, le=100)
    initial_interval: Seconds = 1.0
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    max_interval: Seconds = 60.0
    non_retryable: tuple[str, ...] = ()


class Defaults(_Frozen):
    """Settings every step inherits unless it sets its own."""

    timeout: Timeout = 30.0
    retry: RetrySpec = RetrySpec()


class FailurePolicy(_Frozen):
    """What happens when a step fails for good (after its own retries).

    System errors are retried as a whole execution after each of ``retries`` (RETRYING -> QUEUED); data
    errors are not. Then the execution is parked in SUSPENDED for an operator (``retry``, ``skip``,
    ``cancel``), or fails at once when ``suspend`` is false. A ``fail`` step always fails at once.
    """

    suspend: bool = True
    retries: tuple[Seconds, ...] = (60.0, 120.0, 240.0)


OnLimit = Literal["queue", "cancel_new", "cancel_oldest", "skip"]


class Limits(_Frozen):
    """Bounds on a whole execution, and admission: how many executions of the definition run at once
    (``max_concurrent``) and start per rolling minute (``per_minute``), per ``key`` when it is given.

    ``on_limit`` says what a new execution does when a limit is reached: ``queue`` (wait in QUEUED, first
    come first served), ``cancel_new`` (it ends CANCELLED), ``cancel_oldest`` (the oldest running one is
    cancelled and the new one runs; a rate limit still queues it) or ``skip`` (it ends COMPLETED with
    output ``{"skipped": true, "reason": ...}`` and runs no step).
    """

    timeout: Timeout | None = None
    max_concurrent: int | None = Field(default=None, ge=1)
    per_minute: int | None = Field(default=None, ge=1)
    key: str | None = Field(default=None, min_length=1, max_length=500)
    """A template (``{{ input.supplier_id }}``): executions with the same value share one lane."""
    on_limit: OnLimit = "queue"

    @model_validator(mode="after")
    def _admission_needs_a_limit(self) -> Limits:
        admits = self.max_concurrent is not None or self.per_minute is not None
        if not admits and (self.key is not None or "on_limit" in self.model_fields_set):
            raise ValueError("'key' and 'on_limit' need 'max_concurrent' or 'per_minute'")
        if self.on_limit == "cancel_oldest" and self.max_concurrent is None:
            raise ValueError("on_limit 'cancel_oldest' needs 'max_concurrent'")
        return self


def _on_error_kind(value: Any) -> str:
    return "<fallback>" if isinstance(value, list) else "<mode>"


OnError = Annotated[
    Annotated[Literal["fail", "continue"], Tag("<mode>")] | Annotated[tuple["Step", ...], Tag("<fallback>")],
    Discriminator(_on_error_kind),
]


class Case(_Frozen):
    """One branch of a ``switch``: its steps run when ``when`` is true."""

    when: str | bool
    steps: tuple[Step, ...] = Field(min_length=1)


class Step(_Frozen):
    """One step. ``type`` picks what it does; ``with`` configures it; the rest is flow control."""

    id: StepId
    type: str
    name: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | bool | None = None
    depends_on: tuple[StepId, ...] | None = None
    timeout: Timeout | None = None
    retry: RetrySpec | None = None
    optional: bool = False
    on_error: OnError = "fail"
    output: Any = None
    cases: tuple[Case, ...] | None = None
    default: tuple[Step, ...] | None = None
    items: Any = None
    parallelism: int | None = Field(default=None, ge=1, le=1000)
    max_items: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1, le=1000)
    on_item_error: Literal["fail", "continue"] | None = None
    steps: tuple[Step, ...] | None = Field(default=None, min_length=1)
    branches: dict[str, tuple[Step, ...]] | None = None
    fail_fast: bool | None = None
    on_timeout: OnError | None = None

    def children(self) -> Iterator[tuple[str, tuple[Step, ...]]]:
        """Nested step lists with their path below this step."""
        for i, case in enumerate(self.cases or ()):
            yield f"cases[{i}].steps", case.steps
        if self.default:
            yield "default", self.default
        if self.steps:
            yield "steps", self.steps
        for name, branch in (self.branches or {}).items():
            yield f"branches.{name}", branch
        if isinstance(self.on_timeout, tuple):
            yield "on_timeout", self.on_timeout
        if isinstance(self.on_error, tuple):
            yield "on_error", self.on_error


class Definition(_Frozen):
    """A whole workflow definition as a user writes it."""

    name: Slug
    description: str | None = None
    input: dict[str, Any] | None = Field(default=None, description="JSON Schema of the execution input")
    vars: dict[str, Any] = Field(default_factory=dict)
    defaults: Defaults = Defaults()
    limits: Limits = Limits()
    failure: FailurePolicy = FailurePolicy()
    steps: tuple[Step, ...] = Field(min_length=1)
    on_error: tuple[Step, ...] = ()
    output: Any = None

    @model_validator(mode="before")
    @classmethod
    def _document_is_object(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError("a definition is an object with at least 'name' and 'steps'")
        return data

    def all_steps(self) -> Iterator[tuple[str, Step]]:
        """Every step, nested ones included, with its JSON path."""
        yield from _walk(self.steps, "$.steps")
        yield from _walk(self.on_error, "$.on_error")


def _walk(steps: tuple[Step, ...], path: str) -> Iterator[tuple[str, Step]]:
    for i, step in enumerate(steps):
        here = f"{path}[{i}]"
        yield here, step
        for sub, children in step.children():
            yield from _walk(children, f"{here}.{sub}")


STRUCTURE_FIELDS = (
    "cases",
    "default",
    "items",
    "parallelism",
    "max_items",
    "batch_size",
    "on_item_error",
    "steps",
    "branches",
    "fail_fast",
    "on_timeout",
)
"""Step keys that only some step types take (``StepType.structure`` says which)."""


class Problem(BaseModel):
    """One thing wrong with a document, at a JSON path."""

    path: str
    message: str


class DefinitionInvalid(Exception):
    """A document that is not a valid definition; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


def json_path(loc: tuple[int | str, ...]) -> str:
    """``('steps', 2, 'with', 'url')`` as ``$.steps[2].with.url`` (union tags left out)."""
    path = "$"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith("<") and "[" not in part and part not in {"str", "bool"}:
            path += f".{part}"
    return path


def parse(document: Any) -> Definition:
    """The definition in ``document``, or :class:`DefinitionInvalid` listing every problem."""
    definition = _validated(document, SAVING)
    problems = list(_semantic_problems(definition))
    if problems:
        raise DefinitionInvalid(problems)
    return definition


def parse_structure(document: Any) -> Definition:
    """The document's model without the semantic and save-time checks of :func:`parse`.

    The interpreter uses this on snapshots the API validated when they were saved: checks added to the
    validator later must not break executions of definitions that were valid when they started.
    """
    return _validated(document, None)


def _validated(document: Any, context: Mapping[str, Any] | None) -> Definition:
    try:
        return Definition.model_validate(document, context=context)
    except ValidationError as exc:
        raise DefinitionInvalid(
            [Problem(path=json_path(tuple(e["loc"])), message=e["msg"]) for e in _real_errors(exc)]
        ) from None


def _real_errors(exc: ValidationError) -> list[Any]:
    """Pydantic's errors minus a list's ``too_short`` that only counts items which failed themselves."""
    errors = exc.errors()
    below = [tuple(e["loc"]) for e in errors]
    return [
        e
        for e in errors
        if e["type"] != "too_short"
        or not any(len(loc) > len(e["loc"]) and loc[: len(e["loc"])] == tuple(e["loc"]) for loc in below)
    ]


def content_hash(document: Mapping[str, Any]) -> str:
    """Digest of a document's content, independent of key order and formatting."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _semantic_problems(definition: Definition) -> Iterator[Problem]:
    from workflows.steps import STEP_TYPES, config_problems

    steps = list(definition.all_steps())
    ids: dict[str, str] = {}
    for path, step in steps:
        if step.id in ids:
            yield Problem(
                path=f"{path}.id", message=f"duplicate step id {step.id!r} (first at {ids[step.id]})"
            )
        else:
            ids[step.id] = path
    known = frozenset(ids)
    room = _TemplateRoom()

    yield from _block_problems(definition.steps, "$.steps")
    yield from _block_problems(definition.on_error, "$.on_error")
    for path, step in steps:
        spec = STEP_TYPES.get(step.type)
        if spec is None:
            yield Problem(
                path=f"{path}.type",
                message=f"unknown step type {step.type!r}; known types: {', '.join(sorted(STEP_TYPES))}",
            )
            continue
        for sub, children in step.children():
            yield from _block_problems(children, f"{path}.{sub}")
        for field in STRUCTURE_FIELDS:
            if getattr(step, field) is not None and field not in spec.structure:
                yield Problem(path=f"{path}.{field}", message=f"a {step.type} step has no {field!r}")
        for field in spec.structure:
            if field in spec.required_structure and getattr(step, field) is None:
                yield Problem(path=f"{path}.{field}", message=f"a {step.type} step needs {field!r}")
        for sub, message in config_problems(step):
            yield Problem(path=f"{path}.with{sub}", message=message)
        yield from _template_problems(step, path, known, room)

    yield from _template_problems_in(definition.output, "$.output", known, room)
    # The key is rendered before any step runs: ``steps`` has nothing in it yet.
    yield from _template_problems_in(definition.limits.key, "$.limits.key", frozenset(), room)
    if definition.input is not None:
        try:
            Draft202012Validator.check_schema(definition.input)
        except SchemaError as exc:
            where = json_path(("input", *exc.path))
            yield Problem(path=where, message=f"not a valid JSON Schema: {exc.message}")


def _block_problems(block: tuple[Step, ...], path: str) -> Iterator[Problem]:
    """``depends_on`` must name steps of the same list, and the list must not loop."""
    index = {step.id: i for i, step in enumerate(block)}
    for i, step in enumerate(block):
        for j, dep in enumerate(step.depends_on or ()):
            if dep == step.id:
                yield Problem(path=f"{path}[{i}].depends_on[{j}]", message="a step cannot depend on itself")
            elif dep not in index:
                yield Problem(
                    path=f"{path}[{i}].depends_on[{j}]",
                    message=f"depends_on names {dep!r}, which is not a step of this list",
                )
    cycle = find_cycle(block)
    if cycle:
        first = index[cycle[0]]
        yield Problem(path=f"{path}[{first}].depends_on", message=f"steps form a cycle: {' -> '.join(cycle)}")


def dependencies(block: tuple[Step, ...]) -> dict[str, tuple[str, ...]]:
    """What each step of a list waits for: its ``depends_on``, else the step before it."""
    deps: dict[str, tuple[str, ...]] = {}
    for i, step in enumerate(block):
        if step.depends_on is not None:
            deps[step.id] = step.depends_on
        else:
            deps[step.id] = (block[i - 1].id,) if i else ()
    return deps


def find_cycle(block: tuple[Step, ...]) -> list[str] | None:
    """A dependency cycle in a step list, as the ids along it, or None."""
    deps = dependencies(block)
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for dep in deps.get(node, ()):
            if dep not in deps or dep == node:  # a self-dependency is reported on its own
                continue
            if state.get(dep) == 1:
                return [*trail[trail.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        trail.pop()
        state[node] = 2
        return None

    for step_id in deps:
        if step_id not in state and (found := visit(step_id)):
            return found
    return None


def _template_problems(
    step: Step, path: str, known: frozenset[str], room: _TemplateRoom
) -> Iterator[Problem]:
    from workflows.steps import STEP_TYPES

    roots = STEP_TYPES[step.type].extra_roots
    yield from _template_problems_in(step.with_, f"{path}.with", known, room, roots)
    yield from _template_problems_in(step.when, f"{path}.when", known, room, roots)
    yield from _template_problems_in(step.output, f"{path}.output", known, room, roots | {"output"})
    yield from _template_problems_in(step.items, f"{path}.items", known, room, roots)
    for i, case in enumerate(step.cases or ()):
        yield from _template_problems_in(case.when, f"{path}.cases[{i}].when", known, room, roots)


def _template_problems_in(
    value: Any, path: str, known: frozenset[str], room: _TemplateRoom, roots: frozenset[str] = frozenset()
) -> Iterator[Problem]:
    for where, source in expressions.templates_in(value, path):
        if room.full:
            continue
        room.used += len(source)
        if room.used > MAX_TEMPLATE_TEXT:
            room.full = True
            yield Problem(
                path=where,
                message=f"the templates of a definition hold at most {MAX_TEMPLATE_TEXT:,} characters "
                f"together; this one brings them to {room.used:,}",
            )
            continue
        for message in expressions.check_template(source, known, roots):
            yield Problem(path=where, message=message)


class _TemplateRoom:
    """How much template source a document has shown so far (:data:`MAX_TEMPLATE_TEXT`); once full, the
    templates after the one that filled it are not checked (nor compiled)."""

    def __init__(self) -> None:
        self.used = 0
        self.full = False


Case.model_rebuild()
