"""Lifecycles as data: states, transitions with guards and permissions, SLA rules and automation rules.

Pure (stdlib and our expression module only), so the entity workflow imports it as well as the API. A
lifecycle travels into each entity workflow as its document (``lifecycle_document``), which pins it for
that entity: changing a custom lifecycle later never changes the rules of entities already running.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from jinja2 import Environment, meta

from workflows import expressions

Report = Callable[[str, str], None]
"""Collects one problem of a document: ``(path, message)``."""


class Permission(StrEnum):
    """The permissions of the product notes."""

    CREATE_TASK = "CREATE_TASK"
    UPDATE_TASK = "UPDATE_TASK"
    CREATE_ACTION_PLAN = "CREATE_ACTION_PLAN"
    ACTIVATE_ACTION_PLAN = "ACTIVATE_ACTION_PLAN"
    MANAGE_SLA = "MANAGE_SLA"


ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({Permission.CREATE_TASK, Permission.UPDATE_TASK, Permission.CREATE_ACTION_PLAN}),
    "admin": frozenset(Permission),
}
"""What each API key role may do; admins also transition entities they neither created nor are assigned to."""

ADMIN_ROLE = "admin"
EVENTS = ("entity.transitioned", "sla.breached", "execution.completed", "execution.failed")
"""Events automation rules listen to. For the execution ones, ``event.entity`` is the execution:
``definition``, ``version``, ``execution_id`` and ``output`` or ``error``; ``event.entity_type`` is
``execution``."""
ACTIONS = ("create_entity", "transition_entity", "emit_alert", "call_webhook", "start_definition")
FIELD_TYPES = ("string", "number", "integer", "boolean", "list", "object")
GUARD_ROOTS = frozenset({"entity", "actor", "context", "transition"})
PREDICATE_ROOTS = frozenset({"event"})


@dataclass(frozen=True)
class Actor:
    """Who asks for a transition: the API key's name, its role and the permissions that role grants."""

    name: str
    role: str
    permissions: tuple[str, ...] = ()

    @staticmethod
    def of_role(name: str, role: str) -> Actor:
        return Actor(name=name, role=role, permissions=tuple(sorted(ROLE_PERMISSIONS.get(role, ()))))


@dataclass(frozen=True)
class TransitionRule:
    """An allowed move ``from_state`` → ``to_state``, when ``guard`` renders true and the actor holds
    ``permission``."""

    from_state: str
    to_state: str
    label: str = ""
    guard: str | None = None
    permission: str | None = None


@dataclass(frozen=True)
class FieldSpec:
    """A field entities of a lifecycle carry; ``indexed`` ones become search attributes."""

    type: str = "string"
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class SlaRule:
    """A target for the time an entity spends between ``start_on`` and ``stop_on`` states.

    Tracking starts on entering a ``start_on`` state, pauses while in a ``pause_on`` state (when any are
    set) and stops on entering a ``stop_on`` state, which records the SLA as met or breached.
    """

    target_minutes: float
    task_type: str | None = None
    start_on: tuple[str, ...] = ()
    stop_on: tuple[str, ...] = ()
    pause_on: tuple[str, ...] = ()
    id: str = ""


@dataclass(frozen=True)
class AutomationAction:
    """One thing an automation does: ``type`` is one of ``ACTIONS``; ``params`` may hold templates."""

    type: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AutomationRule:
    """On ``event``, when ``predicate`` renders true, run ``actions``."""

    id: str
    event: str
    actions: tuple[AutomationAction, ...]
    predicate: str | None = None
    description: str = ""
    entity_type: str | None = None


@dataclass(frozen=True)
class Lifecycle:
    """A state machine for one entity type."""

    type: str
    states: tuple[str, ...]
    initial: str
    terminal: tuple[str, ...]
    transitions: tuple[TransitionRule, ...]
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    create_permission: str | None = None
    owner_only: bool = False
    """Only the creator, the assignee (``assigned_to``) or an admin may transition an entity."""
    sla: tuple[SlaRule, ...] = ()
    automations: tuple[AutomationRule, ...] = ()
    description: str = ""

    def allowed_from(self, state: str) -> list[TransitionRule]:
        return [t for t in self.transitions if t.from_state == state]

    def rule(self, from_state: str, to_state: str) -> TransitionRule | None:
        return next(
            (t for t in self.transitions if t.from_state == from_state and t.to_state == to_state), None
        )

    def sla_rule(self, task_type: str | None) -> SlaRule | None:
        """The lifecycle's default SLA for ``task_type``: its own rule, else the rule without a type."""
        exact = next((r for r in self.sla if r.task_type is not None and r.task_type == task_type), None)
        return exact or next((r for r in self.sla if r.task_type is None), None)


