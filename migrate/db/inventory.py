"""Read-only catalog queries about one database: what there is to copy, and how big it is."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migrate.db.connect import qualified

log = logging.getLogger(__name__)

# User schemas: not the system ones, not another session's temp schemas.
USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    " AND n.nspname NOT LIKE 'pg_temp_%' AND n.nspname NOT LIKE 'pg_toast_temp_%'"
)
NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
    " AND d.objid = c.oid AND d.deptype = 'e')"
)
# An extension's configuration tables and sequences (pg_extension_config_dump: pg_partman's
# part_config, pg_cron's cron.job, PostGIS's spatial_ref_sys): members whose rows are the user's, so
# pg_dump copies them (a table's rows matching its condition, "" or "WHERE ..."). `c` is pg_class.
EXTENSION_CONFIG = (
    "(SELECT x.cond FROM pg_extension e CROSS JOIN LATERAL unnest(e.extconfig, e.extcondition) AS x(rel, cond)"
    " WHERE x.rel = c.oid LIMIT 1)"
)
COPIED = f"({NOT_EXTENSION_MEMBER} OR {EXTENSION_CONFIG} IS NOT NULL)"
# Types whose binary form is an oid (the same names have other oids on another server): a table with
# a column of one (or of an array, domain, range or composite over one) is copied in text, where they
# are names (schema-qualified, with search_path ''), as pg_dump does.
OID_NAME_TYPES_SQL = """
WITH RECURSIVE t(oid) AS (
    SELECT oid FROM pg_type WHERE typnamespace = 'pg_catalog'::regnamespace AND typname IN
        ('regproc', 'regprocedure', 'regoper', 'regoperator', 'regclass', 'regtype', 'regrole',
         'regnamespace', 'regconfig', 'regdictionary', 'regcollation')
    UNION
    SELECT d.oid FROM t JOIN (
        SELECT oid, typelem AS dep FROM pg_type WHERE typelem <> 0
        UNION ALL SELECT oid, typbasetype FROM pg_type WHERE typbasetype <> 0
        UNION ALL SELECT rngtypid, rngsubtype FROM pg_range
        UNION ALL SELECT y.oid, a.atttypid FROM pg_type y JOIN pg_class k ON k.oid = y.typrelid AND k.relkind = 'c'
                  JOIN pg_attribute a ON a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped
    ) d ON d.dep = t.oid
)
SELECT DISTINCT a.attrelid::bigint FROM pg_attribute a JOIN t ON t.oid = a.atttypid
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""


@dataclass
class TableInfo:
    schema: str
    name: str
    oid: int
    bytes: int  # heap + toast, no indexes
    rows_estimate: int
    pages: int
    columns: list[str] = field(default_factory=list)  # copyable: not dropped, not generated
    pk_int_column: str | None = None  # a single-column integer primary key, for range splits
    index_bytes: int = 0
    text_only: bool = False  # a column holds oids of named objects (regclass...): copied as text
    config_filter: str | None = None  # an extension's configuration table: the rows copied ("", "WHERE ...")

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


SPLIT_LONGEST_MIN = 64 * 1024 * 1024  # the longest chain's table is split over the jobs above this size


def longest_chain(tables: list[TableInfo]) -> TableInfo | None:
    """The table with the most data + index work: its load and index builds are the longest chain."""
    return max((t for t in tables if t.columns), key=lambda t: t.bytes + t.index_bytes, default=None)


def split_parts(table: TableInfo, longest: TableInfo | None, threshold: int, jobs: int,
                server_version_num: int) -> int:
    """How many ranges a parallel copy loads `table` in: tables above `threshold` by size; the longest
    chain's table over all jobs (so that its index builds can start early); 1 when the table has
    neither an integer primary key nor ctid ranges (PostgreSQL 14+) to split by."""
    if jobs <= 1 or table.config_filter is not None or not (table.pk_int_column or server_version_num >= 140000):
        return 1
    if table.bytes > threshold:
        return min(max(2, math.ceil(table.bytes / threshold)), 4 * jobs)
    if table is longest and table.bytes > SPLIT_LONGEST_MIN:
        return jobs
    return 1


