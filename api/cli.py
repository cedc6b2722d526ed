"""``conveyor``: the command-line tool for Conveyor's HTTP API.

It talks to the API only (never to Temporal or the database), with the same API keys, so whatever it can do
an HTTP client can do too, under the same roles and the same state rules.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
import yaml
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

DEFAULT_API = "http://127.0.0.1:8000"
POLL_INTERVAL_S = 0.5
STREAM_READ_TIMEOUT_S = 20.0
"""Longest silence on the event stream before the CLI checks the execution itself and reconnects."""

GLOBAL_FLAGS = frozenset({"--json"})
GLOBAL_OPTIONS = frozenset({"--api", "--key"})

STEP_STYLES = {
    "pending": "dim",
    "running": "cyan",
    "waiting": "yellow",
    "retrying": "yellow",
    "completed": "green",
    "skipped": "blue",
    "failed": "red",
    "cancelled": "magenta",
}
STATE_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "SUSPENDED": "yellow",
    "WAITING": "yellow",
    "RETRYING": "yellow",
}
EXIT_CODES = {"COMPLETED": 0, "FAILED": 1, "CANCELLED": 1, "SUSPENDED": 2}
ENDING_EVENTS = frozenset({"completed", "failed", "cancelled", "suspended"})
EVENT_STATE = {
    "started": "PROCESSING",
    "step_started": "PROCESSING",
    "resumed": "PROCESSING",
    "waiting": "WAITING",
    "suspended": "SUSPENDED",
    "retrying": "RETRYING",
    "completed": "COMPLETED",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
}
EVENT_STEP_STATUS = {
    "step_started": "running",
    "step_completed": "completed",
    "step_failed": "failed",
    "step_skipped": "skipped",
    "waiting": "waiting",
    "retrying": "retrying",
}

app = typer.Typer(
    name="conveyor",
    help="Apply definitions, start and follow executions, and operate them through Conveyor's HTTP API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


# --- talking to the API -------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer of the API: ``{error_code, message, details}`` with its HTTP status."""

    def __init__(self, status: int, error_code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = details

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """The error an answer carries; a body not in the API's format (a proxy's page) still reads well."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "error_code" in body:
            details = body.get("details")
            return cls(
                response.status_code,
                str(body["error_code"]),
                str(body.get("message", "")),
                details if isinstance(details, dict) else {},
            )
        text = response.text.strip().splitlines()
        return cls(response.status_code, f"HTTP_{response.status_code}", text[0][:200] if text else "", {})


class Unreachable(Exception):
    """Nothing answers at the API's address."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class CliError(Exception):
    """A mistake on the command line the API never saw (bad JSON in an option, an unknown file type)."""


class Api:
    """A small synchronous client for the API: JSON in, JSON (or text) out, errors as :class:`ApiError`."""

    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        form: dict[str, str] | None = None,
    ) -> Any:
        """The decoded answer of ``method path``; raises :class:`ApiError` or :class:`Unreachable`."""
        headers = {"content-type": content_type} if content_type else None
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                path,
                json=body,
                params=query,
                content=content,
                headers=headers,
                files=files,
                data=form,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise Unreachable(self.base_url) from None
        if response.is_error:
            raise ApiError.of(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def stream(self, path: str, last_event_id: int) -> AbstractContextManager[httpx.Response]:
        """An open Server-Sent Events answer, resumed after ``last_event_id`` when it is not 0."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(30, read=STREAM_READ_TIMEOUT_S)
        return self._http.stream("GET", path, headers=headers, timeout=timeout)


def execution_path(execution_id: str, suffix: str = "") -> str:
    """The URL path of an execution; its ``/`` stays as it is (the API routes take the id as a path)."""
    return f"/api/v1/executions/{quote(execution_id, safe='/')}{suffix}"


def definition_path(name: str, suffix: str = "") -> str:
    return f"/api/v1/definitions/{quote(name, safe='')}{suffix}"


# --- output -------------------------------------------------------------------------------------------------


@dataclass
class Cli:
    """What every command gets: the API client and where and how to print."""

    api: Api
    json_output: bool
    out: Console = field(default_factory=Console)
    err: Console = field(default_factory=lambda: Console(stderr=True))

    def emit_json(self, value: Any) -> None:
        typer.echo(json.dumps(value, indent=2, default=str))

    def line(self, text: str, style: str = "") -> None:
        self.out.print(Text(text, style=style))


def _cli(ctx: typer.Context) -> Cli:
    cli: Cli = ctx.ensure_object(Cli)
    return cli


def cell(value: Any, style: str = "") -> Text:
    """A table cell: plain text (never rich markup, whatever the API sent), ``-`` for nothing."""
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, default=str), style=style)
    return Text(str(value), style=style)


def when(value: str | None) -> str | None:
    """An ISO timestamp shortened to the second, for tables."""
    if not value:
        return None
    return value.replace("T", " ")[:19]


def table(*columns: str, title: str | None = None) -> Table:
    grid = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
    for column in columns:
        grid.add_column(column)
    return grid


def state_text(state: str | None) -> Text:
    return cell(state, STATE_STYLES.get(state or "", "bold"))


def problem_text(problem: dict[str, Any]) -> str:
    """Why an execution cannot progress, in one line: Temporal's cause, the message, the attempts since."""
    text = f"stuck: {problem.get('cause') or problem.get('category')}"
    if problem.get("message"):
        text += f": {problem['message']}"
    if problem.get("failed_attempts"):
        text += f" ({problem['failed_attempts']} failed workflow task attempt(s)"
        text += f" since {when(problem['since'])})" if problem.get("since") else ")"
    return text


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def report_error(cli_err: Console, exc: ApiError) -> None:
    """One readable line, then each problem with its path, then any other details."""
    line = Text("error: ", style="bold red")
    line.append(exc.message or exc.error_code)
    line.append(f" [{exc.error_code}, HTTP {exc.status}]", style="dim")
    cli_err.print(line)
    details = dict(exc.details)
    problems = details.pop("problems", None)
    if isinstance(problems, list):
        for problem in problems:
            if isinstance(problem, dict):
                cli_err.print(Text(f"  {problem.get('path', '$')}: {problem.get('message', '')}"))
    for key, value in details.items():
        cli_err.print(Text(f"  {key}: {json.dumps(value, default=str)}", style="dim"))


def parse_json_option(text: str | None, option: str, *, want_object: bool = False) -> Any:
    """The value of a ``--x JSON`` option, or a :class:`CliError` that names the option."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{option} is not valid JSON: {exc}") from None
    if want_object and not isinstance(value, dict):
        raise CliError(f"{option} must be a JSON object")
    return value


def document_type(path: Path) -> str:
    """The content type the API reads a definition file as, from its extension."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "application/yaml"
    if suffix == ".json":
        return "application/json"
    raise CliError(f"{path}: use a .yaml, .yml or .json file")


# --- definitions --------------------------------------------------------------------------------------------

FilesArg = Annotated[
    list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, help="definition files")
]