class LifecycleInvalid(Exception):
    """A lifecycle document with problems, each ``{path, message}``."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['path']}: {p['message']}" for p in problems))
        self.problems = problems


# -- checking transitions ----------------------------------------------------------------------------------


INVALID_TRANSITION = "INVALID_TRANSITION"
PERMISSION_DENIED = "PERMISSION_DENIED"


@dataclass(frozen=True)
class Rejection:
    """Why a transition may not happen: ``code`` is ``INVALID_TRANSITION`` or ``PERMISSION_DENIED``."""

    code: str
    message: str
    details: dict[str, Any]


def check_transition(
    lifecycle: Lifecycle,
    *,
    state: str,
    target: str,
    entity: Mapping[str, Any],
    actor: Actor,
    context: Mapping[str, Any] | None = None,
) -> Rejection | None:
    """None when ``actor`` may move the entity from ``state`` to ``target`` now, else why not.

    The state machine is checked first, so a caller learns a move is impossible before learning it is not
    theirs to make; a guard is checked last, as it may read the transition's context.
    """
    details: dict[str, Any] = {"current_state": state, "target_state": target, "entity_type": lifecycle.type}
    rule = lifecycle.rule(state, target)
    if rule is None:
        allowed = [t.to_state for t in lifecycle.allowed_from(state)]
        return Rejection(
            INVALID_TRANSITION,
            f"transition from {state} to {target} is not allowed"
            + (f"; from {state} it may go to {', '.join(allowed)}" if allowed else f"; {state} is final"),
            {**details, "allowed": allowed},
        )
    if rule.permission is not None and rule.permission not in actor.permissions:
        return Rejection(
            PERMISSION_DENIED,
            f"{actor.name} lacks permission {rule.permission}",
            {**details, "required_permission": rule.permission, "role": actor.role},
        )
    if lifecycle.owner_only and actor.role != ADMIN_ROLE:
        owners = {entity.get("created_by"), entity.get("assigned_to")} - {None}
        if actor.name not in owners:
            return Rejection(
                PERMISSION_DENIED,
                f"{actor.name} neither created nor is assigned to this {lifecycle.type}",
                {**details, "reason": "not_owner"},
            )
    if rule.guard is not None:
        scope = {
            "entity": dict(entity),
            "actor": {"name": actor.name, "role": actor.role},
            "context": dict(context or {}),
            "transition": {"from": state, "to": target},
        }
        try:
            passed = expressions.truthy(expressions.render(rule.guard, scope))
        except expressions.ExpressionError as exc:
            return Rejection(
                INVALID_TRANSITION, f"guard failed: {exc.reason}", {**details, "guard": rule.guard}
            )
        if not passed:
            return Rejection(
                INVALID_TRANSITION,
                f"the guard of {state} → {target} does not hold",
                {**details, "guard": rule.guard},
            )
    return None


# -- documents ---------------------------------------------------------------------------------------------


def lifecycle_document(lifecycle: Lifecycle) -> dict[str, Any]:
    """The lifecycle as JSON data (what the API shows and entity workflows carry)."""
    document = asdict(lifecycle)
    document["fields"] = {
        name: {k: v for k, v in asdict(spec).items() if v is not None and v is not False}
        for name, spec in lifecycle.fields.items()
    }
    listed: dict[str, Any] = _lists(document)
    return listed


def _lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def load_lifecycle(document: Mapping[str, Any]) -> Lifecycle:
    """``parse_lifecycle`` for a document that is read again and again (every entity workflow run carries
    one): parsed once per process, as validating its templates is the expensive part."""
    return _parse_cached(json.dumps(document, sort_keys=True))


@lru_cache(maxsize=256)
def _parse_cached(document: str) -> Lifecycle:
    return parse_lifecycle(json.loads(document))


def load_automation(document: Mapping[str, Any]) -> AutomationRule:
    """A stored or carried automation rule (already validated), parsed once per process."""
    return _automation_cached(json.dumps(document, sort_keys=True))


@lru_cache(maxsize=1024)
def _automation_cached(document: str) -> AutomationRule:
    rule = parse_automation(json.loads(document), "$")
    assert rule is not None  # parse_automation raises on problems when it has no collector
    return rule


def parse_lifecycle(document: Mapping[str, Any]) -> Lifecycle:
    """A lifecycle from its document; raises ``LifecycleInvalid`` listing every problem found."""
    problems: list[dict[str, str]] = []

    def problem(path: str, message: str) -> None:
        problems.append({"path": path, "message": message})

    type_ = document.get("type")
    if not isinstance(type_, str) or not type_.replace("_", "").isalnum() or not type_[:1].isalpha():
        problem("$.type", "a name of letters, digits and _ starting with a letter")
        type_ = "?"
    states = _strings(document.get("states"), "$.states", problem)
    if not states:
        problem("$.states", "at least one state")
    if len(set(states)) != len(states):
        problem("$.states", "states must be unique")
    known = set(states)
    initial = document.get("initial")
    if initial not in known:
        problem("$.initial", f"{initial!r} is not one of the states")
    terminal = _strings(document.get("terminal", []), "$.terminal", problem)
    for i, name in enumerate(terminal):
        if name not in known:
            problem(f"$.terminal[{i}]", f"unknown state {name!r}")

    transitions: list[TransitionRule] = []
    for i, raw in enumerate(_list(document.get("transitions"), "$.transitions", problem)):
        path = f"$.transitions[{i}]"
        if not isinstance(raw, Mapping):
            problem(path, "an object with from, to, guard, permission")
            continue
        source, target = raw.get("from", raw.get("from_state")), raw.get("to", raw.get("to_state"))
        for key, value in (("from", source), ("to", target)):
            if value not in known:
                problem(f"{path}.{key}", f"unknown state {value!r}")
        if source in terminal:
            problem(f"{path}.from", f"{source} is terminal: nothing leaves it")
        guard = raw.get("guard")
        if guard is not None:
            for message in _template_problems(guard, GUARD_ROOTS):
                problem(f"{path}.guard", message)
        permission = raw.get("permission")
        if permission is not None and permission not in set(Permission):
            problem(f"{path}.permission", f"one of {', '.join(Permission)}")
        transitions.append(
            TransitionRule(
                from_state=str(source),
                to_state=str(target),
                label=str(raw.get("label", "")),
                guard=guard if isinstance(guard, str) else None,
                permission=permission if isinstance(permission, str) else None,
            )
        )
    pairs = [(t.from_state, t.to_state) for t in transitions]
    if len(set(pairs)) != len(pairs):
        problem("$.transitions", "a (from, to) pair appears twice")

    if isinstance(initial, str) and initial in known:
        reached = _reachable(initial, transitions)
        for name in states:
            if name not in reached:
                problem("$.states", f"state {name!r} cannot be reached from {initial!r}")
        for name in states:
            if name not in terminal and not any(t.from_state == name for t in transitions):
                problem("$.terminal", f"state {name!r} has no way out, so it must be listed as terminal")

    fields = _fields(document.get("fields", {}), problem)
    sla = tuple(
        rule
        for i, raw in enumerate(_list(document.get("sla", []), "$.sla", problem))
        if (rule := parse_sla_rule(raw, f"$.sla[{i}]", known, problem)) is not None
    )
    automations = tuple(
        automation
        for i, raw in enumerate(_list(document.get("automations", []), "$.automations", problem))
        if (automation := parse_automation(raw, f"$.automations[{i}]", problem)) is not None
    )
    create_permission = document.get("create_permission")
    if create_permission is not None and create_permission not in set(Permission):
        problem("$.create_permission", f"one of {', '.join(Permission)}")
    if problems:
        raise LifecycleInvalid(problems)
    return Lifecycle(
        type=str(type_),
        states=tuple(states),
        initial=str(initial),
        terminal=tuple(terminal),
        transitions=tuple(transitions),
        fields=fields,
        create_permission=create_permission,
        owner_only=bool(document.get("owner_only", False)),
        sla=sla,
        automations=automations,
        description=str(document.get("description", "")),
    )


def parse_sla_rule(
    raw: Any, path: str, states: set[str] | None, problem: Report | None = None
) -> SlaRule | None:
    """An SLA rule from its document; with ``states``, its state names are checked against them."""
    problems: list[dict[str, str]] = []

    def report(where: str, message: str) -> None:
        (problem or (lambda p, m: problems.append({"path": p, "message": m})))(where, message)

    if not isinstance(raw, Mapping):
        report(path, "an object with target_minutes, start_on, stop_on, pause_on")
        return None
    target = raw.get("target_minutes")
    if isinstance(target, bool) or not isinstance(target, int | float) or target <= 0:
        report(f"{path}.target_minutes", "a positive number of minutes")
        target = 1
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("start_on", "stop_on", "pause_on"):
        names = _strings(raw.get(key, []), f"{path}.{key}", report)
        if states is not None:
            for i, name in enumerate(names):
                if name not in states:
                    report(f"{path}.{key}[{i}]", f"unknown state {name!r}")
        lists[key] = tuple(names)
    if not lists["start_on"]:
        report(f"{path}.start_on", "at least one state that starts tracking")
    if not lists["stop_on"]:
        report(f"{path}.stop_on", "at least one state that stops tracking")
    task_type = raw.get("task_type")
    if problem is None and problems:
        raise LifecycleInvalid(problems)
    return SlaRule(
        target_minutes=float(target),
        task_type=task_type if isinstance(task_type, str) else None,
        start_on=lists["start_on"],
        stop_on=lists["stop_on"],
        pause_on=lists["pause_on"],
        id=str(raw.get("id", "")),
    )


def parse_automation(raw: Any, path: str, problem: Report | None = None) -> AutomationRule | None:
    """An automation rule from its document (``problem`` collects problems; without it they raise)."""
    problems: list[dict[str, str]] = []

    def report(where: str, message: str) -> None:
        (problem or (lambda p, m: problems.append({"path": p, "message": m})))(where, message)

    if not isinstance(raw, Mapping):
        report(path, "an object with id, event, predicate, actions")
        return None
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not rule_id or not rule_id.replace("_", "").replace("-", "").isalnum():
        report(f"{path}.id", "a name of letters, digits, _ and -")
    event = raw.get("event")
    if event not in EVENTS:
        report(f"{path}.event", f"one of {', '.join(EVENTS)}")
    predicate = raw.get("predicate")
    if predicate is not None:
        for message in _template_problems(predicate, PREDICATE_ROOTS):
            report(f"{path}.predicate", message)
    actions: list[AutomationAction] = []
    raw_actions = raw.get("actions")
    if not isinstance(raw_actions, list) or not raw_actions:
        report(f"{path}.actions", "a non-empty list of actions")
        raw_actions = []
    for i, action in enumerate(raw_actions):
        where = f"{path}.actions[{i}]"
        if not isinstance(action, Mapping) or action.get("type") not in ACTIONS:
            report(f"{where}.type", f"one of {', '.join(ACTIONS)}")
            continue
        params = {k: v for k, v in action.items() if k != "type"}
        params = dict(params.get("params", params))
        for message in _action_problems(str(action["type"]), params):
            report(where, message)
        for template_path, source in expressions.templates_in(params, where):
            for message in _template_problems(source, PREDICATE_ROOTS):
                report(template_path, message)
        actions.append(AutomationAction(type=str(action["type"]), params=params))
    if problem is None and problems:
        raise LifecycleInvalid(problems)
    entity_type = raw.get("entity_type")
    return AutomationRule(
        id=str(rule_id),
        event=str(event),
        actions=tuple(actions),
        predicate=predicate if isinstance(predicate, str) else None,
        description=str(raw.get("description", "")),
        entity_type=entity_type if isinstance(entity_type, str) else None,
    )


_ACTION_NEEDS = {
    "create_entity": ("entity_type",),
    "transition_entity": ("entity_type", "entity_id", "target_state"),
    "emit_alert": ("channel",),
    "call_webhook": ("url",),
    "start_definition": ("definition",),
}


def _action_problems(kind: str, params: Mapping[str, Any]) -> list[str]:
    return [f"{kind} needs '{name}'" for name in _ACTION_NEEDS[kind] if name not in params]


def _template_problems(source: Any, roots: frozenset[str]) -> list[str]:
    if not isinstance(source, str) or not expressions.is_template(source):
        return ["a template string such as {{ entity.priority == 'high' }}"]
    # check_template knows the interpreter's roots (input, steps, ...); here only ``roots`` are in scope,
    # so its syntax verdict is kept and the names are checked again against ours.
    found = expressions.check_template(source, frozenset(), roots)
    syntax = [p for p in found if not p.startswith(("unknown name", "steps."))]
    if syntax:
        return syntax
    names = meta.find_undeclared_variables(_PARSER.parse(source))
    allowed = roots | {"true", "false", "range", "dict", "namespace"}
    return [
        f"unknown name {name!r}; this expression may read {', '.join(sorted(roots))}"
        for name in sorted(names - allowed)
    ]


_PARSER = Environment()
"""Parses only, to list the names a template reads; rendering always goes through ``expressions``."""


def _reachable(initial: str, transitions: Iterable[TransitionRule]) -> set[str]:
    seen, frontier = {initial}, [initial]
    while frontier:
        here = frontier.pop()
        for rule in transitions:
            if rule.from_state == here and rule.to_state not in seen:
                seen.add(rule.to_state)
                frontier.append(rule.to_state)
    return seen


def _fields(raw: Any, problem: Report) -> dict[str, FieldSpec]:
    if not isinstance(raw, Mapping):
        problem("$.fields", "an object of name: {type, required, default, choices}")
        return {}
    fields: dict[str, FieldSpec] = {}
    for name, spec in raw.items():
        path = f"$.fields.{name}"
        if not isinstance(spec, Mapping):
            problem(path, "an object with type, required, default, choices")
            continue
        kind = spec.get("type", "string")
        if kind not in FIELD_TYPES:
            problem(f"{path}.type", f"one of {', '.join(FIELD_TYPES)}")
        choices = spec.get("choices")
        if choices is not None and not isinstance(choices, list):
            problem(f"{path}.choices", "a list of allowed values")
            choices = None
        fields[str(name)] = FieldSpec(
            type=str(kind),
            required=bool(spec.get("required", False)),
            default=spec.get("default"),
            choices=tuple(choices) if choices is not None else None,
        )
    return fields


def _list(value: Any, path: str, problem: Report) -> list[Any]:
    if not isinstance(value, list):
        problem(path, "a list")
        return []
    return value


def _strings(value: Any, path: str, problem: Report) -> list[str]:
    items = _list(value, path, problem)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            problem(f"{path}[{i}]", "a state name")
    return [item for item in items if isinstance(item, str) and item]


_ARTICLE = {"integer": "an", "object": "an"}
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "list": (list,),
    "object": (dict,),
}


def validate_fields(lifecycle: Lifecycle, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entity's fields with defaults filled in; raises ``LifecycleInvalid`` naming each bad field.

    A lifecycle that declares fields accepts only those; one that declares none takes any.
    """
    problems: list[dict[str, str]] = []
    clean = dict(data)
    if lifecycle.fields:
        problems += [
            {"path": f"$.{name}", "message": f"not a field of {lifecycle.type}"}
            for name in data
            if name not in lifecycle.fields
        ]
    for name, spec in lifecycle.fields.items():
        value = data.get(name)
        if value is None:
            if spec.required:
                problems.append({"path": f"$.{name}", "message": "required"})
            elif spec.default is not None:
                clean[name] = spec.default
            continue
        kinds = _PYTHON_TYPES.get(spec.type, (object,))
        wrong_bool = isinstance(value, bool) and spec.type in {"number", "integer"}
        if not isinstance(value, kinds) or wrong_bool:
            problems.append(
                {"path": f"$.{name}", "message": f"must be {_ARTICLE.get(spec.type, 'a')} {spec.type}"}
            )
        elif spec.choices is not None and value not in spec.choices:
            problems.append({"path": f"$.{name}", "message": f"one of {', '.join(map(str, spec.choices))}"})
    if problems:
        raise LifecycleInvalid(problems)
    return clean


