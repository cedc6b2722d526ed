"""SQL as steps run it: exactly one statement, parsed with sqlglot before anything reaches a database."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

DIALECTS = ("postgres", "sqlite")
"""The dialects of the databases a SQL connector reaches."""


def statements(sql: str, dialect: str) -> list[exp.Expr]:
    """The statements ``sql`` holds; raises ``sqlglot.errors.SqlglotError`` when it does not parse."""
    return [statement for statement in sqlglot.parse(sql, dialect=dialect) if statement is not None]


def single_statement_problem(sql: str) -> str | None:
    """Why ``sql`` is not exactly one statement, or None; for a definition being saved, which does not know
    its connector's database yet: SQL that parses in one of :data:`DIALECTS` is judged by that parse."""
    reasons: list[str] = []
    for dialect in DIALECTS:
        try:
            found = statements(sql, dialect)
        except sqlglot.errors.SqlglotError as exc:
            reasons.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        if len(found) != 1:
            return f"a step runs exactly one SQL statement; found {len(found)}"
        return None
    return f"the SQL could not be parsed: {reasons[0]}"