@app.command()
def validate(ctx: typer.Context, files: FilesArg) -> None:
    """Validate definition files without storing them; exit 1 if any is invalid."""
    cli = _cli(ctx)
    reports: list[dict[str, Any]] = []
    for path in files:
        try:
            report = cli.api.call(
                "POST",
                "/api/v1/definitions/validate",
                content=path.read_bytes(),
                content_type=document_type(path),
            )
        except ApiError as exc:
            # A file that does not even parse is invalid like one with problems; the others still get checked.
            report = {"valid": False, "problems": exc.details.get("problems") or [], "error": exc.message}
            if not cli.json_output:
                cli.err.print(Text(f"{path}: ", style="bold"), end="")
                report_error(cli.err, exc)
                continue
        reports.append({"file": str(path), **report})
        if cli.json_output:
            continue
        if report["valid"]:
            cli.out.print(Text(f"{path}: ", style="bold").append("valid", style="green"))
            continue
        cli.out.print(
            Text(f"{path}: ", style="bold").append(f"{len(report['problems'])} problem(s)", style="red")
        )
        problems = table("path", "message")
        for problem in report["problems"]:
            problems.add_row(cell(problem.get("path")), cell(problem.get("message")))
        cli.out.print(problems)
    if cli.json_output:
        cli.emit_json(reports)
    if len(reports) < len(files) or not all(r["valid"] for r in reports):
        raise typer.Exit(1)


@app.command()
def apply(
    ctx: typer.Context,
    files: FilesArg,
    publish: Annotated[bool, typer.Option(help="make each new version active at once")] = False,
) -> None:
    """Create definitions, or add a version to each whose content changed."""
    cli = _cli(ctx)
    saved: list[dict[str, Any]] = []
    failed = False
    for path in files:
        try:
            answer = cli.api.call(
                "POST",
                "/api/v1/definitions",
                params={"publish": "true"} if publish else None,
                content=path.read_bytes(),
                content_type=document_type(path),
            )
        except ApiError as exc:
            failed = True
            cli.err.print(Text(f"{path}: ", style="bold"), end="")
            report_error(cli.err, exc)
            continue
        saved.append({"file": str(path), **answer})
    if cli.json_output:
        cli.emit_json(saved)
    elif saved:
        grid = table("file", "name", "version", "status", "created")
        for row in saved:
            grid.add_row(
                cell(row["file"]),
                cell(row["name"], "bold"),
                cell(row["version"]),
                cell(row["status"], "green" if row["status"] == "published" else "yellow"),
                cell("yes" if row["created"] else "no (unchanged)"),
            )
        cli.out.print(grid)
    if failed:
        raise typer.Exit(1)