# -- built-in lifecycles -----------------------------------------------------------------------------------

_TASK_DONE = ("completed", "cancelled")

TASK = parse_lifecycle(
    {
        "type": "task",
        "description": "A unit of work: new → in_progress → completed, with blocked and cancelled.",
        "states": ["new", "in_progress", "blocked", "completed", "cancelled"],
        "initial": "new",
        "terminal": list(_TASK_DONE),
        "owner_only": True,
        "create_permission": Permission.CREATE_TASK,
        "fields": {
            "title": {"type": "string", "required": True},
            "description": {"type": "string"},
            "task_type": {"type": "string", "default": "general"},
            "priority": {
                "type": "string",
                "default": "medium",
                "choices": ["low", "medium", "high", "critical"],
            },
            "assigned_to": {"type": "string"},
            "due_date": {"type": "string"},
            "action_plan_id": {"type": "string"},
            "metadata": {"type": "object"},
        },
        "transitions": [
            {"from": "new", "to": "in_progress", "label": "Start work", "permission": "UPDATE_TASK"},
            {"from": "new", "to": "blocked", "label": "Issue identified", "permission": "UPDATE_TASK"},
            {"from": "new", "to": "cancelled", "label": "Cancelled", "permission": "UPDATE_TASK"},
            {"from": "in_progress", "to": "completed", "label": "Work finished", "permission": "UPDATE_TASK"},
            {
                "from": "in_progress",
                "to": "blocked",
                "label": "Issue encountered",
                "permission": "UPDATE_TASK",
            },
            {"from": "in_progress", "to": "cancelled", "label": "Cancelled", "permission": "UPDATE_TASK"},
            {"from": "blocked", "to": "in_progress", "label": "Issue resolved", "permission": "UPDATE_TASK"},
            {"from": "blocked", "to": "cancelled", "label": "Cannot resolve", "permission": "UPDATE_TASK"},
        ],
        "sla": [
            {
                "id": f"task-{task_type}",
                "task_type": task_type,
                "target_minutes": minutes,
                "start_on": ["in_progress"],
                "stop_on": list(_TASK_DONE),
            }
            for task_type, minutes in (("intake", 60), ("assessment", 240), ("review", 120), ("general", 480))
        ]
        + [
            {
                "id": "task-default",
                "target_minutes": 480,
                "start_on": ["in_progress"],
                "stop_on": list(_TASK_DONE),
            }
        ],
        "automations": [
            {
                "id": "intake_followup",
                "event": "entity.transitioned",
                "description": "A completed intake task creates a high-priority assessment task",
                "predicate": "{{ event.to_state == 'completed' and event.entity.task_type == 'intake' }}",
                "actions": [
                    {
                        "type": "create_entity",
                        "entity_type": "task",
                        "fields": {
                            "title": "Assessment: {{ event.entity.title }}",
                            "task_type": "assessment",
                            "priority": "high",
                            "assigned_to": "{{ event.entity.assigned_to | default(none) }}",
                            "action_plan_id": "{{ event.entity.action_plan_id | default(none) }}",
                            "metadata": {"follows": "{{ event.entity_id }}"},
                        },
                    }
                ],
            },
            {
                "id": "task_sla_breached",
                "event": "sla.breached",
                "description": "A breached task SLA is logged as a warning (add rules to page someone)",
                "actions": [
                    {
                        "type": "emit_alert",
                        "channel": "log",
                        "level": "warning",
                        "message": "SLA breached: task {{ event.entity_id }} ({{ event.entity.title }}), "
                        "target {{ event.sla.target_minutes }} min",
                    }
                ],
            },
        ],
    }
)

