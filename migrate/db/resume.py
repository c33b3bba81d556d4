"""What an interrupted parallel `db copy` had finished, kept in the target database itself.

The record lives where the copy does, not on local disk: `db copy` usually runs in an ECS task, and a
rerun is a new task with a fresh filesystem. It is one small table in its own schema. Each step is
recorded in the same transaction as the work it records (a table range's COPY, an index build, the
keys attached afterwards), so a step is marked done exactly when its work is committed. The schema
is dropped when the copy finishes, before verification; `--clean` drops it with everything else.

Read-only helpers say nothing about whether resuming is *consistent*: that needs a source that did
not change between the runs (the service stopped). The copy's verification compares the whole target
with the source as it is at the end, so a source that did change is reported, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

SCHEMA = "_paas_migrate"
TABLE = "copy_state"

# Step kinds
COPY = "copy"  # one COPY unit: name = the unit's key
INDEX = "index"  # one early index/key build: name = the index's name
STEP = "step"  # a whole phase: "pre-data", "keys attached", "data", "post-data started", "post-data"
META = "meta"  # facts about the interrupted run: name = "schema <sha256>"


@dataclass
class ResumeState:
    done: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, table, name)

    def has(self, kind: str, table: str, name: str) -> bool:
        return (kind, table, name) in self.done

    def step(self, name: str) -> bool:
        return self.has(STEP, "", name)

    def schema_hash(self) -> str | None:
        for kind, _, name in self.done:
            if kind == META and name.startswith("schema "):
                return name.split(" ", 1)[1]
        return None

    def copies(self, table: str) -> set[str]:
        return {name for kind, t, name in self.done if kind == COPY and t == table}

    def summary(self) -> dict[str, int]:
        return {"copies": sum(k == COPY for k, _, _ in self.done),
                "index builds": sum(k == INDEX for k, _, _ in self.done)}


def _ident() -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(TABLE))


def read_state(conn: psycopg.Connection) -> ResumeState | None:
    """The record of an interrupted copy in this target database, or None. Read-only."""
    found = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{TABLE}",)).fetchone()
    if not found or found[0] is None:
        return None
    rows = conn.execute(sql.SQL("SELECT kind, tbl, name FROM {}").format(_ident())).fetchall()
    return ResumeState({(str(k), str(t), str(n)) for k, t, n in rows})


def create_state(conn: psycopg.Connection) -> None:
    """The record's schema and table, in the caller's transaction (so both exist, or neither). An
    empty schema of that name (an interrupted first attempt of this) is reused."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    conn.execute(
        sql.SQL("CREATE TABLE {} (kind text NOT NULL, tbl text NOT NULL, name text NOT NULL,"
                " at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (kind, tbl, name))").format(_ident())
    )


def mark(conn: psycopg.Connection, kind: str, table: str, name: str) -> None:
    """Record a step inside the caller's transaction: it commits with the work it records. A step
    recorded twice is an error that rolls the work back (it would be done twice)."""
    conn.execute(sql.SQL("INSERT INTO {} (kind, tbl, name) VALUES (%s, %s, %s)").format(_ident()),
                 (kind, table, name))


# One copy at a time into a target database: two (an ECS task started while the last one is still
# stopping) would both copy what neither has recorded yet. Advisory locks are per database.
LOCK_KEY = 0x7061_6173_6D69_6772  # "paasmigr"


def lock_holder(conn: psycopg.Connection) -> str | None:
    """Who holds the copy lock: "pid, from ADDRESS, since TIME", or None if unknown."""
    row = conn.execute(
        "SELECT a.pid, a.client_addr, date_trunc('second', a.backend_start)"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
        (LOCK_KEY,),
    ).fetchone()
    if not row:
        return None
    return f"{row[0]}, from {row[1] or 'a local socket'}, since {row[2]}"


def try_lock(conn: psycopg.Connection) -> bool:
    """Take the target's copy lock for the life of `conn`'s session; False if another session holds it."""
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0])  # type: ignore[index]