@app.command()
def publish(ctx: typer.Context, name: str, version: int) -> None:
    """Make VERSION the active version of definition NAME."""
    cli = _cli(ctx)
    answer = cli.api.call("POST", definition_path(name, f"/versions/{version}/publish"))
    if cli.json_output:
        cli.emit_json(answer)
        return
    cli.line(f"{answer['name']} v{answer['version']} is now active", "green")


@app.command()
def definitions(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="include archived definitions")] = False,
) -> None:
    """List definitions with their active and latest versions."""
    cli = _cli(ctx)
    rows = cli.api.call("GET", "/api/v1/definitions", params={"include_archived": all_ or None})
    if cli.json_output:
        cli.emit_json(rows)
        return
    grid = table("name", "active", "latest", "updated", "description")
    for row in rows:
        name = cell(row["name"], "bold")
        if row.get("archived"):
            name.append(" (archived)", style="dim")
        grid.add_row(
            name,
            cell(row.get("active_version")),
            cell(row.get("latest_version")),
            cell(when(row.get("updated_at"))),
            cell(row.get("description")),
        )
    cli.out.print(grid)


@app.command()
def show(
    ctx: typer.Context,
    name: str,
    version: Annotated[int | None, typer.Option(help="a version other than the active one")] = None,
) -> None:
    """Show a definition's metadata and document (as YAML)."""
    cli = _cli(ctx)
    path = definition_path(name, f"/versions/{version}" if version else "")
    answer = cli.api.call("GET", path)
    if cli.json_output:
        cli.emit_json(answer)
        return
    if "active_version" in answer:
        active = answer["active_version"]
        status = f"active version: v{active}" if active else "no version published"
    else:
        status = "active" if answer.get("active") else "not active"
    cli.line(f"{answer['name']} v{answer['version']}  ({status})", "bold")
    if answer.get("description"):
        cli.line(answer["description"])
    cli.out.print()
    cli.out.print(Text(yaml.safe_dump(answer["document"], sort_keys=False).rstrip()))


@app.command()
def graph(
    ctx: typer.Context,
    name: str,
    version: Annotated[int | None, typer.Option(help="a version other than the active one")] = None,
) -> None:
    """Print a definition's flow as a Mermaid flowchart."""
    cli = _cli(ctx)
    text = cli.api.call("GET", definition_path(name, "/graph"), params={"version": version})
    typer.echo(text if isinstance(text, str) else json.dumps(text))


# --- starting and following ---------------------------------------------------------------------------------


@dataclass
class Event:
    """One message of the execution's event stream."""

    seq: int
    type: str
    at: str | None = None
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a Server-Sent Events stream (``id:``, ``event:``, ``data:``; comments skipped)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield _event(fields, "\n".join(data))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if data:
        yield _event(fields, "\n".join(data))


def _event(fields: dict[str, str], data: str) -> Event:
    try:
        body = json.loads(data)
    except ValueError:
        body = {"data": data}
    if not isinstance(body, dict):
        body = {"data": body}
    seq = body.get("seq") or (int(fields["id"]) if fields.get("id", "").isdigit() else 0)
    payload = body.get("data")
    return Event(
        seq=int(seq),
        type=str(body.get("type") or fields.get("event") or "message"),
        at=body.get("at"),
        step=body.get("step"),
        data=payload if isinstance(payload, dict) else {},
    )


def settled(view: dict[str, Any]) -> bool:
    """Whether following is over: the run closed, or it is parked in SUSPENDED waiting for an operator."""
    state = view.get("state")
    running = view.get("temporal_status") in (None, "RUNNING")
    return state == "SUSPENDED" or not running or state in ("COMPLETED", "CANCELLED")


class EventsUnavailable(Exception):
    """The API has no event stream (an older server): follow by polling instead."""