def key_ranges(conn: psycopg.Connection, table: TableInfo, parts: int, *, ctid_ranges: bool
               ) -> tuple[str, list[int]]:
    """How a table with an integer primary key is read in `parts`: ("pages", []) in page (ctid)
    ranges when `ctid_ranges` (PostgreSQL 14+: a TID range scan reads its pages once, in order);
    else ("key", bounds) in key ranges cut at `bounds`, or ("whole", []) when it has no rows.

    Page ranges are always the cheaper read where the server has them. A key range is read through
    the key's index: measured on the bench's 1M-row orders and 2M-row pgbench_accounts (rows in key
    order), two key ranges took 0.87-0.93 s and 0.93-0.95 s to COPY out, two page ranges 0.80-0.87 s
    and 0.82-0.85 s; with rows not in key order every key range reads most of the table's pages
    (migrate.db.layout: 4 key ranges 1.65 s vs 0.95 s). Both read the copy's snapshot, so both are
    consistent; a resumed copy needs an unchanged source either way (see migrate.db.resume). Read-only."""
    if ctid_ranges:
        return "pages", []
    col = sql.Identifier(table.pk_int_column or "").as_string(None)
    rel = qualified(table.schema, table.name)
    lo, hi = conn.execute(f"SELECT min({col}), max({col}) FROM ONLY {rel}").fetchone()  # type: ignore[misc]
    if lo is None:
        return "whole", []
    step = max(1, math.ceil((hi - lo + 1) / parts))
    return "key", [lo + i * step for i in range(1, parts) if lo + i * step <= hi]


@dataclass
class Inventory:
    server_version_num: int
    server_version: str
    database: str
    encoding: str
    database_bytes: int
    tables: list[TableInfo]
    extensions: dict[str, str]  # name -> version
    sequences: list[tuple[str, str]]
    large_objects: int
    matviews: int
    user: str
    is_superuser: bool

    @property
    def total_table_bytes(self) -> int:
        return sum(t.bytes for t in self.tables)



def list_tables(conn: psycopg.Connection) -> list[TableInfo]:
    """Every plain table holding rows of its own: ordinary tables, leaf partitions and inheritance
    children (copied with FROM ONLY / COPY of that table alone); not partitioned parents, views,
    foreign tables or extension members. Biggest first."""
    rows = conn.execute(
        f"""
        SELECT n.nspname, c.relname, c.oid::bigint,
               pg_table_size(c.oid), c.reltuples::bigint, c.relpages::bigint,
               pg_indexes_size(c.oid), {EXTENSION_CONFIG}
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND {USER_SCHEMA} AND {COPIED}
        ORDER BY pg_table_size(c.oid) DESC, n.nspname, c.relname
        """
    ).fetchall()
    tables = [TableInfo(r[0], r[1], r[2], r[3], r[4], r[5], index_bytes=r[6], config_filter=r[7]) for r in rows]
    if not tables:
        return tables
    cols = conn.execute(
        """
        SELECT a.attrelid::bigint, a.attname
        FROM pg_attribute a
        WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        ORDER BY a.attrelid, a.attnum
        """,
        ([t.oid for t in tables],),
    ).fetchall()
    by_oid = {t.oid: t for t in tables}
    for oid, name in cols:
        by_oid[oid].columns.append(name)
    pks = conn.execute(
        """
        SELECT i.indrelid::bigint, a.attname
        FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indisprimary AND i.indnatts = 1 AND i.indrelid = ANY(%s)
          AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
        """,
        ([t.oid for t in tables],),
    ).fetchall()
    for oid, col in pks:
        by_oid[oid].pk_int_column = col
    for (oid,) in conn.execute(OID_NAME_TYPES_SQL, ([t.oid for t in tables],)).fetchall():
        by_oid[oid].text_only = True
    for t in tables:
        # reltuples is -1 until the first VACUUM or ANALYZE (PostgreSQL 14+; 0 before): a freshly loaded
        # source would show 0 rows. Ask the planner instead, which estimates from the table's current
        # size and row width without reading it (for an empty file it would assume 10 pages: not asked).
        if t.rows_estimate < 0 or (t.rows_estimate == 0 and t.pages == 0):
            t.rows_estimate = _planner_rows(conn, t) if t.bytes > 0 else 0
    return tables


