"""Server-side, order-independent hashes of table contents, over whole tables or primary-key ranges.

A row's fingerprint is two 64-bit hashes, columns by name in the source's order. When both
servers compute PostgreSQL's extended hash functions alike (PostgreSQL 11+, checked by a probe),
each column whose type has an exact, cheap hash (integers, oid, text, varchar, char(n), uuid,
timestamp, timestamptz) is hashed on its own with a seed of its position, and the other columns
together through their text form (`ROW(col, ...)::text` and hashtextextended); the row's hash is
the XOR of these. Otherwise it is the two halves of the md5 of the whole row's text form.
Converting a row to text costs most of a scan (record_out calls every column's output function):
hashing the value directly is 2.5-4x cheaper on an integer/char(n) table. A range's fingerprint
is (count, sum of the first hashes, sum of the second): sums do not depend on row order and,
unlike XOR, a duplicated row changes them. A difference goes unseen only if both sums happen to
coincide: about 2^-64 for a changed, missing or extra row; about 2^-53 for one value swapped
between two rows (within a row the column hashes are XORed, across rows summed: the carries
differ in about 3/4 of the bits, per sum).
Everything is aggregated by the server; Python only ever receives three numbers per range, or
(for a range the caller has bounded to a small size) keys and row md5s.

Read-only. The caller pins the session settings the text form depends on (connect.pin_session)
and `search_path = pg_catalog`, on both sides, before calling anything here.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field, replace

import psycopg

from migrate.db import layout
from migrate.db.connect import qualified, quote_ident
from migrate.db.inventory import COPIED

log = logging.getLogger(__name__)

# float4/float8: hashed through their binary form, because their text form changed in PostgreSQL 12
# (shortest exact output) and the source (PaaS) and target (RDS) may straddle that version.
# NaN is compared as a value: its bit pattern is not preserved by a dump and restore.
_FLOAT_TYPES = {700, 701}
# Scalar key types whose order is the same on every server (no collation, no enum or composite
# order) and whose text form parses back as one value: their histogram bounds cut ranges, and
# width_bucket() places keys among bounds. int2, int4, int8, oid, numeric, float4/8, date, time,
# timestamp, timestamptz, interval, uuid. Other keys: a pass over the key, and row comparisons.
_ORDERED_SCALARS = {21, 23, 20, 26, 1700, 700, 701, 1082, 1083, 1114, 1184, 1186, 2950}
MIN_HISTOGRAM_PARTS = 4  # narrowing takes the histogram's cut only if it gives at least this many parts


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_sql: str  # format_type(), for casting key literals back
    collatable: bool
    # The schema of the comparison operators of the type's default b-tree class when it is not
    # pg_catalog (an extension's type: ltree, citext, isn): named in key comparisons, since
    # verify's sessions search pg_catalog only.
    op_schema: str | None = None


@dataclass(frozen=True)
class TableInfo:
    """A relation whose rows are compared: a leaf table/partition or a populated materialized view."""

    schema: str
    name: str
    relkind: str  # r or m
    columns: tuple[Column, ...]
    key: tuple[Column, ...]  # primary key columns, () without one
    estimated_rows: int
    has_children: bool  # an inheritance parent: its own rows only (FROM ONLY)
    populated: bool = True
    display: str = ""  # quote_ident()ed by the server, as the schema diffs name it

    @property
    def qualified(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def kind(self) -> str:
        return "materialized view data" if self.relkind == "m" else "table data"


_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relkind::text, quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       (SELECT coalesce(json_agg(json_build_array(a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod),
                                                  a.attcollation <> 0, (
           SELECT nullif(on_.nspname, 'pg_catalog') FROM pg_opclass oc
           JOIN pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 1
                          AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype
           JOIN pg_operator o ON o.oid = ao.amopopr JOIN pg_namespace on_ ON on_.oid = o.oprnamespace
           WHERE oc.opcmethod = 403 AND oc.opcdefault  -- a domain's: its base type's (one level)
             AND oc.opcintype = (SELECT coalesce(nullif(ty.typbasetype, 0), ty.oid) FROM pg_type ty
                                 WHERE ty.oid = a.atttypid) LIMIT 1)) ORDER BY a.attnum), '[]')
        FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT coalesce(json_agg(a.attname ORDER BY k.ord), '[]')
        FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary),
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint
            ELSE (pg_relation_size(c.oid) / 100)::bigint END,
       EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhparent = c.oid),
       c.relispopulated
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
  AND {copied}
ORDER BY 1, 2
""".replace("{copied}", COPIED)  # not extension members, but for extensions' configuration tables