@dataclass
class Progress:
    """The live picture of an execution: its state and each step's status, fed by events or polls."""

    execution_id: str
    state: str = "QUEUED"
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: str | None = None
    problem: dict[str, Any] | None = None
    """Set while its workflow task keeps failing (the view's ``problem``, a ``stuck`` event's data)."""

    def seed(self, view: dict[str, Any]) -> list[str]:
        """Take a polled view in; answers what changed, in words."""
        changes: list[str] = []
        if view.get("state") and view["state"] != self.state:
            self.state = view["state"]
            changes.append(f"state {self.state}")
        problem = view.get("problem")
        if (problem or None) != self.problem:
            changes.append(problem_text(problem) if problem else "recovered")
            self.problem = problem
        self.current = view.get("current_step")
        for step in view.get("steps") or []:
            known = self.steps.get(step["id"])
            before = known.get("status") if known else "pending"
            if step.get("status") not in (before, None):
                changes.append(f"step {step['id']} {step.get('status')}")
            error = step.get("error")
            self.steps[step["id"]] = {
                "type": step.get("type"),
                "status": step.get("status"),
                "attempts": step.get("attempts"),
                "note": error.get("message") if isinstance(error, dict) else None,
            }
        return changes

    def apply(self, event: Event) -> None:
        """Take one stream event in."""
        if event.type in EVENT_STATE:
            self.state = EVENT_STATE[event.type]
        if event.type == "stuck":
            self.problem = event.data
        elif event.type == "recovered":
            self.problem = None
        if not event.step:
            return
        step = self.steps.setdefault(event.step, {"type": event.data.get("type"), "attempts": 0})
        status = EVENT_STEP_STATUS.get(event.type)
        if status:
            step["status"] = status
        if event.type == "step_started":
            self.current = event.step
            step["attempts"] = event.data.get("attempt") or (step.get("attempts") or 0) + 1
            step["note"] = None
        error = event.data.get("error")
        if isinstance(error, dict):
            step["note"] = error.get("message")
        elif event.type == "retrying" and event.data.get("delay_s") is not None:
            step["note"] = f"retrying in {event.data['delay_s']} s"
        elif event.type == "waiting" and event.data.get("until"):
            step["note"] = f"waiting until {event.data['until']}"

    def render(self) -> RenderableType:
        header = Text(f"{self.execution_id}  ", style="bold").append_text(state_text(self.state))
        if self.problem:
            return Group(header, Text(problem_text(self.problem), style="bold red"), self.steps_table())
        return Group(header, self.steps_table())

    def steps_table(self) -> Table:
        grid = table("step", "type", "status", "attempts", "note")
        for step_id, step in self.steps.items():
            status = step.get("status") or "pending"
            marker = "▸ " if step_id == self.current and status in ("running", "waiting") else "  "
            grid.add_row(
                cell(marker + step_id),
                cell(step.get("type")),
                cell(status, STEP_STYLES.get(status, "")),
                cell(step.get("attempts") or None),
                cell(step.get("note")),
            )
        return grid


Show = Callable[[str], None]


def follow(cli: Cli, execution_id: str) -> dict[str, Any]:
    """Follow an execution until it closes or parks in SUSPENDED; answers its final view."""
    view: dict[str, Any] = cli.api.call("GET", execution_path(execution_id))
    progress = Progress(execution_id)
    progress.seed(view)
    # Even a closed execution is read from its stream: it replays every event, then ends.
    live = cli.out.is_terminal and not cli.json_output
    display: AbstractContextManager[Live | None] = (
        Live(progress.render(), console=cli.out, refresh_per_second=8) if live else nullcontext()
    )
    with display as screen:

        def show(line: str) -> None:
            if screen is not None:
                screen.update(progress.render())
            elif cli.json_output:
                typer.echo(line)
            else:
                cli.line(line)

        try:
            try:
                return _follow_events(cli, progress, show)
            except EventsUnavailable:
                return _follow_polling(cli, progress, show)
        except KeyboardInterrupt:
            pass
    cli.err.print(
        Text(f"stopped following; the execution goes on: conveyor execution {execution_id}", style="yellow")
    )
    raise typer.Exit(130)


def _follow_events(cli: Cli, progress: Progress, show: Show) -> dict[str, Any]:
    last_seq = 0
    path = execution_path(progress.execution_id, "/events")
    while True:
        try:
            with cli.api.stream(path, last_seq) as response:
                if response.status_code in (404, 405):
                    raise EventsUnavailable
                if response.is_error:
                    response.read()
                    raise ApiError.of(response)
                for event in parse_sse(response.iter_lines()):
                    if event.seq and event.seq <= last_seq:
                        continue  # a server that replays from the start after a reconnect
                    last_seq = event.seq or last_seq
                    progress.apply(event)
                    show(_event_line(event, cli.json_output))
                    if event.type in ENDING_EVENTS and (final := _settle(cli, progress.execution_id)):
                        return final
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise Unreachable(cli.api.base_url) from None
        except (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError):
            pass  # a quiet or dropped stream: check the execution, then reconnect with Last-Event-ID
        view: dict[str, Any] = cli.api.call("GET", execution_path(progress.execution_id))
        if settled(view):
            progress.seed(view)
            return view
        time.sleep(POLL_INTERVAL_S)


def _settle(cli: Cli, execution_id: str, patience_s: float = 3.0) -> dict[str, Any] | None:
    """The final view after an ending event, or None when the execution went on (FAILED, then RETRYING)."""
    deadline = time.monotonic() + patience_s
    while True:
        view: dict[str, Any] = cli.api.call("GET", execution_path(execution_id))
        if settled(view):
            return view
        if view.get("state") != "FAILED" or time.monotonic() > deadline:
            return None
        time.sleep(POLL_INTERVAL_S / 2)