SMALL_TABLE_BYTES = 10 * 8192  # below this the planner assumes 10 pages: count instead (it is cheap)


def _planner_rows(conn: psycopg.Connection, table: TableInfo) -> int:
    """The planner's row estimate for a never-analyzed table (a count for a small one); 0 if the table
    cannot be read or is locked (the estimate is only shown, never relied on)."""
    rel = sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))
    small = table.bytes <= SMALL_TABLE_BYTES
    query = (sql.SQL("SELECT count(*) FROM ONLY {}") if small else
             sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM ONLY {}")).format(rel)
    try:
        with conn.transaction():  # a savepoint: a table we may not read must not end the caller's transaction
            old = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
            conn.execute("SELECT set_config('lock_timeout', '2s', true)")
            row = conn.execute(query).fetchone()
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (old[0] if old else "0",))
        if small:
            return int(row[0])  # type: ignore[index]
        return max(int(row[0][0]["Plan"]["Plan Rows"]), 0)  # type: ignore[index]
    except (psycopg.Error, TypeError, KeyError, IndexError, ValueError):
        return 0


def take_inventory(conn: psycopg.Connection) -> Inventory:
    """Read-only: versions, sizes, tables, extensions, sequences, large objects."""
    version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    encoding = str(conn.execute("SHOW server_encoding").fetchone()[0])  # type: ignore[index]
    db, size, user, su = conn.execute(
        "SELECT current_database(), pg_database_size(current_database()), current_user,"
        " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
    ).fetchone()  # type: ignore[misc]
    exts: dict[str, str] = dict(
        conn.execute("SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1").fetchall()
    )
    seqs = conn.execute(
        f"""
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND {USER_SCHEMA} AND {COPIED} ORDER BY 1, 2
        """
    ).fetchall()
    los = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]  # type: ignore[index]
    mvs = conn.execute(
        f"SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relkind = 'm' AND {USER_SCHEMA}"
    ).fetchone()[0]  # type: ignore[index]
    return Inventory(
        server_version_num=version_num,
        server_version=version,
        database=db,
        encoding=encoding,
        database_bytes=int(size),
        tables=list_tables(conn),
        extensions=exts,
        sequences=[(s, n) for s, n in seqs],
        large_objects=int(los),
        matviews=int(mvs),
        user=user,
        is_superuser=bool(su),
    )


def user_relations(conn: psycopg.Connection) -> list[str]:
    """Tables, views, sequences... that a user created (what makes a target 'not empty')."""
    rows = conn.execute(
        f"""
        SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER}
        ORDER BY 1
        """
    ).fetchall()
    return [r[0] for r in rows]


@dataclass
class EarlyIndex:
    """An index (or the constraint it backs) we build as soon as its table's data has landed."""

    table_oid: int
    catalog: int  # 1259 pg_class (index) or 2606 pg_constraint, as in pg_restore's TOC
    object_oid: int
    name: str
    statement: str
    method: str = "btree"  # the index access method
    bytes: int = 0  # its size on the source: a proxy for how long it takes to build
    # ALTER TABLE steps run once every build is done (they take locks that would wait for them).
    finish: list[str] = field(default_factory=list)