def forget_copies(conn: psycopg.Connection, table: str) -> None:
    """Forget a table's copied ranges (its rows are being truncated); its built indexes stay built."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE kind = %s AND tbl = %s").format(_ident()), (COPY, table))


def drop_state(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


# Post-data entries that create one object, run by pg_restore as one implicit transaction with the
# statements that alter it: each such object exists on the target whole, or not at all. Not here
# (so run again; they are idempotent): a view's _RETURN rule (pg_dump splits a view it cannot create
# at once into a placeholder and a CREATE OR REPLACE VIEW entry, and the placeholder has a _RETURN
# rule too), a partition's copy of its parent's trigger (its entry only enables or disables it),
# comments, index attachments, ROW SECURITY.
def _created(server_version_num: int) -> dict[str, str]:
    return {
        "pg_class": "relkind IN ('i', 'I', 'm')",  # indexes; materialized views (data: see already_restored)
        "pg_constraint": "true",
        "pg_trigger": "NOT tgisinternal" + (" AND tgparentid = 0" if server_version_num >= 130000 else ""),
        "pg_rewrite": "rulename <> '_RETURN'",
        "pg_policy": "true",
        "pg_statistic_ext": "true",
        "pg_event_trigger": "true",
    }


def already_restored(source: psycopg.Connection, target: psycopg.Connection,
                     entries: dict[tuple[int, int], tuple[int, int, bool]]) -> set[tuple[int, int]]:
    """Which post-data entries an interrupted run already restored on the target. `entries` maps an
    entry (as keyed in pg_restore's table of contents) to the source object it creates — (catalog
    oid, object oid, data) where `data` means a materialized view's REFRESH, done once the view is
    populated. Objects are matched by their address (type, qualified name, arguments), never by oid."""
    if not entries:
        return set()
    objects = sorted({(c, o) for c, o, _ in entries.values()})
    addresses = {
        (int(c), int(o)): (str(t), tuple(n or ()), tuple(a or ()))
        for c, o, t, n, a in source.execute(
            "SELECT t.classid, t.objid, a.type, a.object_names, a.object_args"
            " FROM unnest(%s::oid[], %s::oid[]) AS t(classid, objid),"
            " LATERAL pg_catalog.pg_identify_object_as_address(t.classid, t.objid, 0) AS a",
            ([c for c, _ in objects], [o for _, o in objects]),
        ).fetchall()
        if t is not None
    }
    version = target.info.server_version
    union = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}::regclass::oid, oid, {} FROM pg_catalog.{} WHERE {}").format(
            sql.Literal(f"pg_catalog.{cat}"),
            sql.SQL("relkind <> 'm' OR relispopulated" if cat == "pg_class" else "true"),
            sql.Identifier(cat), sql.SQL(where))
        for cat, where in _created(version).items()
    )
    there: dict[tuple[str, tuple[str, ...], tuple[str, ...]], bool] = {
        (str(t), tuple(n or ()), tuple(a or ())): bool(populated)
        for t, n, a, populated in target.execute(
            sql.SQL("SELECT a.type, a.object_names, a.object_args, o.populated"
                    " FROM ({}) AS o(classid, objid, populated),"
                    " LATERAL pg_catalog.pg_identify_object_as_address(o.classid, o.objid, 0) AS a").format(union)
        ).fetchall()
    }
    done = set()
    for key, (cat, oid, data) in entries.items():
        address = addresses.get((cat, oid))
        if address is not None and address in there and (there[address] or not data):
            done.add(key)
    return done


def leftover_sessions(conn: psycopg.Connection) -> list[str]:
    """Sessions of an earlier paas-migrate run still working in this database (a run killed with
    SIGKILL where its children outlive it, no setpriv, or a statement a pre-14 server does not
    cancel when its client goes): "pid: query"."""
    return [
        f"{pid}: {query}"
        for pid, query in conn.execute(
            "SELECT pid, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_catalog.pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'"
            " AND application_name LIKE 'paas-migrate %' ORDER BY backend_start"
        ).fetchall()
    ]