def _follow_polling(cli: Cli, progress: Progress, show: Show) -> dict[str, Any]:
    while True:
        view: dict[str, Any] = cli.api.call("GET", execution_path(progress.execution_id))
        for change in progress.seed(view):
            show(json.dumps({"change": change}) if cli.json_output else f"{_clock()}  {change}")
        if settled(view):
            return view
        time.sleep(POLL_INTERVAL_S)


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")


def _event_line(event: Event, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"seq": event.seq, "type": event.type, "at": event.at, "step": event.step, "data": event.data}
        )
    at = event.at[11:19] if event.at and len(event.at) >= 19 else _clock()
    text = f"{at}  {event.type:<15} {event.step or ''}"
    error = event.data.get("error")
    if isinstance(error, dict) and error.get("message"):
        text += f"  {error['message']}"
    if event.type == "stuck":
        text += f"  {problem_text(event.data)}"
    return text.rstrip()


def finish(cli: Cli, view: dict[str, Any], *, streamed: bool) -> NoReturn:
    """Print how a followed execution ended and exit with its code (0 done, 1 failed, 2 suspended)."""
    state = view.get("state") or "UNKNOWN"
    if cli.json_output:
        typer.echo(json.dumps(view, default=str))
    else:
        if not streamed:
            progress = Progress(view["execution_id"])
            progress.seed(view)
            cli.out.print(progress.steps_table())
        cli.out.print(Text(f"{view['execution_id']} ", style="bold").append_text(state_text(state)))
        if view.get("output") is not None:
            cli.out.print(Text("output: ", style="bold").append(pretty_json(view["output"])))
        error = view.get("error")
        if isinstance(error, dict):
            where = f" at step {error['step']}" if error.get("step") else ""
            cli.out.print(Text(f"error{where}: {error.get('code')}: {error.get('message')}", style="red"))
        if state == "SUSPENDED":
            _suspended_hints(cli, view)
    raise typer.Exit(EXIT_CODES.get(state, 1))


def _suspended_hints(cli: Cli, view: dict[str, Any]) -> None:
    execution_id = view["execution_id"]
    failed = [s["id"] for s in view.get("steps") or [] if s.get("status") == "failed"]
    cli.out.print(Text("It waits for an operator:", style="yellow"))
    if failed or view.get("error"):
        cli.line(f"  conveyor retry {execution_id} [--from-step STEP] [--input-patch JSON]")
        cli.line(f"  conveyor skip {execution_id} --output JSON")
    else:
        cli.line(f"  conveyor resume {execution_id}")
    cli.line(f"  conveyor cancel {execution_id}")


@app.command()
def start(
    ctx: typer.Context,
    name: str,
    input_: Annotated[str | None, typer.Option("--input", help="the input as a JSON object")] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="the input from a .json or .yaml file"),
    ] = None,
    id_: Annotated[
        str | None, typer.Option("--id", help="your idempotency key: the same id again is the same execution")
    ] = None,
    version: Annotated[int | None, typer.Option(help="a version other than the active one")] = None,
    follow_: Annotated[
        bool, typer.Option("--follow/--no-follow", help="follow the execution live until it ends")
    ] = True,
) -> None:
    """Start an execution of definition NAME and (by default) follow it to its end.

    Exit code 0 when it completes, 1 when it fails or is cancelled, 2 when it is suspended.
    """
    cli = _cli(ctx)
    if input_ is not None and input_file is not None:
        raise CliError("give --input or --input-file, not both")
    payload = parse_json_option(input_, "--input", want_object=True)
    if input_file is not None:
        payload = _read_input_file(input_file)
    body: dict[str, Any] = {"input": payload or {}}
    if id_ is not None:
        body["id"] = id_
    if version is not None:
        body["version"] = version
    started = cli.api.call("POST", definition_path(name, "/executions"), body=body)
    if not follow_:
        if cli.json_output:
            cli.emit_json(started)
            return
        again = "" if started.get("created", True) else "  (existing execution with this id)"
        cli.out.print(
            Text(f"{started['execution_id']} ", style="bold")
            .append_text(state_text(started.get("state")))
            .append(f"  v{started.get('version')}{again}")
        )
        return
    if not cli.json_output:
        cli.out.print(Text(f"started {started['execution_id']} (v{started.get('version')})", style="dim"))
    else:
        typer.echo(json.dumps(started, default=str))
    view = follow(cli, started["execution_id"])
    finish(cli, view, streamed=cli.out.is_terminal)