def early_indexes(conn: psycopg.Connection, tables: list[TableInfo]) -> list[EarlyIndex]:
    """Valid indexes and PK/UNIQUE/EXCLUDE constraints of plain, unpartitioned tables, as DDL.

    Partitions and partitioned parents are left to pg_restore (their indexes are attached to the
    parent's). Not those of extensions' configuration tables: CREATE EXTENSION made them. Read-only."""
    tables = [t for t in tables if t.config_filter is None]
    if not tables:
        return []
    rows = conn.execute(
        """
        SELECT i.indrelid::bigint, ic.oid::bigint, ic.relname, pg_get_indexdef(i.indexrelid),
               con.oid::bigint, con.conname, pg_get_constraintdef(con.oid), i.indisclustered, i.indisreplident,
               am.amname, pg_relation_size(i.indexrelid), con.contype::text, con.condeferrable, con.condeferred
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_am am ON am.oid = ic.relam
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                   AND con.contype IN ('p', 'u', 'x')
        WHERE i.indrelid = ANY(%s) AND i.indisvalid AND i.indislive
          AND NOT t.relispartition AND t.relkind = 'r'
          AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
          -- per-column statistics targets travel inside pg_dump's index entry: leave those to pg_restore
          AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indexrelid AND a.attstattarget > 0)
        ORDER BY i.indrelid, (con.oid IS NULL), ic.relname
        """,
        ([t.oid for t in tables],),
    ).fetchall()
    by_oid = {t.oid: t for t in tables}
    out: list[EarlyIndex] = []
    from psycopg import sql as _sql

    for (table_oid, index_oid, index_name, indexdef, con_oid, con_name, condef, clustered, replident,
         method, size, contype, deferrable, deferred) in rows:
        t = by_oid[table_oid]
        rel = f"{_sql.Identifier(t.schema).as_string(None)}.{_sql.Identifier(t.name).as_string(None)}"
        idx = _sql.Identifier(index_name).as_string(None)
        if con_oid is None:
            item = EarlyIndex(table_oid, 1259, index_oid, f"{t.schema}.{index_name}", indexdef, method, int(size))
        elif contype in ("p", "u"):
            # Build the unique index like any other (a SHARE lock: concurrent with the table's other
            # builds), then attach it as the constraint; ADD CONSTRAINT itself would need ACCESS
            # EXCLUSIVE and wait for every other build on the table.
            con = _sql.Identifier(con_name).as_string(None)
            kind = "PRIMARY KEY" if contype == "p" else "UNIQUE"
            attach = f"ALTER TABLE ONLY {rel} ADD CONSTRAINT {con} {kind} USING INDEX {idx}"
            if deferrable:
                attach += " DEFERRABLE" + (" INITIALLY DEFERRED" if deferred else "")
            item = EarlyIndex(table_oid, 2606, con_oid, f"{t.schema}.{con_name}", indexdef, method, int(size),
                              finish=[attach])
            idx = con  # USING INDEX renames the index to the constraint's name
        else:  # an exclusion constraint cannot be attached from an index: create it whole
            stmt = f"ALTER TABLE ONLY {rel} ADD CONSTRAINT {_sql.Identifier(con_name).as_string(None)} {condef}"
            item = EarlyIndex(table_oid, 2606, con_oid, f"{t.schema}.{con_name}", stmt, method, int(size))
        # pg_dump emits these inside the index's own entry, which pg_restore will now skip.
        if clustered:
            item.finish.append(f"ALTER TABLE {rel} CLUSTER ON {idx}")
        if replident:
            item.finish.append(f"ALTER TABLE ONLY {rel} REPLICA IDENTITY USING INDEX {idx}")
        out.append(item)
    return out


def analyze_after_post_data(conn: psycopg.Connection, tables: list[TableInfo], early: list[EarlyIndex]) -> set[int]:
    """Tables whose statistics depend on something post-data creates, so ANALYZE waits for it: an
    expression index pg_restore builds (its expressions get statistics), extended statistics objects
    (CREATE STATISTICS is post-data), and inheritance parents (their statistics cover children that may
    land later). Every other table can be analyzed as soon as its data and indexes are in. Read-only."""
    oids = [t.oid for t in tables]
    early_indexes = [e.object_oid for e in early if e.catalog == 1259]
    early_constraints = [e.object_oid for e in early if e.catalog == 2606]
    rows = conn.execute(
        """
        SELECT i.indrelid::bigint FROM pg_index i
        WHERE i.indexprs IS NOT NULL AND i.indrelid = ANY(%(t)s) AND NOT i.indexrelid = ANY(%(i)s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.oid = ANY(%(c)s))
        UNION SELECT stxrelid::bigint FROM pg_statistic_ext WHERE stxrelid = ANY(%(t)s)
        UNION SELECT inhparent::bigint FROM pg_inherits WHERE inhparent = ANY(%(t)s)
        """,
        {"t": oids, "i": early_indexes, "c": early_constraints},
    ).fetchall()
    return {int(r[0]) for r in rows}
