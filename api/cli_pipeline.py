"""``conveyor pipeline ...``: upload items with a progress bar, see stages and metrics as tables, pause,
resume and retry a stage."""

from __future__ import annotations

import json
import mimetypes
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli import Cli, _cli, app, cell, parse_json_option, table

pipeline_app = typer.Typer(
    name="pipeline",
    help="Staged pipelines: upload items, watch each stage's queue, operate stages.",
    no_args_is_help=True,
)
app.add_typer(pipeline_app)

NameArg = Annotated[str, typer.Argument(help="the pipeline (definition) name")]
StageArg = Annotated[str, typer.Argument(help="the stage's name, e.g. extraction")]


def pipeline_path(name: str, suffix: str = "") -> str:
    return f"/api/v1/pipelines/{quote(name, safe='')}{suffix}"


@pipeline_app.command()
def upload(
    ctx: typer.Context,
    name: NameArg,
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="files to add as items")],
    metadata: Annotated[str | None, typer.Option(help="a JSON object added to every item's input")] = None,
) -> None:
    """Add each file as an item of the pipeline; prints each item's execution id."""
    cli = _cli(ctx)
    extra = parse_json_option(metadata, "--metadata", want_object=True)
    form = {"metadata": json.dumps(extra)} if extra else None
    answers: list[dict[str, Any]] = []
    with Progress(
        TextColumn("uploading"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=cli.err,
        disable=cli.json_output,
        transient=True,
    ) as bar:
        task = bar.add_task("upload", total=len(files))
        for path in files:
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            answer = cli.api.call(
                "POST",
                pipeline_path(name, "/items"),
                files={"file": (path.name, path.read_bytes(), kind)},
                form=form,
            )
            answers.append({"file": str(path), **answer})
            bar.advance(task)
    if cli.json_output:
        cli.emit_json(answers)
        return
    grid = table("file", "execution", "stage", "state")
    for answer in answers:
        grid.add_row(
            cell(answer["file"]), cell(answer["execution_id"]), cell(answer["stage"]), cell(answer["state"])
        )
    cli.out.print(grid)


@pipeline_app.command()
def stages(ctx: typer.Context, name: NameArg) -> None:
    """The stages in order, with their task queues."""
    cli = _cli(ctx)
    rows = cli.api.call("GET", pipeline_path(name, "/stages"))
    if cli.json_output:
        cli.emit_json(rows)
        return
    grid = table("stage", "label", "step", "task queue", "queued", "workers", "paused")
    for row in rows:
        grid.add_row(
            cell(row["name"]),
            cell(row["label"]),
            cell(row["step"]),
            cell(row["task_queue"]),
            cell(row["queue_length"]),
            cell(row["pollers"]),
            cell("paused", "yellow") if row["paused"] else cell(None),
        )
    cli.out.print(grid)


def metrics_table(report: dict[str, Any]) -> Table:
    grid = table(
        "stage",
        "queued",
        "in flight",
        "parked",
        "processed",
        "failed",
        "avg ms",
        "p95 ms",
        "workers",
        title=f"{report['pipeline']}: {report['processed']} processed, {report['in_flight']} in flight",
    )
    for row in report["stages"]:
        grid.add_row(
            cell(f"{row['label']}{' (paused)' if row['paused'] else ''}", "yellow" if row["paused"] else ""),
            cell(row["queue_length"], "bold" if row["queue_length"] else ""),
            cell(row["in_flight"]),
            cell(row["parked"], "red" if row["parked"] else ""),
            cell(row["processed"]),
            cell(row["failed"], "red" if row["failed"] else ""),
            cell(row["avg_duration_ms"]),
            cell(row["p95_duration_ms"]),
            cell(row["pollers"]),
        )
    return grid


@pipeline_app.command()
def metrics(
    ctx: typer.Context,
    name: NameArg,
    watch: Annotated[float | None, typer.Option(help="refresh every this many seconds until Ctrl-C")] = None,
) -> None:
    """Queue length, in flight, parked, processed, failed and durations per stage."""
    cli = _cli(ctx)
    report = cli.api.call("GET", pipeline_path(name, "/metrics"))
    if cli.json_output:
        cli.emit_json(report)
        return
    if watch is None:
        cli.out.print(metrics_table(report))
        return
    with Live(metrics_table(report), console=cli.out, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(watch)
                live.update(metrics_table(cli.api.call("GET", pipeline_path(name, "/metrics"))))
        except KeyboardInterrupt:
            pass


def _stage_action(cli: Cli, name: str, stage: str, action: str) -> dict[str, Any]:
    answer: dict[str, Any] = cli.api.call(
        "POST", pipeline_path(name, f"/stages/{quote(stage, safe='')}/{action}")
    )
    if cli.json_output:
        cli.emit_json(answer)
    return answer


@pipeline_app.command()
def pause(ctx: typer.Context, name: NameArg, stage: StageArg) -> None:
    """Stop handing the stage's items to its workers; they wait in its queue."""
    cli = _cli(ctx)
    answer = _stage_action(cli, name, stage, "pause")
    if not cli.json_output:
        cli.line(f"{stage}: paused, {answer['queue_length']} queued", "yellow")


@pipeline_app.command()
def resume(ctx: typer.Context, name: NameArg, stage: StageArg) -> None:
    """Hand the stage's waiting items to its workers again."""
    cli = _cli(ctx)
    answer = _stage_action(cli, name, stage, "resume")
    if not cli.json_output:
        cli.line(f"{stage}: resumed, {answer['queue_length']} queued", "green")


@pipeline_app.command()
def retry(ctx: typer.Context, name: NameArg, stage: StageArg) -> None:
    """Retry every item parked or failed at the stage."""
    cli = _cli(ctx)
    answer = _stage_action(cli, name, stage, "retry")
    if not cli.json_output:
        cli.line(f"{stage}: {answer['succeeded']} of {answer['matched']} retried")
        for failure in answer["failed"]:
            cli.line(f"  {failure.get('execution_id')}: {failure.get('message')}", "red")