def list_tables(conn: psycopg.Connection) -> dict[tuple[str, str], TableInfo]:
    """Leaf tables (partitions included, partitioned parents excluded) and materialized views. Read-only."""
    out: dict[tuple[str, str], TableInfo] = {}
    for schema, name, relkind, display, cols, key, est, has_children, populated in conn.execute(_TABLES_SQL):
        columns = tuple(Column(c[0], int(c[1]), c[2], bool(c[3]), c[4]) for c in cols)
        by_name = {c.name: c for c in columns}
        out[(schema, name)] = TableInfo(
            schema,
            name,
            relkind,
            columns,
            tuple(by_name[k] for k in key),
            int(est or 0),
            bool(has_children),
            bool(populated),
            display,
        )
    return out


def _value_expr(col: Column) -> str:
    ref = f"t.{quote_ident(col.name)}"
    if col.type_oid in _FLOAT_TYPES:
        return f"CASE WHEN {ref} = 'NaN' THEN 'NaN' ELSE encode(float8send({ref}::float8), 'hex') END"
    return ref


def _key_expr(col: Column) -> str:
    # Collatable keys compare byte-wise: the two servers may use different collations, and a range
    # must hold the same rows on both sides.
    ref = f"t.{quote_ident(col.name)}"
    return f'{ref} COLLATE "C"' if col.collatable else ref


def row_text_expr(columns: tuple[Column, ...]) -> str:
    return "ROW(" + ", ".join(_value_expr(c) for c in columns) + ")::text"


# Types hashed by value, keyed by type oid, each exact on the value (equal hash input iff equal text
# form, given pinned session settings): int2, int4, int8, oid, text, varchar, uuid, timestamp,
# timestamptz. Not the opclass functions of int8 and timestamps: they fold 64 bits into 32 first
# (-1 and 4294967295 hash alike under every seed), so int8 hashes its two halves chained (the low
# half's hash seeds the high half's), and timestamps their 8-byte binary form (the instant itself,
# whatever the session's TimeZone). Not numeric (its hash ignores the scale: 1.0 and 1.00), nor
# jsonb (its numbers likewise), nor floats (-0 and 0), nor enums (hashes the oid, which differs
# between servers), nor domains (their own oid: they take the text path). char(n) is handled apart.
_TYPED_HASH = {
    21: "hashint2extended({v}, {s})",
    23: "hashint4extended({v}, {s})",
    20: "hashint4extended(({v} >> 32)::int4, hashoidextended(({v} & 4294967295)::oid, {s}))",
    26: "hashoidextended({v}, {s})",
    25: 'hashtextextended({v} COLLATE "C", {s})',
    1043: 'hashtextextended({v} COLLATE "C", {s})',
    2950: "uuid_hash_extended({v}, {s})",
    1114: "hashtextextended(encode(timestamp_send({v}), 'hex') COLLATE \"C\", {s})",
    1184: "hashtextextended(encode(timestamptz_send({v}), 'hex') COLLATE \"C\", {s})",
}
_BPCHAR = 1042
_INTEGER_TYPES = {20, 21, 23, 26}  # int8, int2, int4, oid: keys ordered as numbers in reports


def typed_hash_expr(col: Column, seed: int) -> str | None:
    """A seeded 64-bit hash of the column's value (never NULL), or None for a column hashed as text."""
    ref = f"t.{quote_ident(col.name)}"
    template = _TYPED_HASH.get(col.type_oid)
    if template is None and col.type_oid == _BPCHAR and col.type_sql.startswith("character("):
        # char(n) stores every value padded to n, so its hash (which ignores trailing spaces) is
        # exact; an unconstrained bpchar keeps trailing spaces the hash would ignore: text path.
        template = 'hashbpcharextended({v} COLLATE "C", {s})'
    if template is None:
        return None
    # NULL hashes to the seed itself: distinct per column, and a value hashing to it is a 2^-64 chance.
    return f"coalesce({template.format(v=ref, s=seed)}, {seed})"