def _read_input_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        value = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CliError(f"{path} does not parse: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"{path} must hold an object")
    return value


# --- inspecting ---------------------------------------------------------------------------------------------


@app.command()
def executions(
    ctx: typer.Context,
    definition: Annotated[str | None, typer.Option(help="only this definition's executions")] = None,
    state: Annotated[str | None, typer.Option(help="only executions in this state, e.g. SUSPENDED")] = None,
    stage: Annotated[str | None, typer.Option(help="only pipeline items at this stage")] = None,
    stuck: Annotated[
        bool, typer.Option("--stuck", help="only executions whose workflow task keeps failing")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    page_token: Annotated[str | None, typer.Option(help="the next page, as the last list said")] = None,
) -> None:
    """List executions, newest first; a stuck one says so in the problem column."""
    cli = _cli(ctx)
    page = cli.api.call(
        "GET",
        "/api/v1/executions",
        params={
            "definition": definition,
            "state": state.upper() if state else None,
            "stage": stage,
            "stuck": stuck or None,
            "limit": limit,
            "page_token": page_token,
        },
    )
    if cli.json_output:
        cli.emit_json(page)
        return
    grid = table("execution", "version", "state", "stage", "trigger", "started", "closed", "problem")
    for row in page["executions"]:
        problem = row.get("problem")
        grid.add_row(
            cell(row["execution_id"]),
            cell(row.get("version")),
            state_text(row.get("state")),
            cell(row.get("stage")),
            cell(row.get("trigger")),
            cell(when(row.get("started_at"))),
            cell(when(row.get("closed_at"))),
            cell(problem_text(problem) if problem else None, "bold red"),
        )
    cli.out.print(grid)
    if page.get("next_page_token"):
        cli.line(f"more: --page-token {page['next_page_token']}", "dim")


@app.command()
def execution(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    follow_: Annotated[
        bool, typer.Option("--follow", help="follow it live until it ends, with start's exit codes")
    ] = False,
) -> None:
    """Show one execution: state, steps, output and error (or follow it, e.g. after a retry)."""
    cli = _cli(ctx)
    if follow_:
        finish(cli, follow(cli, execution_id), streamed=cli.out.is_terminal)
    view = cli.api.call("GET", execution_path(execution_id))
    if cli.json_output:
        cli.emit_json(view)
        return
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("execution", cell(view["execution_id"]))
    facts.add_row("definition", cell(f"{view.get('definition')} v{view.get('version')}"))
    facts.add_row("state", state_text(view.get("state")))
    if view.get("problem"):
        facts.add_row("problem", cell(problem_text(view["problem"]), "bold red"))
    for label, key in (("stage", "stage"), ("current step", "current_step")):
        if view.get(key):
            facts.add_row(label, cell(view[key]))
    if view.get("retry_count"):
        facts.add_row("retries", cell(view["retry_count"]))
    facts.add_row("started", cell(when(view.get("started_at"))))
    facts.add_row("closed", cell(when(view.get("closed_at"))))
    cli.out.print(facts)
    steps = table("step", "type", "status", "attempts", "started", "closed", "error")
    for step in view.get("steps") or []:
        status = step.get("status") or "pending"
        error = step.get("error")
        steps.add_row(
            cell(step["id"]),
            cell(step.get("type")),
            cell(status, STEP_STYLES.get(status, "")),
            cell(step.get("attempts")),
            cell(when(step.get("started_at"))),
            cell(when(step.get("closed_at"))),
            cell(f"{error.get('code')}: {error.get('message')}" if isinstance(error, dict) else None, "red"),
        )
    cli.out.print(steps)
    cli.out.print(Text("input: ", style="bold").append(pretty_json(view.get("input"))))
    if view.get("output") is not None:
        cli.out.print(Text("output: ", style="bold").append(pretty_json(view["output"])))
    if view.get("error"):
        cli.out.print(Text("error: ", style="bold red").append(pretty_json(view["error"])))


@app.command()
def history(ctx: typer.Context, execution_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show an execution's state transitions: when, from, to, step, reason, actor."""
    cli = _cli(ctx)
    rows = cli.api.call("GET", execution_path(execution_id, "/history"))
    if cli.json_output:
        cli.emit_json(rows)
        return
    grid = table("at", "from", "to", "step", "reason", "actor")
    for row in rows:
        grid.add_row(
            cell(when(row.get("at"))),
            state_text(row.get("from_state")),
            state_text(row.get("to_state")),
            cell(row.get("step") or row.get("stage")),
            cell(row.get("reason")),
            cell(row.get("actor")),
        )
    cli.out.print(grid)


@app.command()
def logs(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error: that level and more severe ones")
    ] = None,
    step: Annotated[str | None, typer.Option(help="only this step's entries")] = None,
) -> None:
    """Show an execution's log: step lifecycle, HTTP call summaries, retries, custom code output."""
    cli = _cli(ctx)
    answer = cli.api.call("GET", execution_path(execution_id, "/logs"), params={"level": level, "step": step})
    if cli.json_output:
        cli.emit_json(answer)
        return
    # A list of entries, or a page of them.
    entries = answer if isinstance(answer, list) else answer.get("logs") or answer.get("entries") or []
    levels = {"error": "red", "warning": "yellow", "debug": "dim"}
    for entry in entries:
        level = str(entry.get("level", "info")).lower()
        line = Text(f"{when(entry.get('at')) or '-'} ")
        line.append(f"{level.upper():<7} ", style=levels.get(level, ""))
        if entry.get("step"):
            line.append(f"[{entry['step']}] ", style="bold")
        line.append(str(entry.get("message", "")))
        if entry.get("metadata"):
            line.append(f"  {json.dumps(entry['metadata'], default=str)}", style="dim")
        cli.out.print(line)


# --- control ------------------------------------------------------------------------------------------------

IdArg = Annotated[str, typer.Argument(metavar="ID", help="the execution id, <definition>/<id>")]


def control(cli: Cli, execution_id: str, action: str, body: dict[str, Any] | None = None) -> None:
    """POST a control action and report what the API did."""
    answer = cli.api.call("POST", execution_path(execution_id, f"/{action}"), body=body)
    if cli.json_output:
        cli.emit_json(answer)
        return
    outcome = answer.get("state") or answer.get("result") or "accepted"
    line = Text(f"{answer.get('execution_id', execution_id)}: ", style="bold")
    line.append_text(state_text(outcome) if outcome.isupper() else cell(outcome.replace("_", " ")))
    if answer.get("message"):
        line.append(f"  {answer['message']}", style="dim")
    cli.out.print(line)


@app.command()
def cancel(ctx: typer.Context, execution_id: IdArg) -> None:
    """Cancel: running steps are cancelled, then the definition's on_error steps run."""
    control(_cli(ctx), execution_id, "cancel")


@app.command()
def terminate(
    ctx: typer.Context,
    execution_id: IdArg,
    reason: Annotated[str, typer.Option(help="recorded with the termination")] = "",
) -> None:
    """Stop at once: nothing more runs, not even cleanup steps."""
    control(_cli(ctx), execution_id, "terminate", {"reason": reason})


@app.command()
def suspend(ctx: typer.Context, execution_id: IdArg) -> None:
    """Park a running execution at its next step boundary."""
    control(_cli(ctx), execution_id, "suspend")


@app.command()
def resume(ctx: typer.Context, execution_id: IdArg) -> None:
    """Continue an execution parked by suspend."""
    control(_cli(ctx), execution_id, "resume")


@app.command()
def retry(
    ctx: typer.Context,
    execution_id: IdArg,
    from_step: Annotated[
        str | None, typer.Option(help="retry from this step instead of the failed one")
    ] = None,
    input_patch: Annotated[
        str | None, typer.Option(help="a JSON object merged into the input before retrying")
    ] = None,
) -> None:
    """Retry a suspended execution (from its failed step), or start a closed one again."""
    body: dict[str, Any] = {}
    if from_step is not None:
        body["from_step"] = from_step
    if input_patch is not None:
        body["input_patch"] = parse_json_option(input_patch, "--input-patch", want_object=True)
    control(_cli(ctx), execution_id, "retry", body)


@app.command()
def skip(
    ctx: typer.Context,
    execution_id: IdArg,
    output: Annotated[
        str | None, typer.Option(help="the failed step's output to go on with, as JSON")
    ] = None,
) -> None:
    """Skip a suspended execution's failed step, with the output to use in its place."""
    control(_cli(ctx), execution_id, "skip", {"output": parse_json_option(output, "--output")})


@app.command()
def advance(
    ctx: typer.Context,
    execution_id: IdArg,
    stage: Annotated[str, typer.Argument(help="the stage the item is at")],
    output: Annotated[str | None, typer.Option(help="the stage's output to go on with, as JSON")] = None,
) -> None:
    """Move a pipeline item past the stage it is at (queued, being worked on, or parked there)."""
    body = {"stage": stage, "output": parse_json_option(output, "--output")}
    control(_cli(ctx), execution_id, "advance", body)


@app.command()
def signal(
    ctx: typer.Context,
    execution_id: IdArg,
    name: Annotated[str, typer.Argument(help="the signal, e.g. approve for a wait step")],
    payload: Annotated[str | None, typer.Option(help="the signal's payload, as JSON")] = None,
) -> None:
    """Send a signal to an execution (e.g. approve a wait step)."""
    body = {"payload": parse_json_option(payload, "--payload")}
    control(_cli(ctx), execution_id, f"signals/{quote(name, safe='')}", body)


class BulkAction(StrEnum):
    retry = "retry"
    cancel = "cancel"
    resume = "resume"


_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str | None, option: str) -> str | None:
    """An ISO 8601 instant from ISO text (``2026-11-20T08:00:00Z``) or an age (``90m``, ``2h``, ``1d``)."""
    if text is None:
        return None
    ago = _AGO.match(text.strip())
    if ago:
        delta = timedelta(**{_UNITS[ago.group(2)]: float(ago.group(1))})
        return (datetime.now(UTC) - delta).isoformat()
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"{option} takes an ISO 8601 time or an age like 30m, 2h, 1d; not {text!r}") from None
    return (moment if moment.tzinfo else moment.astimezone()).isoformat()


