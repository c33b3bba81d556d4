"""Settings stored on the source database itself (ALTER DATABASE ... SET, and ALTER ROLE ... IN
DATABASE ... SET), and its comment: read, written as statements, and set on the target.

pg_dump writes them only with --create (in its DATABASE PROPERTIES entry, under the source's name),
so a copy into an existing target database loses them: an application that relies on a database
`search_path` finds none of its tables after cutover. The copy sets the database's own settings on
the target at its end; per-role settings name roles of the source's server, so they are only listed.
COMMENT ON DATABASE is likewise written only with --create; the copy sets it at the end too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from migrate.db.connect import first_line, quote_ident

# Settings whose stored value is a list of already-quoted elements (pg_dump's
# variable_is_guc_list_quote): each element is written as a literal of its own.
LIST_SETTINGS = frozenset({
    "local_preload_libraries", "search_path", "session_preload_libraries", "shared_preload_libraries",
    "temp_tablespaces", "unix_socket_directories",
})


# Settings whose values are never shown (plan, warnings, reports, logs): an application may keep a
# secret there (PostgREST's `ALTER DATABASE app SET "app.jwt_secret" TO ...`). They are still copied.
SECRET_NAME = re.compile(r"pass|secret|token|key|jwt|credential|auth|private|salt", re.IGNORECASE)
HIDDEN = "(hidden)"
# Set on a source stopped for the cutover, not part of the application: not copied, not compared.
NOT_COPIED = frozenset({"default_transaction_read_only"})


def secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


@dataclass(frozen=True)
class Setting:
    """One stored setting of the database: for every role (role None), or for one role in it."""

    name: str
    value: str
    role: str | None = None

    @property
    def shown_value(self) -> str:
        return HIDDEN if secret(self.name) else self.value

    @property
    def text(self) -> str:
        return f"{self.name}={self.shown_value}"


def read(conn: psycopg.Connection) -> list[Setting]:
    """The current database's stored settings: its own first, then per role. Read-only."""
    rows = conn.execute(
        "SELECT r.rolname, u.cfg FROM pg_catalog.pg_db_role_setting s"
        " LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole"
        " CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY AS u(cfg, n)"
        " WHERE s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
        " ORDER BY s.setrole <> 0, r.rolname, u.n"
    ).fetchall()
    out = []
    for role, cfg in rows:
        name, _, value = str(cfg).partition("=")
        if name.lower() not in NOT_COPIED:
            out.append(Setting(name, value, None if role is None else str(role)))
    return out


def stored_read_only(conn: psycopg.Connection) -> bool:
    """Is the current database stored read-only for every role (ALTER DATABASE ... SET
    default_transaction_read_only = on, as a cutover may do to stop writers)? Read-only."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) u(cfg)"
        " WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_catalog.pg_database"
        "  WHERE datname = current_database())"
        " AND lower(u.cfg) IN ('default_transaction_read_only=on', 'default_transaction_read_only=true',"
        "  'default_transaction_read_only=1'))").fetchone()
    return bool(row and row[0])


def split_list(value: str) -> list[str] | None:
    """A stored list setting's elements, as PostgreSQL's SplitGUCList reads them: double-quoted ones
    unquoted ("" is one "), unquoted ones as they are. None when it does not parse."""
    items: list[str] = []
    i, n = 0, len(value)
    while i < n and value[i].isspace():
        i += 1
    if i == n:
        return items
    while True:
        if value[i] == '"':
            name, i = "", i + 1
            while True:
                end = value.find('"', i)
                if end < 0:
                    return None
                name += value[i:end]
                if value[end + 1:end + 2] == '"':
                    name += '"'
                    i = end + 2
                    continue
                i = end + 1
                break
        else:
            start = i
            while i < n and value[i] != "," and not value[i].isspace():
                i += 1
            if i == start:
                return None
            name = value[start:i]
        while i < n and value[i].isspace():
            i += 1
        items.append(name)
        if i == n:
            return items
        if value[i] != ",":
            return None
        i += 1
        while i < n and value[i].isspace():
            i += 1


def statement(setting: Setting, database: str, *, shown: bool = False) -> str:
    """The SQL that stores `setting` on `database`, as pg_dump writes it; `shown`: to print, with a
    secret's value hidden."""
    where = f"DATABASE {quote_ident(database)}"
    if setting.role is not None:
        where = f"ROLE {quote_ident(setting.role)} IN {where}"
    if shown and secret(setting.name):
        return f"ALTER {where} SET {quote_ident(setting.name)} TO '{HIDDEN}'"
    elements = split_list(setting.value) if setting.name.lower() in LIST_SETTINGS else None
    value = ", ".join(sql.Literal(v).as_string(None) for v in (elements or [setting.value]))
    return f"ALTER {where} SET {quote_ident(setting.name)} TO {value}"


def read_comment(conn: psycopg.Connection) -> str | None:
    """The current database's comment (COMMENT ON DATABASE), or None. Read-only."""
    row = conn.execute("SELECT pg_catalog.shobj_description(d.oid, 'pg_database') FROM pg_catalog.pg_database d"
                       " WHERE d.datname = current_database()").fetchone()
    return None if row is None or row[0] is None else str(row[0])


def comment_statement(comment: str, database: str) -> str:
    return f"COMMENT ON DATABASE {quote_ident(database)} IS {sql.Literal(comment).as_string(None)}"


def may_alter(conn: psycopg.Connection) -> bool:
    """May the current user store settings on the current database (its owner, or a superuser)? Read-only."""
    row = conn.execute(
        "SELECT pg_catalog.pg_has_role(current_user, d.datdba, 'USAGE') FROM pg_catalog.pg_database d"
        " WHERE d.datname = current_database()").fetchone()
    return bool(row and row[0])


def apply(conn: psycopg.Connection, settings: list[Setting], comment: str | None = None) -> list[tuple[str, str]]:
    """Store the database's own `settings` (and its `comment`) on the connected (target) database,
    each statement on its own (`conn` in autocommit): one the server refuses does not stop the others.
    Sessions already open keep their settings; new ones get them. Returns (statement, first line of
    the error) for each refused statement."""
    row = conn.execute("SELECT current_database()").fetchone()
    database = str(row[0]) if row else ""
    todo = [(statement(s, database), statement(s, database, shown=True)) for s in settings]
    if comment is not None:
        todo.append((comment_statement(comment, database),) * 2)
    failed = []
    for run, shown in todo:
        try:
            conn.execute(run.encode())
        except psycopg.Error as exc:
            failed.append((shown, first_line(str(exc))))
    return failed


def not_applied_warning(failed: list[tuple[str, str]]) -> str:
    """A report warning naming the statements to run by hand."""
    stmts = "; ".join(stmt for stmt, _ in failed)
    return (f"{len(failed)} of the source database's settings (or its comment) could not be set on the target"
            f" ({failed[0][1]}):"
            f" run as the target database's owner: {stmts}")