HASH_MD5 = "md5"
HASH_BUILTIN = "per-column hash"
# Every hash function the fingerprint may call, on a value of its type: the two servers must agree on all.
_PROBE = """SELECT concat_ws(' ',
    hashtextextended('paas-migrate probe: ✓ 0.30000000000000004' COLLATE "C", 0),
    hashint2extended(-12345::int2, 3), hashint4extended(-1234567890, 4),
    hashint4extended((-1234567890123456789::int8 >> 32)::int4,
                     hashoidextended((-1234567890123456789::int8 & 4294967295)::oid, 5)),
    hashoidextended(4000000000::oid, 6), uuid_hash_extended('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, 7),
    hashtextextended(encode(timestamp_send('2024-02-29 23:59:59.999999'::timestamp), 'hex') COLLATE "C", 8),
    hashtextextended(encode(timestamptz_send('1999-12-31 23:00:00.5-05'::timestamptz), 'hex') COLLATE "C", 9),
    hashbpcharextended('ü  '::char(5) COLLATE "C", 10))"""


def builtin_hash_usable(source: psycopg.Connection, target: psycopg.Connection) -> bool:
    """Whether both servers have the extended hash functions (PostgreSQL 11+) and hash alike.

    Hashing values directly costs far less than md5 of the row's text, so it is preferred; the
    probe guards against any platform or version where the two servers would disagree.
    """
    results = []
    for conn in (source, target):
        try:
            with conn.transaction():
                row = conn.execute(_PROBE).fetchone()
        except psycopg.Error:
            return False
        results.append(row[0] if row else None)
    return results[0] is not None and results[0] == results[1]


# A bound is the key's text form per column; None on either end means unbounded.
Bound = tuple[str, ...]


@dataclass(frozen=True)
class KeyRange:
    lo: Bound | None = None  # inclusive
    hi: Bound | None = None  # exclusive

    @property
    def bounded(self) -> bool:
        return self.lo is not None or self.hi is not None

    def describe(self, key: tuple[Column, ...]) -> str:
        names = ", ".join(c.name for c in key)
        lo = "start" if self.lo is None else ", ".join(self.lo)
        hi = "end" if self.hi is None else ", ".join(self.hi)
        return f"({names}) from {lo} to {hi}" + ("" if self.hi is None else " (exclusive)")


@dataclass
class Fingerprint:
    count: int
    sum_hi: int
    sum_lo: int

    def same(self, other: Fingerprint) -> bool:
        return (self.count, self.sum_hi, self.sum_lo) == (other.count, other.sum_hi, other.sum_lo)

    def __add__(self, other: Fingerprint) -> Fingerprint:
        """The fingerprint of two disjoint sets of rows together (counts and sums add up exactly)."""
        return Fingerprint(self.count + other.count, self.sum_hi + other.sum_hi, self.sum_lo + other.sum_lo)


