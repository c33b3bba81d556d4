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


# Post-data objects whose creation is one TOC entry that pg_restore runs as one implicit transaction:
# each exists on the target whole, or not at all. (The other post-data entries — comments, index
# attachments, ROW SECURITY — are idempotent and simply run again.)
_CREATED = {
    "pg_class": "relkind IN ('i', 'I') OR relkind = 'm' AND relispopulated",  # indexes; refreshed mat. views
    "pg_constraint": "true",
    "pg_trigger": "NOT tgisinternal",
    "pg_rewrite": "true",
    "pg_policy": "true",
    "pg_statistic_ext": "true",
    "pg_event_trigger": "true",
}


def already_restored(source: psycopg.Connection, target: psycopg.Connection,
                     objects: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which of these source objects — (catalog oid, object oid), as in pg_restore's table of contents;
    a materialized view's oid for its data — an interrupted post-data already created on the target.
    Objects are matched by their address (type, qualified name, arguments), never by oid."""
    if not objects:
        return set()
    rows = source.execute(
        "SELECT t.classid, t.objid, a.type, a.object_names, a.object_args"
        " FROM unnest(%s::oid[], %s::oid[]) AS t(classid, objid),"
        " LATERAL pg_catalog.pg_identify_object_as_address(t.classid, t.objid, 0) AS a",
        ([c for c, _ in objects], [o for _, o in objects]),
    ).fetchall()
    union = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}::regclass::oid, oid FROM pg_catalog.{} WHERE {}").format(
            sql.Literal(f"pg_catalog.{cat}"), sql.Identifier(cat), sql.SQL(where))
        for cat, where in _CREATED.items()
    )
    there = {
        (str(t), tuple(n or ()), tuple(a or ()))
        for t, n, a in target.execute(
            sql.SQL("SELECT a.type, a.object_names, a.object_args FROM ({}) AS o(classid, objid),"
                    " LATERAL pg_catalog.pg_identify_object_as_address(o.classid, o.objid, 0) AS a").format(union)
        ).fetchall()
    }
    return {(int(c), int(o)) for c, o, t, n, a in rows if (str(t), tuple(n or ()), tuple(a or ())) in there}