ACTION_PLAN = parse_lifecycle(
    {
        "type": "action_plan",
        "description": "A plan of goals: drafted, activated, archived.",
        "states": ["draft", "active", "archived"],
        "initial": "draft",
        "terminal": ["archived"],
        "create_permission": Permission.CREATE_ACTION_PLAN,
        "fields": {
            "title": {"type": "string", "required": True},
            "description": {"type": "string"},
            "goals": {"type": "list", "default": []},
            "metadata": {"type": "object"},
        },
        "transitions": [
            {"from": "draft", "to": "active", "label": "Activate plan", "permission": "ACTIVATE_ACTION_PLAN"},
            {
                "from": "draft",
                "to": "archived",
                "label": "Archive without activation",
                "permission": "CREATE_ACTION_PLAN",
            },
            {
                "from": "active",
                "to": "archived",
                "label": "Complete or retire plan",
                "permission": "CREATE_ACTION_PLAN",
            },
        ],
        "automations": [
            {
                "id": "action_plan_activated",
                "event": "entity.transitioned",
                "description": "An activated action plan emits a notification",
                "predicate": "{{ event.to_state == 'active' }}",
                "actions": [
                    {
                        "type": "emit_alert",
                        "channel": "log",
                        "message": "action plan {{ event.entity_id }} ({{ event.entity.title }}) is active",
                    }
                ],
            }
        ],
    }
)

BUILT_IN: Mapping[str, Lifecycle] = {TASK.type: TASK, ACTION_PLAN.type: ACTION_PLAN}