@app.command()
def bulk(
    ctx: typer.Context,
    action: BulkAction,
    definition: Annotated[str | None, typer.Option(help="executions of this definition")] = None,
    state: Annotated[str | None, typer.Option(help="in this state, e.g. SUSPENDED")] = None,
    stage: Annotated[str | None, typer.Option(help="pipeline items at this stage")] = None,
    since: Annotated[str | None, typer.Option(help="started after: ISO time or an age (2h, 1d)")] = None,
    until: Annotated[str | None, typer.Option(help="started before: ISO time or an age")] = None,
    dry_run: Annotated[bool, typer.Option(help="only count what matches")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Retry, cancel or resume every execution matching a filter (asks first, after a dry-run count)."""
    cli = _cli(ctx)
    criteria = {
        "definition": definition,
        "state": state.upper() if state else None,
        "stage": stage,
        "started_after": parse_time(since, "--since"),
        "started_before": parse_time(until, "--until"),
    }
    if all(value is None for value in criteria.values()):
        raise CliError("give at least one filter (--definition, --state, --stage, --since, --until)")
    path = f"/api/v1/executions/bulk/{action.value}"
    body = {"filter": {k: v for k, v in criteria.items() if v is not None}}
    if dry_run or not yes:
        counted = cli.api.call("POST", path, body={**body, "dry_run": True})
        if dry_run:
            _bulk_report(cli, counted, dry_run=True)
            return
        matched = int(counted.get("matched", 0))
        if not matched:
            if cli.json_output:
                cli.emit_json(counted)
            else:
                cli.line("no execution matches", "yellow")
            return
        typer.confirm(f"{action.value} {matched} execution(s)?", abort=True, err=True)
    report = cli.api.call("POST", path, body={**body, "dry_run": False})
    _bulk_report(cli, report, dry_run=False)
    if report.get("failed"):
        raise typer.Exit(1)


def _bulk_report(cli: Cli, report: dict[str, Any], *, dry_run: bool) -> None:
    if cli.json_output:
        cli.emit_json(report)
        return
    if dry_run:
        cli.line(f"{report.get('matched', 0)} execution(s) match (dry run: nothing changed)")
        return
    failed = report.get("failed") or []
    totals = table("matched", "succeeded", "failed")
    totals.add_row(
        cell(report.get("matched")),
        cell(report.get("succeeded"), "green"),
        cell(len(failed), "red" if failed else ""),
    )
    cli.out.print(totals)
    if failed:
        grid = table("execution", "error")
        for row in failed:
            grid.add_row(cell(row.get("execution_id")), cell(row.get("error"), "red"))
        cli.out.print(grid)


# --- entry point --------------------------------------------------------------------------------------------


@app.callback()
def options(
    ctx: typer.Context,
    api: Annotated[
        str, typer.Option(envvar="CONVEYOR_API_URL", help="the API's base URL", show_envvar=True)
    ] = DEFAULT_API,
    key: Annotated[
        str | None,
        typer.Option(envvar="CONVEYOR_API_KEY", help="API key, sent as a Bearer token", show_default=False),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="print the API's JSON instead of tables")
    ] = False,
) -> None:
    """Global options; they may also be given after the command."""
    client = Api(api, key or None)
    ctx.call_on_close(client.close)
    ctx.obj = Cli(api=client, json_output=json_output)


def hoist_global_options(argv: list[str]) -> list[str]:
    """``argv`` with the global options moved before the command, so ``start x --json`` works too."""
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            rest += argv[index:]
            break
        name = token.split("=", 1)[0]
        if token in GLOBAL_FLAGS or (name in GLOBAL_OPTIONS and "=" in token):
            hoisted.append(token)
        elif token in GLOBAL_OPTIONS and index + 1 < len(argv):
            hoisted += argv[index : index + 2]
            index += 1
        else:
            rest.append(token)
        index += 1
    return hoisted + rest


def main() -> None:
    """The ``conveyor`` console script."""
    from api import cli_pipeline  # noqa: F401  (registers ``conveyor pipeline ...``)

    err = Console(stderr=True)
    try:
        app(args=hoist_global_options(sys.argv[1:]), prog_name="conveyor")
    except ApiError as exc:
        report_error(err, exc)
        sys.exit(1)
    except Unreachable as exc:
        err.print(Text(f"cannot reach the API at {exc.url} — is `make run` up?", style="red"))
        sys.exit(1)
    except CliError as exc:
        err.print(Text(f"error: {exc}", style="red"))
        sys.exit(1)


if __name__ == "__main__":
    # ``python -m api.cli`` runs this file as ``__main__``; the commands other modules register (``conveyor
    # pipeline``) live on ``api.cli``'s app, so run that one.
    from api.cli import main as run

    run()
