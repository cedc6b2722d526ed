"""SQL as steps run it: exactly one SELECT, INSERT, UPDATE or DELETE, parsed with sqlglot before anything
reaches a database. The SQL activities check it on the connector's own dialect; a definition being saved,
which does not know its connector's database yet, is checked on each dialect a connector may speak."""

from __future__ import annotations

from typing import Literal

import sqlglot
from sqlglot import exp

StatementKind = Literal["read", "write"]

DIALECTS = ("postgres", "sqlite")
"""The dialects of the databases a SQL connector reaches."""

_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge)


class SqlRefused(ValueError):
    """SQL a step does not run; the message says why."""


class SqlUnparsable(SqlRefused):
    """SQL that does not parse in the dialect it was read in."""


def statement_kind(sql: str, dialect: str) -> StatementKind:
    """Whether ``sql`` reads or writes; raises :class:`SqlRefused` unless it is one SELECT / INSERT /
    UPDATE / DELETE."""
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        lines = str(exc).strip().splitlines()
        raise SqlUnparsable(
            f"the SQL could not be parsed: {lines[0] if lines else type(exc).__name__}"
        ) from None
    if len(statements) != 1:
        raise SqlRefused(f"a step runs exactly one SQL statement; found {len(statements)}")
    root = statements[0]
    if isinstance(root, _WRITES):
        return "write"
    if isinstance(root, exp.Query):
        # Data-modifying CTEs (WITH d AS (DELETE ... RETURNING *) SELECT ...) and SELECT INTO write too.
        if any(True for _ in root.find_all(*_WRITES)) or root.args.get("into") is not None:
            return "write"
        return "read"
    raise SqlRefused(
        f"{root.key.upper()} statements are not run by steps; only SELECT, INSERT, UPDATE and DELETE"
    )


def problem_at_save(sql: str, *, read_only: bool = False) -> str | None:
    """Why a step would refuse ``sql`` on any connector, or None. SQL that parses in one of
    :data:`DIALECTS` is judged by that parse; ``read_only`` steps (``data_fetch``) refuse writes too."""
    unparsable: SqlUnparsable | None = None
    for dialect in DIALECTS:
        try:
            kind = statement_kind(sql, dialect)
        except SqlUnparsable as exc:
            unparsable = unparsable or exc
            continue
        except SqlRefused as exc:
            return str(exc)
        if read_only and kind == "write":
            return "data_fetch only reads; use a database_query step to write"
        return None
    return str(unparsable)