@dataclass
class Hasher:
    """Builds the SQL for one table, given the columns compared and the key used for ranges."""

    table: TableInfo
    columns: tuple[Column, ...]
    key: tuple[Column, ...] = field(default_factory=tuple)
    algorithm: str = HASH_MD5
    # Columns that may be hashed by value: those of the same type on both sides (a source int4
    # hashed with hashint4extended would not even run on a target's int8; a char(3) hash would hide
    # a target text column's trailing spaces). The others go through the row's text. None: all.
    by_value: frozenset[str] | None = None
    # The two databases' encodings differ: text is hashed as its UTF-8 bytes (the md5 algorithm only).
    utf8: bool = False
    # A query whose rows are hashed in place of the relation's: a materialized view's defining
    # query (defining_query()), its columns named as the view's.
    query: str | None = None

    @property
    def source(self) -> str:
        if self.query is not None:
            return f"({self.query}) t({', '.join(quote_ident(c.name) for c in self.table.columns)})"
        only = "ONLY " if self.table.relkind == "r" else ""
        return f"{only}{self.table.qualified} t"

    def _md5(self, text: str) -> str:
        """md5 of a text expression's bytes: in UTF-8 when the two servers' encodings differ."""
        return f"md5(convert_to({text}, 'UTF8'))" if self.utf8 else f"md5({text})"

    def defining_query(self, conn: psycopg.Connection) -> Hasher:
        """This hasher over the rows a materialized view's query gives now (pg_get_viewdef), not the
        rows the view stored at its last refresh. Reads only the catalog; the caller runs the query."""
        row = conn.execute("SELECT pg_get_viewdef(%s::regclass)", (self.table.qualified,)).fetchone()
        if row is None or row[0] is None:
            raise psycopg.DataError(f"no definition for {self.table.display}")
        return replace(self, query=str(row[0]).strip().rstrip(";"))

    def _key_row(self) -> str:
        return "(" + ", ".join(_key_expr(c) for c in self.key) + ")"

    def _literal_row(self, bound: Bound) -> str:
        return "(" + ", ".join(self._literals(bound)) + ")"

    def _compare(self, op: str, bound: Bound) -> str:
        """The key compared with `bound` (op: <, >= or =), in key order (row-wise). Where a key
        column's operators live outside pg_catalog, spelled out column by column with each
        column's operators named (OPERATOR(schema.<)): a row comparison takes one operator name."""
        if not any(c.op_schema for c in self.key):
            return f"{self._key_row()} {op} {self._literal_row(bound)}"

        def cmp(col: Column, lit: str, o: str) -> str:
            return f"{_key_expr(col)} OPERATOR({quote_ident(col.op_schema or 'pg_catalog')}.{o}) {lit}"

        lits = self._literals(bound)
        if op == "=":
            return "(" + " AND ".join(cmp(c, lit, "=") for c, lit in zip(self.key, lits, strict=True)) + ")"
        last = ">=" if op == ">=" else "<"
        strict = ">" if op == ">=" else "<"
        expr = cmp(self.key[-1], lits[-1], last)
        for col, lit in zip(reversed(self.key[:-1]), reversed(lits[:-1]), strict=True):
            expr = f"{cmp(col, lit, strict)} OR ({cmp(col, lit, '=')} AND ({expr}))"
        return f"({expr})"

    def _literals(self, bound: Bound) -> list[str]:
        out = []
        for col, value in zip(self.key, bound, strict=True):
            expr = f"{psycopg.sql.Literal(value).as_string(None)}::{col.type_sql}"
            out.append(f'{expr} COLLATE "C"' if col.collatable else expr)
        return out

    def where(self, rng: KeyRange) -> str:
        conds = []
        if rng.lo is not None:
            conds.append(self._compare(">=", rng.lo))
        if rng.hi is not None:
            conds.append(self._compare("<", rng.hi))
        return (" WHERE " + " AND ".join(conds)) if conds else ""

    def fingerprint_sql(self, rng: KeyRange, pages: str | None = None, part: str | None = None) -> str:
        """The count and sums of `rng`'s rows; or, with `pages` (a ctid predicate), of those pages'
        rows on this side only (pages hold other rows on each side: only whole sides compare). With
        `part` (an expression over the row), one result row per part, the part first."""
        where = self.where(rng) if pages is None else f" WHERE {pages}"
        # part: in the innermost select (it reads the row), then grouped by in the outer one.
        lead, inner, group = ("", "", "") if part is None else ("part, ", f"{part} AS part, ", " GROUP BY part")
        # OFFSET 0 keeps the subquery from being flattened, which would compute each row's text
        # (or md5) once per sum instead of once.
        if self.algorithm == HASH_BUILTIN and not self.utf8:
            # Two independently seeded 64-bit hashes per row, each summed exactly. Column i's own
            # hashes use seeds 2i+2 and 2i+3 (so swapped columns differ); the text of the rest, 0 and 1.
            typed: list[tuple[str, str]] = []
            rest: list[Column] = []
            for i, col in enumerate(self.columns):
                same_type = self.by_value is None or col.name in self.by_value
                a = typed_hash_expr(col, 2 * i + 2) if same_type else None
                b = typed_hash_expr(col, 2 * i + 3) if same_type else None
                if a is None or b is None:
                    rest.append(col)
                else:
                    typed.append((a, b))
            ha, hb = (" # ".join(h[i] for h in typed) or "0" for i in (0, 1))
            if not rest:  # no subquery: its projection costs ~20% on a narrow table
                return (
                    f"SELECT {inner}count(*), coalesce(sum({ha}), 0), coalesce(sum({hb}), 0)"
                    f" FROM {self.source}{where}{group.replace('part', '1')}"
                )
            return (
                f'SELECT {lead}count(*), coalesce(sum(ha # hashtextextended(r COLLATE "C", 0)), 0),'
                ' coalesce(sum(hb # hashtextextended(r COLLATE "C", 1)), 0)'
                f" FROM (SELECT {inner}{ha} AS ha, {hb} AS hb, {row_text_expr(tuple(rest))} AS r"
                f" FROM {self.source}{where} OFFSET 0) q{group}"
            )
        return (
            # sum(bigint) is exact (it accumulates in 128 bits and returns numeric) and twice as fast
            # as summing numerics.
            f"SELECT {lead}count(*), coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0),"
            " coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)"
            f" FROM (SELECT {inner}{self._md5(row_text_expr(self.columns))} AS h FROM {self.source}{where}"
            f" OFFSET 0) q{group}"
        )

    def fingerprint(self, conn: psycopg.Connection, rng: KeyRange, pages: str | None = None) -> Fingerprint:
        row = conn.execute(self.fingerprint_sql(rng, pages)).fetchone()
        assert row is not None
        return Fingerprint(int(row[0]), int(row[1]), int(row[2]))

    def boundaries(self, conn: psycopg.Connection, rng: KeyRange, every: int) -> list[Bound]:
        """Keys that start every `every`-th row of `rng` (in key order), first row excluded.

        One pass over the key (an index scan for an ordinary primary key); returns only the bounds.
        """
        keys = ", ".join(f"{_key_expr(c)} AS k{i}" for i, c in enumerate(self.key))
        texts = ", ".join(f"k{i}::text" for i in range(len(self.key)))
        query = (
            f"SELECT {texts} FROM (SELECT {keys}, row_number() OVER (ORDER BY {self._key_row()}) AS rn"
            f" FROM {self.source}{self.where(rng)}) s WHERE (rn - 1) % {int(every)} = 0 AND rn > 1 ORDER BY s.rn"
        )
        return [tuple(r) for r in conn.execute(query).fetchall()]

    def split(self, conn: psycopg.Connection, rng: KeyRange, every: int, rows: int) -> list[KeyRange]:
        """`rng` (holding `rows` rows on this side) in ranges of about `every` rows: at the
        histogram's bounds where they serve (no read of the table), else at keys found by one pass
        over the key."""
        bounds: list[Bound] | None = None
        try:
            with conn.transaction():  # a savepoint: only an estimate
                bounds = self.histogram_bounds(conn, every, rng, rows=rows)
        except psycopg.Error as exc:
            log.debug("histogram bounds of %s not usable: %s", self.table.display, exc)
        return _tile(rng, bounds or self.boundaries(conn, rng, every))

    def histogram_bounds(self, conn: psycopg.Connection, every: int, rng: KeyRange | None = None,
                         *, rows: int | None = None) -> list[Bound] | None:
        """Keys that cut the table (or `rng`) into ranges of about `every` rows, from the planner's
        statistics (pg_stats' histogram of the key column), without reading the table; None when
        they cannot be used: a composite or collatable key (its histogram is in the column's
        collation, the ranges compare byte-wise) or one of another type than _ORDERED_SCALARS, no
        histogram (never analysed), or no bound inside `rng`. With `rows` (narrowing: the rows
        `rng` holds on this side), the bounds inside are taken as splitting those rows evenly, and
        None when they would give fewer than MIN_HISTOGRAM_PARTS parts or parts finer than a
        bucket. (A pass over the key, boundaries(), reads the rows in key order: where they are not
        stored so, that is a random read.)

        Any increasing bounds tile the table exactly, so stale statistics only make ranges uneven
        (the last range, unbounded, takes rows added since).
        """
        if len(self.key) != 1 or self.key[0].collatable or self.key[0].type_oid not in _ORDERED_SCALARS:
            return None
        col = self.key[0]
        rng = rng or KeyRange()
        inside = [f"d.b > {self._literal_row(rng.lo)[1:-1]}" if rng.lo is not None else "true",
                  f"d.b < {self._literal_row(rng.hi)[1:-1]}" if rng.hi is not None else "true"]
        query = (
            # Ordered by the key's type (ORDER BY d.b: the output column is its text form).
            f"SELECT d.b::text AS bound, {' AND '.join(inside)} FROM (SELECT DISTINCT b FROM unnest(("
            "SELECT s.histogram_bounds::text FROM pg_stats s"
            " WHERE s.schemaname = %s AND s.tablename = %s AND s.attname = %s AND NOT s.inherited"
            f")::{col.type_sql}[]) AS b) d ORDER BY d.b"
        )
        found = conn.execute(query, (self.table.schema, self.table.name, col.name)).fetchall()
        if len(found) < 3:
            return None
        candidates = [b for b, ok in found[1:-1] if ok]  # not the histogram's min and max
        if rows is None:  # the whole table
            per_bucket = max(1.0, self.table.estimated_rows / (len(found) - 1))
        else:
            per_bucket = rows / (len(candidates) + 1)
            if per_bucket < 1 or every < per_bucket:
                return None
        step = max(1, round(every / per_bucket))
        chosen: list[Bound] = [(str(b),) for b in candidates[step - 1::step]]
        if rows is not None and len(chosen) + 1 < MIN_HISTOGRAM_PARTS:
            return None  # (stale or skewed statistics: a pass gives the parts asked for)
        return chosen

    def initial_split(self, conn: psycopg.Connection, every: int) -> list[KeyRange]:
        """The whole table in ranges of about `every` rows: from statistics when they serve, else
        by one pass over the key."""
        bounds = self.histogram_bounds(conn, every)
        return _tile(KeyRange(), self.boundaries(conn, KeyRange(), every) if bounds is None else bounds)

    def range_reads(self, conn: psycopg.Connection, ranges: list[KeyRange]) -> float | None:
        """migrate.db.layout.range_reads() for these consecutive ranges of a single-column key that is
        not collatable; None for other keys (not estimated)."""
        if len(self.key) != 1 or self.key[0].type_oid not in _ORDERED_SCALARS or len(ranges) < 2:
            return None
        col = self.key[0]
        bounds = ", ".join(f"{psycopg.sql.Literal(r.lo[0]).as_string(None)}::{col.type_sql}"
                           for r in ranges[1:] if r.lo is not None)
        return layout.range_reads(conn, self.table.qualified, _key_expr(col), f"ARRAY[{bounds}]::{col.type_sql}[]",
                                  only=self.table.relkind == "r")

    def fingerprints_by_range(self, conn: psycopg.Connection, rng: KeyRange, subs: list[KeyRange]) -> list[Fingerprint]:
        """The fingerprints of `subs` (consecutive ranges tiling `rng`) in one read of `rng`: each row
        is put in its part by comparing its key with the parts' bounds (as where() compares)."""
        his = [s.hi for s in subs[:-1] if s.hi is not None]
        if not his:
            part = "0"
        elif len(self.key) == 1 and self.key[0].type_oid in _ORDERED_SCALARS:
            # One binary search per row (width_bucket: how many bounds are <= the key).
            col = self.key[0]
            bounds = ", ".join(self._literal_row(hi)[1:-1] for hi in his)
            part = f"width_bucket({_key_expr(col)}, ARRAY[{bounds}]::{col.type_sql}[])"
        else:  # composite or collatable keys: compared as where() does (row-wise, byte-wise)
            cases = " ".join(f"WHEN {self._compare('<', hi)} THEN {i}" for i, hi in enumerate(his))
            part = f"CASE {cases} ELSE {len(his)} END"
        got = {int(r[0]): Fingerprint(int(r[1]), int(r[2]), int(r[3]))
               for r in conn.execute(self.fingerprint_sql(rng, part=part)).fetchall()}
        return [got.get(i, Fingerprint(0, 0, 0)) for i in range(len(subs))]

    def page_parts(self, conn: psycopg.Connection, parts: int) -> list[str]:
        """ctid predicates that tile this side's table in `parts` page ranges (the last one open-ended:
        rows in pages added since are in it). PostgreSQL 14+ reads each range alone (TID range scan)."""
        pages = layout.relation_pages(conn, self.table.qualified)
        step = max(1, math.ceil(pages / parts))
        cuts = [i * step for i in range(1, parts) if i * step < pages]
        edges: list[int | None] = [None, *cuts, None]
        preds = []
        for lo, hi in itertools.pairwise(edges):
            conds = [] if lo is None else [f"t.ctid >= '({lo},0)'::tid"]
            if hi is not None:
                conds.append(f"t.ctid < '({hi},0)'::tid")
            preds.append(" AND ".join(conds) or "true")
        return preds

    def key_order(self, key: Bound) -> tuple[tuple[int, object], ...]:
        """A sort key for a key's text form that orders integer keys as numbers (10 after 9), others
        byte-wise as the ranges do."""
        out: list[tuple[int, object]] = []
        for col, value in zip(self.key, key, strict=False):
            if col.type_oid in _INTEGER_TYPES:
                try:
                    out.append((0, int(value)))
                    continue
                except ValueError:
                    pass
            out.append((1, value.encode()))
        return tuple(out)

    def describe_key(self, key: Bound) -> str:
        return ", ".join(f"{c.name}={v}" for c, v in zip(self.key, key, strict=True))

    def merge_ranges(self, ranges: list[KeyRange]) -> list[KeyRange]:
        """Ranges in key order, those that touch (one's end is the next one's start) made one."""
        def start(r: KeyRange) -> tuple[int, tuple[tuple[int, object], ...]]:
            return (0, ()) if r.lo is None else (1, self.key_order(r.lo))

        merged: list[KeyRange] = []
        for rng in sorted(ranges, key=start):
            if merged and merged[-1].hi is not None and merged[-1].hi == rng.lo:
                merged[-1] = KeyRange(merged[-1].lo, rng.hi)
            else:
                merged.append(rng)
        return merged

    def _key_texts(self) -> str:
        """The key columns' text forms, as keys are reported and bounds are written."""
        return ", ".join(f"t.{quote_ident(c.name)}::text" for c in self.key)

    def column_hashes(self, conn: psycopg.Connection, keys: list[Bound]) -> dict[Bound, tuple[str | None, ...]]:
        """Key → the md5 of each compared column's text, for a few rows named by key: which columns
        of a differing row differ."""
        if not keys:
            return {}
        texts = self._key_texts()
        # Each column's text as the row's text form has it (ROW(...)::text: a cast of char(n) to text
        # would drop its padding).
        cols = ", ".join(self._md5(f"ROW({_value_expr(c)})::text") for c in self.columns)
        if any(c.op_schema for c in self.key):
            match = " OR ".join(self._compare("=", k) for k in keys)
        else:
            match = f"{self._key_row()} IN ({', '.join(self._literal_row(k) for k in keys)})"
        query = f"SELECT {texts}, {cols} FROM {self.source} WHERE {match}"
        n = len(self.key)
        return {tuple(r[:n]): tuple(r[n:]) for r in conn.execute(query).fetchall()}

    def ordered_row_hashes_sql(self) -> str:
        """Every row's fingerprint and its ctid, in fingerprint order: two sides' rows merge as
        multisets without a key (a table with no primary key, duplicate rows and all)."""
        h = self._md5(row_text_expr(self.columns))
        return f'SELECT {h} COLLATE "C" AS h, t.ctid::text FROM {self.source} ORDER BY 1'

    def row_hashes(self, conn: psycopg.Connection, rng: KeyRange) -> dict[Bound, str]:
        """Key → row fingerprint for a small range (the caller bounds its size first)."""
        texts = self._key_texts()
        query = f"SELECT {texts}, {self._md5(row_text_expr(self.columns))} FROM {self.source}{self.where(rng)}"
        return {tuple(r[:-1]): r[-1] for r in conn.execute(query).fetchall()}


def _tile(rng: KeyRange, bounds: list[Bound]) -> list[KeyRange]:
    edges: list[Bound | None] = [rng.lo, *bounds, rng.hi]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
