"""Differential tests of `db verify`'s row fingerprints (migrate.db.rowhash): a source with every type that is
hashed by value (int2/int4/int8/oid/text/varchar/char(n)/uuid/timestamp/timestamptz) and many that go through
the row's text form, at their extreme and tricky values, is cloned with the stock tools; then hundreds of
deterministic single-cell and row-level mutations are made on fresh copies of the target, and verify's verdict
on every table is compared with an independent oracle.

The oracle is what verify promises: two tables are equal when the multisets of their rows' text forms (under the
pinned session settings) are equal, and a table with a primary key differs at exactly the keys whose row text
differs (or that exist on one side only). So a mutation that leaves every row's text as it was (jsonb key
order, a char(n) trailing space, -NaN) must be a match, and one that PostgreSQL's `=` calls equal while the text
differs (numeric 1.0 vs 1.00, float8 -0 vs 0, interval '1 day' vs '24 hours', jsonb 1 vs 1.0) must be a
difference. Those cases are also stated by hand (`expect=`), so the oracle is itself checked.

Cost: the seed and its clone are built once per module; each batch of mutations gets its own copy of the target
(CREATE DATABASE ... TEMPLATE), one mutation per table, so every finding is attributed to its mutation; each batch
is verified twice (the default settings, and tables cut into small key ranges, histogram-based where analysed).
"""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from migrate.config import DbJobConfig
from migrate.db.connect import PINNED_SETTINGS
from migrate.db.rowhash import HASH_BUILTIN, Hasher, list_tables
from migrate.db.verify import KEYS_REPORTED, verify_databases
from migrate.model import Outcome, Report, Status
from migrate.progress import RecordingReporter
from tests.support.dbclone import clone_database
from tests.support.services import RDS_PASSWORD, RDS_USER, DbPair

pytestmark = pytest.mark.postgres

SEED_RANDOM = 20240611
BATCHES = 8
ROWS = 90  # regular rows of the byval/textpath tables; then one row all NULL, one all zero/empty
NULL_ROW, ZERO_ROW = ROWS + 1, ROWS + 2
SMALL = {"split_rows": 40, "chunk_rows": 25, "key_list_max": 6}  # every table above 40 rows cut into ranges
SETTINGS = {"default": {}, "small ranges": SMALL}


def q(s: str) -> str:
    """A SQL string literal (standard_conforming_strings: backslashes are literal)."""
    return "'" + s.replace("'", "''") + "'"


def lit(value: str | None, sql_type: str) -> str:
    return f"NULL::{sql_type}" if value is None else f"{q(value)}::{sql_type}"


# ---- the by-value table: every type hashed on its own, at its extreme and tricky values -----------------------

I2 = ["-32768", "32767", "-1", "0", "1", "256", "-256", None]
I4 = ["-2147483648", "2147483647", "-1", "0", "1", "65536", "-65536", None, "42"]
I8 = [
    "-9223372036854775808", "9223372036854775807", "-1", "0", "1", "4294967295", "4294967296", "-4294967296",
    "-4294967297", "2147483648", "281474976710656", "-9223372032559808512", None,
]
OIDS = ["0", "4294967295", "1", "2147483648", "4294967294", "65536", None]
TEXTS = [
    "", " ", "a", "a ", "  a", "\u00e9", "e\u0301", "🎉 party", "日本語テキスト", "tab\there", "line\nbreak",
    'quote"and\\backslash', "NULL", "(1,2)", "zz", None,
]
VC = ["", "x", "x ", "x  ", "ünï", "twelve chars", "émoji 🎉", None]
VCU = ["", " ", "trail  ", "ü", "long long long ", None]
C1 = ["a", " ", "", "ü", "Z", None]
C5 = ["a", "ab ", "abcde", "", "äöü", "  x", "a b", None]
BP = ["x", "x ", "x  ", "", " ", "  y", None]
UUIDS = [
    "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000001",
    "10000000-0000-0000-0000-000000000000", str(uuid.UUID(int=2**64)), str(uuid.UUID(int=2**64 - 1)), None,
]
TS = [
    "-infinity", "infinity", "2024-02-29 23:59:59.999999", "1999-12-31 23:00:00", "4713-01-01 00:00:00 BC",
    "294276-12-31 23:59:59.999999", "2000-01-01 00:00:00.000001", "1970-01-01 00:00:00",
    "1999-12-31 21:48:25.032705", None,
]
TZ = [
    "-infinity", "infinity", "2024-03-31 00:59:59.999999+00", "2024-03-31 01:00:00+00",
    "2024-10-27 00:59:59.999999+00", "2024-10-27 01:00:00.000001+00", "2024-03-10 02:30:00 America/New_York",
    "2024-11-03 01:30:00 EDT", "2024-11-03 01:30:00 EST", "1999-12-31 23:59:59.999999-05",
    "1883-11-18 12:00:00 America/New_York", "4713-01-01 00:00:00+00 BC", "294276-12-31 23:59:59.999999+00", None,
]


@dataclass(frozen=True)
class Col:
    name: str
    sql_type: str
    kind: str  # which transforms apply
    values: list[str | None]
    zero: str | None  # the value in the all-zero/empty row
    step: int  # row g takes values[(g * step + offset) % len]
    offset: int = 0
    twin: str = ""  # in every fifth row, this column holds the same value as `twin`


BYVAL = [
    Col("i2", "int2", "int2", I2, "0", 3),
    Col("i4", "int4", "int4", I4, "0", 5, 1),
    Col("i8", "int8", "int8", I8, "0", 7),
    Col("i8b", "int8", "int8", I8, "0", 11, 3, twin="i8"),
    Col("o", "oid", "oid", OIDS, "0", 2, 1),
    Col("gone", "text", "", ["dropped"], "dropped", 1),  # dropped after loading: absent from the clone
    Col("t", "text", "text", TEXTS, "", 3),
    Col("t2", "text", "text", TEXTS, "", 5, 7, twin="t"),
    Col("vc", "varchar(12)", "varchar12", VC, "", 3, 2),
    Col("vcu", "varchar", "text", VCU, "", 7, 1),
    Col("c1", "char(1)", "char1", C1, "", 5),
    Col("c5", "char(5)", "char5", C5, "", 3, 1),
    Col("c5b", "char(5)", "char5", C5, "", 5, 4, twin="c5"),
    Col("bp", "bpchar", "bpchar", BP, "", 4, 1),
    Col("u", "uuid", "uuid", UUIDS, "00000000-0000-0000-0000-000000000000", 3),
    Col("u2", "uuid", "uuid", UUIDS, "00000000-0000-0000-0000-000000000000", 5, 2, twin="u"),
    Col("ts", "timestamp", "timestamp", TS, "1970-01-01 00:00:00", 7),
    Col("ts2", "timestamp", "timestamp", TS, "1970-01-01 00:00:00", 3, 5, twin="ts"),
    Col("tz", "timestamptz", "timestamptz", TZ, "1970-01-01 00:00:00+00", 5),
    Col("tz2", "timestamptz", "timestamptz", TZ, "1970-01-01 00:00:00+00", 3, 6, twin="tz"),
]

# ---- the text-path table: types hashed through ROW(...)::text ---------------------------------------------------

TEXTPATH = [
    Col("n", "numeric", "numeric", ["1.0", "1.00", "0", "-0.5", "1e20", "NaN", "Infinity", "-Infinity",
                                    "123456789012345678901234567890.000000000001", "0.000", "-1", None], "0", 5),
    Col("n3", "numeric(10,3)", "numeric3", ["1.0", "2.5", "-0.001", "0", "9999999.999", None], "0", 7, 1),
    Col("j", "jsonb", "jsonb", ['{"a": 1, "b": [1, 2.50, null]}', '{"b": {"y": 1, "x": 2}, "a": "ü"}', "[]", "{}",
                                "null", '"str"', "1.0", '{"a": 1.0}', '{"k": "v\\"q", "n": null}', None], "{}", 3),
    Col("js", "json", "json", ['{"b":1,"a":2}', '{"a" : 1}', "[1, 2]", '{"a":1,"a":2}', "null", None], "{}", 5, 2),
    Col("ia", "int4[]", "intarray", ["{1,2,3}", "{}", "{NULL}", "{{1,2},{3,4}}", "[0:1]={5,6}",
                                     "{-2147483648,2147483647}", None], "{}", 3, 1),
    Col("ta", "text[]", "textarray", ["{a,b}", '{"a b","c,d"}', "{NULL}", '{"NULL"}', '{""}', "{}",
                                      '{"quote\\"d","back\\\\slash"}', None], "{}", 5),
    Col("e", "dv.mood", "enum", ["sad", "ok", "happy", None], "sad", 3),
    Col("d", "dv.bigid", "int8", ["-9223372036854775808", "9223372036854775807", "-1", "4294967295", "0",
                                  "4294967296", None], "0", 5, 3),
    Col("f8", "float8", "float8", ["0", "-0", "NaN", "Infinity", "-Infinity", "0.1", "0.30000000000000004",
                                   "5e-324", "1.7976931348623157e308", "-1.5", "2.2250738585072014e-308", None],
        "0", 7),
    Col("f8b", "float8", "float8", ["0", "-0", "NaN", "Infinity", "-Infinity", "0.1", "0.30000000000000004",
                                    "5e-324", "1.7976931348623157e308", "-1.5", "2.2250738585072014e-308", None],
        "0", 5, 2, twin="f8"),
    Col("f4", "float4", "float4", ["0", "-0", "NaN", "Infinity", "-Infinity", "3.4028235e38", "1e-45", "0.1",
                                   None], "0", 2, 1),
    Col("b", "bytea", "bytea", ["\\x", "\\x00", "\\x0000", "\\xdeadbeef", "\\x5c", "\\x2829", None], "\\x", 5),
    Col("iv", "interval", "interval", ["1 day", "24 hours", "1 mon", "30 days", "0", "-1 microsecond",
                                       "1 year 2 mons 3 days 04:05:06.789", "-178000000 years", "1 day -24 hours",
                                       None], "0", 3, 2),
    Col("dt", "date", "date", ["infinity", "-infinity", "2024-02-29", "4713-01-01 BC", "2000-01-01", None],
        "2000-01-01", 5, 1),
    Col("bo", "bool", "bool", ["true", "false", None], "false", 1),
    Col("pt", "dv.pt", "composite", ["(1,a,0.5)", "(,,)", '(0,"",-0)', '(2,"x,y",)', "(3,NaN,NaN)",
                                     '(-1," ",Infinity)', None], "(0,,0)", 3, 4),
]

SHAPES = {"byval": BYVAL, "textpath": TEXTPATH}


def cell(cols: list[Col], name: str, row: int) -> str | None:
    """The source value (as the literal text loaded) of column `name` in row `row` of a byval/textpath table."""
    by_name = {c.name: c for c in cols}
    col = by_name[name]
    if row == NULL_ROW:
        return None
    if row == ZERO_ROW:
        return col.zero
    if col.twin and row % 5 == 0:
        return cell(cols, col.twin, row)
    return col.values[(row * col.step + col.offset) % len(col.values)]


def shape_rows_sql(cols: list[Col], key_type: str) -> tuple[str, str]:
    """(column definitions, INSERT values) of a byval/textpath table."""
    defs = ", ".join([f"id {key_type} PRIMARY KEY"] + [f"{c.name} {c.sql_type}" for c in cols])
    rows = []
    for g in range(1, ZERO_ROW + 1):
        rows.append("(" + ", ".join([str(g)] + [lit(cell(cols, c.name, g), c.sql_type) for c in cols]) + ")")
    return defs, ",\n".join(rows)


# ---- keyed and keyless tables with one copy each: keys of every kind that verify cuts into ranges ---------------

KEYED_SQL = r"""
CREATE TABLE dv.big (id int8 PRIMARY KEY, v int4, t text, ts timestamptz);
INSERT INTO dv.big
SELECT g * 6148914691236517, g, 'row ' || g, timestamptz '2024-03-31 00:00:00+00' + g * interval '1.5 s'
FROM generate_series(-1499, 1499) g;
INSERT INTO dv.big VALUES (-9223372036854775808, 1, 'min', '-infinity'), (9223372036854775807, 2, 'max', 'infinity'),
    (-1, 3, 'minus one', NULL), (4294967295, 4, '2^32-1', '2024-10-27 01:00:00+00'), (4294967296, 5, '2^32', NULL)
    ON CONFLICT DO NOTHING;

CREATE TABLE dv.uuidkey (id uuid PRIMARY KEY, v int8, note text);
INSERT INTO dv.uuidkey SELECT md5(g::text)::uuid, g * 4294967296 - g, 'n' || g FROM generate_series(1, 400) g;
INSERT INTO dv.uuidkey VALUES ('ffffffff-ffff-ffff-ffff-ffffffffffff', -1, NULL);

CREATE TABLE dv.tskey (id timestamptz PRIMARY KEY, v text);
INSERT INTO dv.tskey SELECT timestamptz '2024-10-27 00:00:00+00' + g * interval '7 minutes 0.000001 s', 'v' || g
FROM generate_series(1, 400) g;
INSERT INTO dv.tskey VALUES ('infinity', 'inf'), ('-infinity', '-inf'), ('2000-01-01 00:00:00.000001+00', 'us');

CREATE TABLE dv.textkey (code text PRIMARY KEY, v int4);
INSERT INTO dv.textkey SELECT 'k' || lpad(g::text, 4, '0') || CASE WHEN g % 3 = 0 THEN 'Ä' ELSE 'b' END, g
FROM generate_series(1, 400) g;
INSERT INTO dv.textkey VALUES ('a', 1), ('a ', 2), ('A', 3), ('', 4), ('é', 5), (E'e\u0301', 6), ('🎉', 7);

CREATE TABLE dv.compkey (a int4, b text, v float8, PRIMARY KEY (a, b));
INSERT INTO dv.compkey SELECT g / 3, chr(120 + g % 3), g / 4.0 FROM generate_series(0, 299) g;
UPDATE dv.compkey SET v = '-0' WHERE a = 5 AND b = 'x';

CREATE TABLE dv.few (id int4 PRIMARY KEY, v text);
INSERT INTO dv.few SELECT g * 1000, 'v' || g FROM generate_series(1, 10) g;

CREATE TABLE dv.charkey (code char(4) PRIMARY KEY, v int4);
INSERT INTO dv.charkey SELECT lpad(to_hex(g), 3, '0'), g FROM generate_series(1, 200) g;
INSERT INTO dv.charkey VALUES ('ab', -1), (' ', -2);
"""

NOPK_ROWS = [
    "(1, 'a', 1, 0.5, 1.0)", "(1, 'a', 1, 0.5, 1.0)", "(2, 'b', -1, '-0', 2.50)", "(3, 'b', 4294967295, 'NaN', 'NaN')",
    "(4, '', NULL, 0, 0)", "(5, NULL, 0, NULL, NULL)", "(6, 'x', 7, 1, 1)", "(7, 'y', 7, 1, 1)", "(8, 'x', 8, 2, 2)",
    "(9, 'z', 4294967296, 'Infinity', 1e-5)",
]


def nopk_sql(name: str) -> str:
    return (
        f"CREATE TABLE dv.{name} (k int4, t text, i8 int8, f8 float8, n numeric);"
        f"INSERT INTO dv.{name} VALUES {', '.join(NOPK_ROWS)};"
        f"INSERT INTO dv.{name} SELECT 100 + g % 13, 'g' || (g % 5), g * 4294967296, g / 3.0, g"
        " FROM generate_series(1, 40) g;"
    )


# ---- mutations ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    shape: str  # byval, textpath, nopk, or the name of a one-copy table
    label: str
    statements: tuple[str, ...]  # @T stands for the table; each statement must touch a row
    expect: str | None = None  # "match"/"differ" when stated by hand (checked against the oracle too)


def when_ok(when: str | Callable[[str | None], bool], value: str | None) -> bool:
    if callable(when):
        return when(value)
    return {"any": True, "nonnull": value is not None, "null": value is None}[when]


INT_BOUNDS = {"int2": (-32768, 32767), "int4": (-2147483648, 2147483647),
              "int8": (-9223372036854775808, 9223372036854775807)}


def int_transforms(kind: str) -> list[tuple[str, str, Any]]:
    lo, hi = INT_BOUNDS[kind]
    t = kind
    out = [
        ("+1", f"CASE WHEN @C = {hi} THEN @C - 1 ELSE @C + 1 END", "nonnull"),
        ("-1", f"CASE WHEN @C = '{lo}'::{t} THEN @C + 1 ELSE @C - 1 END", "nonnull"),
        ("negated", f"CASE WHEN @C = '{lo}'::{t} THEN {hi}::{t} ELSE -@C END", lambda v: v not in (None, "0")),
        ("NULL <-> 0", "CASE WHEN @C IS NULL THEN 0 ELSE NULL END", "any"),
        ("sign bit flipped", f"@C # '{lo}'::{t}", "nonnull"),
    ]
    if kind == "int8":
        out += [
            ("+/- 2^32", f"CASE WHEN @C > {hi} - 4294967296 THEN @C - 4294967296 ELSE @C + 4294967296 END", "nonnull"),
            ("bit 32 flipped", "@C # 4294967296", "nonnull"),
            ("low half flipped", "@C # 4294967295", "nonnull"),
            ("halves swapped", "((@C & 4294967295) << 32) | ((@C >> 32) & 4294967295)",
             lambda v: v not in (None, "0", "-1")),
            ("-1 <-> 2^32-1", "CASE WHEN @C = -1 THEN 4294967295 ELSE -1 END", lambda v: v in ("-1", "4294967295")),
        ]
    return out


TS_MAX = {"timestamp": "294276-12-31 23:59:59", "timestamptz": "294276-12-31 23:59:59+00"}
TS_MIN = {"timestamp": "4713-01-02 00:00:00 BC", "timestamptz": "4713-01-02 00:00:00+00 BC"}


def ts_transforms(kind: str) -> list[tuple[str, str, Any]]:
    hi, lo = q(TS_MAX[kind]), q(TS_MIN[kind])
    out = [
        # +-infinity +- 1 µs is +-infinity itself: no change (the oracle says match).
        ("+1 µs", f"CASE WHEN @C > {hi} THEN @C - interval '1 microsecond' ELSE @C + interval '1 microsecond' END",
         "nonnull"),
        ("-1 µs", f"CASE WHEN @C < {lo} THEN @C + interval '1 microsecond' ELSE @C - interval '1 microsecond' END",
         "nonnull"),
        ("+2^32 µs", f"CASE WHEN @C > {hi} THEN @C - interval '4294.967296 s' ELSE @C + interval '4294.967296 s' END",
         lambda v: v is not None and "infinity" not in v),
        ("+1 hour", f"CASE WHEN @C > {hi} THEN @C - interval '1 hour' ELSE @C + interval '1 hour' END",
         lambda v: v is not None and "infinity" not in v),
        ("infinity flipped", f"CASE WHEN @C = 'infinity' THEN '-infinity'::{kind} ELSE 'infinity'::{kind} END",
         "nonnull"),
        ("NULL <-> epoch", f"CASE WHEN @C IS NULL THEN 'epoch'::{kind} ELSE NULL END", "any"),
    ]
    if kind == "timestamptz":
        # Local time in New York and back: loses an hour in the ambiguous hour of the autumn change, else exact.
        out.append(("via New York local time", "(@C AT TIME ZONE 'America/New_York') AT TIME ZONE 'America/New_York'",
                    "nonnull"))
        out.append(("same instant re-read from its text in Europe/Berlin", "(@C::text)::timestamptz", "nonnull"))
    return out


TEXT_T = [
    ("trailing space added", "@C || ' '", "nonnull"),
    ("trailing spaces removed", "rtrim(@C, ' ')", "nonnull"),
    ("NULL <-> ''", "CASE WHEN @C IS NULL THEN '' ELSE NULL END", "any"),
    ("NFD", "normalize(@C, NFD)", "nonnull"),
    ("emoji appended", "@C || '🎉'", "nonnull"),
    ("upper-cased", "upper(@C)", "nonnull"),
    ("last character's code point + 1",
     "CASE WHEN @C = '' THEN 'a' ELSE left(@C, -1) || chr(ascii(right(@C, 1)) + 1) END", "nonnull"),
]

TRANSFORMS: dict[str, list[tuple[str, str, Any]]] = {
    "int2": int_transforms("int2"),
    "int4": int_transforms("int4"),
    "int8": int_transforms("int8"),
    "oid": [
        ("+1 (mod 2^32)", "((@C::int8 + 1) % 4294967296)::oid", "nonnull"),
        ("0 <-> 2^32-1", "CASE WHEN @C = '0'::oid THEN '4294967295'::oid ELSE '0'::oid END", "nonnull"),
        ("bit 31 flipped", "(@C::int8 # 2147483648)::oid", "nonnull"),
        ("NULL <-> 0", "CASE WHEN @C IS NULL THEN '0'::oid ELSE NULL END", "any"),
    ],
    "text": TEXT_T,
    "varchar12": [(lbl, f"({e})::varchar(12)", w) for lbl, e, w in TEXT_T],
    "char1": [
        ("trailing space added (char(n) pads: no change)", "@C || ' '", "nonnull"),
        ("other character", "CASE WHEN @C = 'a' THEN 'b' ELSE 'a' END", "nonnull"),
        ("NULL <-> ''", "CASE WHEN @C IS NULL THEN '' ELSE NULL END", "any"),
        ("upper-cased", "upper(@C)", "nonnull"),
    ],
    "char5": [
        ("trailing space added (char(n) pads: no change)", "@C || ' '", "nonnull"),
        ("leading space added", "(' ' || @C)::char(5)", "nonnull"),
        ("character appended (truncated to 5)", "(rtrim(@C) || 'z')::char(5)", "nonnull"),
        ("NULL <-> ''", "CASE WHEN @C IS NULL THEN '' ELSE NULL END", "any"),
        ("upper-cased", "upper(@C)", "nonnull"),
    ],
    "bpchar": [
        # An unconstrained bpchar keeps its trailing spaces (and casts to text drop them: format() keeps them).
        ("trailing space added", "format('%s ', @C)::bpchar", "nonnull"),
        ("trailing spaces removed", "rtrim(@C)::bpchar", "nonnull"),
        ("NULL <-> ''", "CASE WHEN @C IS NULL THEN ''::bpchar ELSE NULL END", "any"),
    ],
    "uuid": [
        ("last nibble changed",
         "overlay(@C::text placing (CASE WHEN right(@C::text, 1) = '0' THEN '1' ELSE '0' END) from 36)::uuid",
         "nonnull"),
        ("first nibble changed",
         "overlay(@C::text placing (CASE WHEN left(@C::text, 1) = '0' THEN '1' ELSE '0' END) from 1)::uuid",
         "nonnull"),
        ("NULL <-> nil", "CASE WHEN @C IS NULL THEN '00000000-0000-0000-0000-000000000000'::uuid ELSE NULL END", "any"),
    ],
    "timestamp": ts_transforms("timestamp"),
    "timestamptz": ts_transforms("timestamptz"),
    "numeric": [
        ("+1", "@C + 1", "nonnull"),
        # PostgreSQL's = says 1.0 = 1.00, the text differs: verify compares text, a difference.
        ("a trailing zero added (PG-equal, text differs)",
         "CASE WHEN scale(@C) IS NULL THEN @C ELSE round(@C, scale(@C) + 1) END", "nonnull"),
        ("trailing zeros trimmed (PG-equal, text differs)", "trim_scale(@C)", "nonnull"),
        ("negated", "-@C", "nonnull"),
    ],
    "numeric3": [
        ("+0.0001 (rounded away by numeric(10,3): no change)", "@C + 0.0001", "nonnull"),
        ("rounded to 1 place", "round(@C, 1)", "nonnull"),
        ("NULL <-> 0", "CASE WHEN @C IS NULL THEN 0 ELSE NULL END", "any"),
    ],
    "jsonb": [
        ("re-parsed from its text (no change)", "(@C::text)::jsonb", "nonnull"),
        ("key a set to 1.0", "CASE WHEN jsonb_typeof(@C) = 'object' THEN @C || '{\"a\": 1.0}' ELSE '{\"a\": 1.0}' END",
         "nonnull"),
        ("nulls stripped", "jsonb_strip_nulls(@C)", "nonnull"),
        ("wrapped in an array", "jsonb_build_array(@C)", "any"),
    ],
    "json": [
        ("normalised through jsonb (json keeps its text: key order, spaces, duplicates)", "(@C::jsonb)::json",
         "nonnull"),
        ("re-parsed from its text (no change)", "(@C::text)::json", "nonnull"),
        ("NULL <-> json null", "CASE WHEN @C IS NULL THEN 'null'::json ELSE NULL END", "any"),
    ],
    "intarray": [
        ("element appended", "array_append(@C, 0)", lambda v: v is not None and "{{" not in v),
        ("re-sliced (lower bound becomes 1)", "@C[:]", lambda v: v is not None and "{{" not in v),
        ("NULL elements removed", "array_remove(@C, NULL)", lambda v: v is not None and "{{" not in v),
        ("NULL <-> {}", "CASE WHEN @C IS NULL THEN '{}'::int4[] ELSE NULL END", "any"),
    ],
    "textarray": [
        ("NULL element -> 'NULL' string", "array_replace(@C, NULL, 'NULL')", "nonnull"),
        ("'' appended", "array_append(@C, '')", "nonnull"),
        ("NULL <-> {}", "CASE WHEN @C IS NULL THEN '{}'::text[] ELSE NULL END", "any"),
    ],
    "enum": [
        ("next label", "CASE @C WHEN 'sad' THEN 'ok' WHEN 'ok' THEN 'happy' ELSE 'sad' END::dv.mood", "nonnull"),
        ("NULL <-> sad", "CASE WHEN @C IS NULL THEN 'sad'::dv.mood ELSE NULL END", "any"),
    ],
    "float8": [
        ("negated (0 -> -0: PG-equal, text differs; NaN -> -NaN: still NaN)", "-@C", "nonnull"),
        ("+ 0 (-0 + 0 = 0)", "@C + 0", "nonnull"),
        ("through float4", "CASE WHEN abs(@C) > 1e30 OR abs(@C) < 1e-30 THEN @C * 2 ELSE @C::float4::float8 END",
         "nonnull"),
        ("NULL <-> 0", "CASE WHEN @C IS NULL THEN 0 ELSE NULL END", "any"),
    ],
    "float4": [
        ("negated", "-@C", "nonnull"),
        ("+ 0", "@C + 0", "nonnull"),
        ("halved", "CASE WHEN abs(@C) < 1e-30 THEN @C * 2 ELSE @C / 2 END", "nonnull"),
    ],
    "bytea": [
        ("zero byte appended", "@C || '\\x00'::bytea", "nonnull"),
        ("first byte removed", "substr(@C, 2)", "nonnull"),
        ("NULL <-> empty", "CASE WHEN @C IS NULL THEN '\\x'::bytea ELSE NULL END", "any"),
    ],
    "interval": [
        ("justify_hours (24 hours -> 1 day: PG-equal, text differs)", "justify_hours(@C)", "nonnull"),
        ("justify_days (30 days -> 1 mon: PG-equal, text differs)", "justify_days(@C)", "nonnull"),
        ("+1 µs", "@C + interval '1 microsecond'", "nonnull"),
        ("negated", "-@C", "nonnull"),
    ],
    "date": [
        ("+1 day (infinity stays)", "@C + 1", "nonnull"),
        ("NULL <-> 2000-01-01", "CASE WHEN @C IS NULL THEN date '2000-01-01' ELSE NULL END", "any"),
    ],
    "bool": [
        ("negated", "NOT @C", "nonnull"),
        ("NULL <-> false", "CASE WHEN @C IS NULL THEN false ELSE NULL END", "any"),
    ],
    "composite": [
        ("x + 1", "ROW((@C).x + 1, (@C).label, (@C).w)::dv.pt", "nonnull"),
        ("NULL label -> ''", "ROW((@C).x, coalesce((@C).label, ''), (@C).w)::dv.pt", "nonnull"),
        ("w negated", "ROW((@C).x, (@C).label, -(@C).w)::dv.pt", "nonnull"),
        ("NULL <-> (,,)", "CASE WHEN @C IS NULL THEN ROW(NULL, NULL, NULL)::dv.pt ELSE NULL END", "any"),
    ],
}


def generate_mutations() -> list[Mutation]:
    rng = random.Random(SEED_RANDOM)
    rows = list(range(1, ZERO_ROW + 1))
    out: list[Mutation] = []
    for shape, cols in SHAPES.items():
        for col in cols:
            for label, expr, when in TRANSFORMS.get(col.kind, []):
                fits = [r for r in rows if when_ok(when, cell(cols, col.name, r))]
                # Twice for the by-value types (each on its own random row), once for the text path.
                for r in rng.sample(fits, min(len(fits), 2 if shape == "byval" else 1)):
                    shown = cell(cols, col.name, r)
                    out.append(Mutation(shape, f"{col.name} ({col.sql_type}) {label}, id={r} was {shown!r}",
                                        (f"UPDATE @T SET {col.name} = {expr.replace('@C', col.name)} WHERE id = {r}",)))
        # Values swapped between two columns of one row (twins hold equal values in every fifth row: no change).
        for col in cols:
            if col.twin:
                for r in (rng.choice([r for r in range(5, ROWS + 1, 5)]), rng.choice(range(1, ROWS + 1))):
                    swap = f"UPDATE @T SET {col.twin} = {col.name}, {col.name} = {col.twin} WHERE id = {r}"
                    out.append(Mutation(shape, f"{col.twin} <-> {col.name} swapped in id={r}", (swap,)))
        # One column's values swapped between two rows.
        for col in rng.sample([c for c in cols if c.kind], 8 if shape == "byval" else 5):
            a, b = rng.sample(range(1, ZERO_ROW + 1), 2)
            out.append(Mutation(shape, f"{col.name} ({col.sql_type}) swapped between id={a} and id={b}", (
                f"UPDATE @T SET {col.name} = CASE id WHEN {a} THEN (SELECT {col.name} FROM @T WHERE id = {b})"
                f" ELSE (SELECT {col.name} FROM @T WHERE id = {a}) END WHERE id IN ({a}, {b})",)))
        a, b = rng.sample(range(1, ROWS + 1), 2)
        k = rng.choice(range(1, ROWS + 1))
        names = ", ".join(c.name for c in cols if c.kind)
        out += [
            Mutation(shape, f"row id={a} deleted", (f"DELETE FROM @T WHERE id = {a}",), "differ"),
            Mutation(shape, "the all-NULL row deleted", (f"DELETE FROM @T WHERE id = {NULL_ROW}",), "differ"),
            Mutation(shape, f"copy of row id={b} inserted as id=1000",
                     (f"INSERT INTO @T (id, {names}) SELECT 1000, {names} FROM @T WHERE id = {b}",), "differ"),
            Mutation(shape, "an all-NULL row inserted", ("INSERT INTO @T (id) VALUES (5000)",), "differ"),
            Mutation(shape, f"key id={k} changed to {k + 10000}", (f"UPDATE @T SET id = id + 10000 WHERE id = {k}",),
                     "differ"),
            Mutation(shape, f"contents of rows id={a} and id={b} exchanged (keys kept)", (
                f"UPDATE @T SET id = -1 WHERE id = {a}", f"UPDATE @T SET id = {a} WHERE id = {b}",
                f"UPDATE @T SET id = {b} WHERE id = -1"), "differ"),
            Mutation(shape, "every row rewritten with its own values",
                     (f"UPDATE @T SET ({names}) = ROW({names})",), "match"),
        ]
    out += [
        Mutation("byval", "every t: a trailing space added (many keys)", ("UPDATE @T SET t = t || ' '",), "differ"),
        Mutation("byval", "every i8 + 2^32 where it fits (many keys)",
                 ("UPDATE @T SET i8 = i8 + 4294967296 WHERE i8 < 9223372032559808511",), "differ"),
        Mutation("textpath", "every float8 negated (-0 <-> 0, NaN -> -NaN)", ("UPDATE @T SET f8 = -f8",), "differ"),
    ]
    return out


# Hand-picked cases with the verdict stated: each checked against the oracle as well as against verify.
def where_value(col: str, value: str, sql_type: str) -> str:
    # By text, not by =: 0 = -0, 1.0 = 1.00 and '1 day' = '24 hours' would pick the wrong row.
    return f"WHERE id = (SELECT min(id) FROM @T WHERE {col}::text = ({lit(value, sql_type)})::text)"


HANDPICKED = [
    # By value: char(n) pads, so a trailing space is no change; varchar and unconstrained bpchar keep it.
    Mutation("byval", "char(5) 'a' -> 'a ' (padded alike: no change)",
             (f"UPDATE @T SET c5 = 'a ' {where_value('c5', 'a', 'char(5)')}",), "match"),
    Mutation("byval", "char(1) ' ' -> '' (padded alike: no change)",
             (f"UPDATE @T SET c1 = '' {where_value('c1', ' ', 'char(1)')}",), "match"),
    Mutation("byval", "bpchar 'x' -> 'x '", (f"UPDATE @T SET bp = 'x ' {where_value('bp', 'x', 'bpchar')}",), "differ"),
    Mutation("byval", "varchar 'x' -> 'x '", (f"UPDATE @T SET vc = 'x ' {where_value('vc', 'x', 'varchar')}",),
             "differ"),
    Mutation("byval", "text é composed -> decomposed",
             (f"UPDATE @T SET t = 'e\u0301' {where_value('t', chr(0xE9), 'text')}",), "differ"),
    Mutation("byval", "text '' -> NULL", (f"UPDATE @T SET t = NULL {where_value('t', '', 'text')}",), "differ"),
    Mutation("byval", "int8 -1 -> 4294967295 (PostgreSQL's own int8 hash folds both alike)",
             (f"UPDATE @T SET i8 = 4294967295 {where_value('i8', '-1', 'int8')}",), "differ"),
    Mutation("byval", "int8 4294967296 -> 1 (folded alike too)",
             (f"UPDATE @T SET i8 = 1 {where_value('i8', '4294967296', 'int8')}",), "differ"),
    Mutation("byval", "int8 min -> 0 (min's two halves: -2^31 and 0)",
             (f"UPDATE @T SET i8 = 0 {where_value('i8', '-9223372036854775808', 'int8')}",), "differ"),
    Mutation("byval", "oid 0 -> 4294967295", (f"UPDATE @T SET o = 4294967295 {where_value('o', '0', 'oid')}",),
             "differ"),
    Mutation("byval", "timestamptz 01:00 UTC re-entered as 03:00+02 (same instant: no change)", (
        f"UPDATE @T SET tz = '2024-03-31 03:00:00+02' {where_value('tz', '2024-03-31 01:00:00+00', 'timestamptz')}",),
        "match"),
    Mutation("byval", "timestamptz 01:30 EDT -> 01:30 EST (one hour later)", (
        f"UPDATE @T SET tz = '2024-11-03 01:30:00 EST' {where_value('tz', '2024-11-03 01:30:00 EDT', 'timestamptz')}",),
        "differ"),
    Mutation("byval", "timestamp infinity + 1 µs (still infinity: no change)", (
        f"UPDATE @T SET ts = ts + interval '1 microsecond' {where_value('ts', 'infinity', 'timestamp')}",), "match"),
    Mutation("byval", "timestamp 1999-12-31 23:00 <-> 21:48:25.032705 (PostgreSQL's own hash folds both alike)", (
        f"UPDATE @T SET ts = '1999-12-31 23:00:00' {where_value('ts', '1999-12-31 21:48:25.032705', 'timestamp')}",),
        "differ"),
    Mutation("byval", "uuid nil -> ...01", (
        "UPDATE @T SET u = '00000000-0000-0000-0000-000000000001' "
        + where_value("u", "00000000-0000-0000-0000-000000000000", "uuid"),), "differ"),
    Mutation("byval", "two int8 columns of one row each + 1 (XORed within the row)",
             ("UPDATE @T SET i8 = i8 + 1, i8b = i8b + 1 WHERE id = 12",), "differ"),
    Mutation("byval", "a text value moved to the other text column (t -> NULL, t2 -> old t)",
             ("UPDATE @T SET t2 = t, t = NULL WHERE id = 13",), "differ"),
    # Text path: PostgreSQL's = calls these equal while their text differs; verify compares text: a difference.
    Mutation("textpath", "numeric 1.0 -> 1.00 (PG-equal, text differs)",
             (f"UPDATE @T SET n = 1.00 {where_value('n', '1.0', 'numeric')}",), "differ"),
    Mutation("textpath", "float8 0 -> -0 (PG-equal, text differs)",
             (f"UPDATE @T SET f8 = '-0' {where_value('f8', '0', 'float8')}",), "differ"),
    Mutation("textpath", "float8 -0 -> 0 (PG-equal, text differs)",
             ("UPDATE @T SET f8 = '0' WHERE id = (SELECT min(id) FROM @T WHERE f8::text = '-0')",), "differ"),
    Mutation("textpath", "float4 0 -> -0 (PG-equal, text differs)",
             (f"UPDATE @T SET f4 = '-0' {where_value('f4', '0', 'float4')}",), "differ"),
    Mutation("textpath", "interval '1 day' -> '24 hours' (PG-equal, text differs)",
             (f"UPDATE @T SET iv = '24 hours' {where_value('iv', '1 day', 'interval')}",), "differ"),
    Mutation("textpath", "interval '1 mon' -> '30 days' (PG-equal, text differs)",
             ("UPDATE @T SET iv = '30 days' WHERE id = (SELECT min(id) FROM @T WHERE iv::text = '1 mon')",), "differ"),
    Mutation("textpath", "jsonb {\"a\": 1.0} -> {\"a\": 1} (PG-equal, text differs)", (
        "UPDATE @T SET j = '{\"a\": 1}' WHERE id = (SELECT min(id) FROM @T WHERE j::text = '{\"a\": 1.0}')",),
        "differ"),
    # ... and these leave the text as it was: no change.
    Mutation("textpath", "float8 NaN -> -NaN (another bit pattern, same text: no change)",
             ("UPDATE @T SET f8 = -f8 WHERE id = (SELECT min(id) FROM @T WHERE f8 = 'NaN')",), "match"),
    Mutation("textpath", "jsonb keys re-ordered and re-spaced (jsonb normalises: no change)", (
        "UPDATE @T SET j = '{ \"a\":\"ü\",   \"b\":{\"x\":2,\"y\":1}}' "
        "WHERE id = (SELECT min(id) FROM @T WHERE j @> '{\"a\": \"ü\"}')",), "match"),
    Mutation("textpath", "jsonb with a duplicate key, last one wins (no change)", (
        "UPDATE @T SET j = '{\"a\": 2, \"a\": 1.0}'"
        " WHERE id = (SELECT min(id) FROM @T WHERE j::text = '{\"a\": 1.0}')",),
        "match"),
    Mutation("textpath", "json keys re-ordered (json keeps its text: a difference)", (
        "UPDATE @T SET js = '{\"a\":2,\"b\":1}'"
        " WHERE id = (SELECT min(id) FROM @T WHERE js::text = '{\"b\":1,\"a\":2}')",), "differ"),
    Mutation("textpath", "numeric(10,3) 2.5 -> 2.50 (stored as 2.500 either way: no change)",
             (f"UPDATE @T SET n3 = 2.50 {where_value('n3', '2.5', 'numeric(10,3)')}",), "match"),
    Mutation("textpath", "int4[] [0:1]={5,6} -> {5,6} (lower bound)",
             ("UPDATE @T SET ia = '{5,6}' WHERE id = (SELECT min(id) FROM @T WHERE array_lower(ia, 1) = 0)",),
             "differ"),
    Mutation("textpath", "text[] {NULL} -> {\"NULL\"}",
             ("UPDATE @T SET ta = '{\"NULL\"}' WHERE id = (SELECT min(id) FROM @T WHERE ta::text = '{NULL}')",),
             "differ"),
    Mutation("textpath", "bytea '' -> NULL",
             ("UPDATE @T SET b = NULL WHERE id = (SELECT min(id) FROM @T WHERE b = '')",), "differ"),
    Mutation("textpath", "composite NULL -> (,,) in the all-NULL row",
             (f"UPDATE @T SET pt = ROW(NULL, NULL, NULL) WHERE id = {NULL_ROW}",), "differ"),
    Mutation("textpath", "composite -0 -> 0 inside", (
        "UPDATE @T SET pt = ROW(0, '', 0) WHERE id = (SELECT min(id) FROM @T WHERE pt::text = '(0,\"\",-0)')",),
        "differ"),
    Mutation("textpath", "domain over int8 4294967295 -> -1",
             (f"UPDATE @T SET d = -1 {where_value('d', '4294967295', 'int8')}",), "differ"),
    Mutation("textpath", "enum rewritten with its own label (no change)",
             ("UPDATE @T SET e = e::text::dv.mood WHERE e IS NOT NULL",), "match"),
    Mutation("textpath", "date infinity + 1 (still infinity: no change)",
             (f"UPDATE @T SET dt = dt + 1 {where_value('dt', 'infinity', 'date')}",), "match"),
    # Keyless: only the multiset of rows counts.
    Mutation("nopk", "a duplicated row duplicated once more",
             ("INSERT INTO @T SELECT * FROM @T WHERE k = 1 LIMIT 1",), "differ"),
    Mutation("nopk", "one of two duplicates deleted",
             ("DELETE FROM @T WHERE ctid = (SELECT min(ctid) FROM @T WHERE k = 1)",), "differ"),
    Mutation("nopk", "one row deleted and another duplicated (same count)",
             ("DELETE FROM @T WHERE k = 6", "INSERT INTO @T SELECT * FROM @T WHERE k = 8"), "differ"),
    Mutation("nopk", "a row deleted and inserted again (moved: no change)",
             ("DELETE FROM @T WHERE k = 6", "INSERT INTO @T VALUES (6, 'x', 7, 1, 1)"), "match"),
    Mutation("nopk", "the whole contents of two rows exchanged (no change)", (
        "UPDATE @T SET k = -9 WHERE k = 9",
        "UPDATE @T SET (k, t, i8, f8, n) = (SELECT 9, 'z', 4294967296, 'Infinity'::float8, 1e-5) WHERE k = 2",
        "UPDATE @T SET (k, t, i8, f8, n) = (SELECT 2, 'b', -1, '-0'::float8, 2.50) WHERE k = -9"), "match"),
    Mutation("nopk", "t swapped between two rows", (
        "UPDATE @T SET t = CASE k WHEN 6 THEN 'y' ELSE 'x' END WHERE k IN (6, 7)",), "differ"),
    Mutation("nopk", "i8 + 1 in one row, - 1 in another (sums of values would cancel)",
             ("UPDATE @T SET i8 = i8 + 1 WHERE k = 6", "UPDATE @T SET i8 = i8 - 1 WHERE k = 7"), "differ"),
    Mutation("nopk", "k - 1 and i8 + 1 in one row", ("UPDATE @T SET k = k - 1, i8 = i8 + 1 WHERE k = 8",),
             "differ"),
    Mutation("nopk", "k and i8 swapped where equal (7, 7: no change)", ("UPDATE @T SET k = i8, i8 = k WHERE k = 7",),
             "match"),
    Mutation("nopk", "float8 -0 -> 0 (PG-equal, text differs)",
             ("UPDATE @T SET f8 = 0 WHERE k = 2",), "differ"),
    Mutation("nopk", "numeric 2.50 -> 2.5 (PG-equal, text differs)", ("UPDATE @T SET n = 2.5 WHERE k = 2",),
             "differ"),
    Mutation("nopk", "i8 NULL -> 0", ("UPDATE @T SET i8 = 0 WHERE k = 4",), "differ"),
    Mutation("nopk", "t '' -> NULL", ("UPDATE @T SET t = NULL WHERE k = 4",), "differ"),
    Mutation("nopk", "every row rewritten with its own values", ("UPDATE @T SET t = t",), "match"),
    Mutation("nopk", "t swapped between two rows that hold the same value (no change)", (
        "UPDATE @T SET t = CASE k WHEN 6 THEN (SELECT t FROM @T WHERE k = 8) ELSE (SELECT t FROM @T WHERE k = 6) END"
        " WHERE k IN (6, 8)",), "match"),
    Mutation("nopk", "n 1.0 -> 1 in both duplicates", ("UPDATE @T SET n = 1 WHERE k = 1",), "differ"),
    # One-copy keyed tables: keys of every kind that verify cuts into ranges and names.
    Mutation("big", "v + 1 at the int8 max key", ("UPDATE @T SET v = v + 1 WHERE id = 9223372036854775807",),
             "differ"),
    Mutation("big", "the int8 min key deleted", ("DELETE FROM @T WHERE id = -9223372036854775808",), "differ"),
    Mutation("big", "key 0 -> 4294967297", ("UPDATE @T SET id = 4294967297 WHERE id = 0",), "differ"),
    Mutation("big", "t swapped between two rows far apart", (
        "UPDATE @T SET t = CASE id WHEN -1 THEN 'max' ELSE 'minus one' END WHERE id IN (-1, 9223372036854775807)",),
        "differ"),
    Mutation("big", "ts + 1 µs in the middle",
             ("UPDATE @T SET ts = ts + interval '1 microsecond' WHERE id = 4294967295",), "differ"),
    Mutation("big", "one row deleted and one inserted far away (same count)", (
        "DELETE FROM @T WHERE id = 6148914691236517", "INSERT INTO @T VALUES (-3, 0, 'new', NULL)"), "differ"),
    Mutation("big", "every row rewritten with its own values", ("UPDATE @T SET v = v",), "match"),
    Mutation("big", "key -1 -> -4294967297 and 4294967296 -> 1 (moved across 2^32)", (
        "UPDATE @T SET id = -4294967297 WHERE id = -1", "UPDATE @T SET id = 1 WHERE id = 4294967296"), "differ"),
    Mutation("uuidkey", "v bit 32 flipped", ("UPDATE @T SET v = v # 4294967296 WHERE id = md5('77')::uuid",),
             "differ"),
    Mutation("uuidkey", "key's last nibble changed", (
        "UPDATE @T SET id = 'ffffffff-ffff-ffff-ffff-fffffffffffe' WHERE id = 'ffffffff-ffff-ffff-ffff-ffffffffffff'",),
        "differ"),
    Mutation("uuidkey", "a row deleted", ("DELETE FROM @T WHERE id = md5('200')::uuid",), "differ"),
    Mutation("uuidkey", "the nil uuid inserted as a key",
             ("INSERT INTO @T VALUES ('00000000-0000-0000-0000-000000000000', 0, '')",), "differ"),
    Mutation("uuidkey", "note NULL -> ''", ("UPDATE @T SET note = '' WHERE note IS NULL",), "differ"),
    Mutation("uuidkey", "every row rewritten with its own values", ("UPDATE @T SET v = v",), "match"),
    Mutation("tskey", "a key + 1 µs", (
        "UPDATE @T SET id = id + interval '1 microsecond' WHERE id = '2000-01-01 00:00:00.000001+00'",), "differ"),
    Mutation("tskey", "v changed at the infinity key", ("UPDATE @T SET v = 'INF' WHERE id = 'infinity'",), "differ"),
    Mutation("tskey", "the -infinity key deleted", ("DELETE FROM @T WHERE id = '-infinity'",), "differ"),
    Mutation("tskey", "every key re-read from its text in Europe/Berlin (same instants: no change)",
             ("UPDATE @T SET id = (id::text)::timestamptz",), "match"),
    Mutation("tskey", "a key at the autumn DST change + 1 hour", (
        "UPDATE @T SET id = id + interval '1 hour'"
        " WHERE id = (SELECT min(id) FROM @T WHERE id > '2024-10-27 01:00+00')",),
        "differ"),
    Mutation("textkey", "v changed at key 'a ' (trailing space)", ("UPDATE @T SET v = 20 WHERE code = 'a '",),
             "differ"),
    Mutation("textkey", "key 'a' -> 'a  '", ("UPDATE @T SET code = 'a  ' WHERE code = 'a'",), "differ"),
    Mutation("textkey", "the empty key deleted", ("DELETE FROM @T WHERE code = ''",), "differ"),
    Mutation("textkey", "key 'A' -> 'Ä'", ("UPDATE @T SET code = 'Ä' WHERE code = 'A'",), "differ"),
    Mutation("textkey", "v changed at the decomposed é key", ("UPDATE @T SET v = 60 WHERE code = E'e\\u0301'",),
             "differ"),
    Mutation("textkey", "key 'zzz ' inserted", ("INSERT INTO @T VALUES ('zzz ', 0)",), "differ"),
    Mutation("compkey", "float8 -0 -> 0 (PG-equal, text differs)", ("UPDATE @T SET v = 0 WHERE a = 5 AND b = 'x'",),
             "differ"),
    Mutation("compkey", "v swapped between (7, y) and (7, z)", (
        "UPDATE @T SET v = CASE b WHEN 'y' THEN 5.75 ELSE 5.5 END WHERE a = 7 AND b IN ('y', 'z')",), "differ"),
    Mutation("compkey", "b -> b || ' ' in one key", ("UPDATE @T SET b = 'y ' WHERE a = 50 AND b = 'y'",), "differ"),
    Mutation("compkey", "a row deleted", ("DELETE FROM @T WHERE a = 99 AND b = 'z'",), "differ"),
    Mutation("compkey", "a swapped between (1, x) and (2, x)", (
        "UPDATE @T SET a = -1 WHERE a = 1 AND b = 'x'", "UPDATE @T SET a = 1 WHERE a = 2 AND b = 'x'",
        "UPDATE @T SET a = 2 WHERE a = -1 AND b = 'x'"), "differ"),
    Mutation("charkey", "key 'ab' -> 'ab ' (char(4) pads alike: no change)",
             ("UPDATE @T SET code = 'ab ' WHERE code = 'ab'",), "match"),
    Mutation("charkey", "v changed at key 'ab'", ("UPDATE @T SET v = 0 WHERE code = 'ab'",), "differ"),
    Mutation("charkey", "key ' ' deleted", ("DELETE FROM @T WHERE code = ' '",), "differ"),
    Mutation("charkey", "key 'ab' -> 'abc'", ("UPDATE @T SET code = 'abc' WHERE code = 'ab'",), "differ"),
]

MUTATIONS = generate_mutations() + HANDPICKED
ONE_COPY = ["big", "uuidkey", "tskey", "textkey", "compkey", "charkey", "few"]
KEYS = {"byval": ("id",), "textpath": ("id",), "nopk": (), "big": ("id",), "uuidkey": ("id",), "tskey": ("id",),
        "textkey": ("code",), "compkey": ("a", "b"), "charkey": ("code",), "few": ("id",)}


def copies_needed() -> dict[str, int]:
    counts = Counter(m.shape for m in MUTATIONS)
    out = {shape: max(1, -(-counts[shape] // BATCHES)) for shape in [*SHAPES, "nopk", *ONE_COPY]}
    assert all(out[s] == 1 for s in ONE_COPY), out  # one copy each: no more mutations than batches
    return out


COPIES = copies_needed()


def table_names() -> dict[str, list[str]]:
    """Shape -> its physical tables (schema dv)."""
    return {shape: [shape] if shape in ONE_COPY else [f"{shape}_{i}" for i in range(n)] for shape, n in COPIES.items()}


def schedule() -> list[list[tuple[str, Mutation]]]:
    """BATCHES batches; in each, at most one mutation per table (so each finding is its own)."""
    tables = table_names()
    batches: list[list[tuple[str, Mutation]]] = [[] for _ in range(BATCHES)]
    per_shape: dict[str, int] = Counter()
    for m in MUTATIONS:
        i = per_shape[m.shape]
        per_shape[m.shape] += 1
        batch, copy = i % BATCHES, i // BATCHES
        batches[batch].append((tables[m.shape][copy], m))
    return batches


SCHEDULE = schedule()


def seed_sql() -> str:
    parts = [
        "CREATE SCHEMA dv;",
        "CREATE TYPE dv.mood AS ENUM ('sad', 'ok', 'happy');",
        "CREATE DOMAIN dv.bigid AS int8;",
        "CREATE TYPE dv.pt AS (x int4, label text, w float8);",
    ]
    for shape, key_type in (("byval", "int4"), ("textpath", "int8")):
        defs, values = shape_rows_sql(SHAPES[shape], key_type)
        for name in table_names()[shape]:
            parts.append(f"CREATE TABLE dv.{name} ({defs});")
            parts.append(f"INSERT INTO dv.{name} VALUES {values};")
            if shape == "byval":  # a dropped column: the clone has none, so attnums differ between the sides
                parts.append(f"ALTER TABLE dv.{name} DROP COLUMN gone;")
    for name in table_names()["nopk"]:
        parts.append(nopk_sql(name))
    parts.append(KEYED_SQL)
    parts.append("ANALYZE;")
    return "\n".join(parts)


# ---- the oracle ----------------------------------------------------------------------------------------------


def pinned(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    for name, value in {**PINNED_SETTINGS, "search_path": "pg_catalog"}.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    return conn


def table_rows(conn: psycopg.Connection, table: str, key: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    """(key text, row text) of every row, as verify sees them: key columns through ::text, rows through record_out."""
    # (Not aliased "t": a column of that name would shadow the whole-row reference.)
    keys = "".join(f"whole_row.{k}::text, " for k in key)
    rows = conn.execute(f"SELECT {keys}whole_row::text FROM ONLY dv.{table} whole_row").fetchall()
    return [(tuple(r[:-1]), r[-1]) for r in rows]


@dataclass
class Expected:
    differ: bool
    source_rows: int
    target_rows: int
    keys: set[str] | None  # "id=5 (differ)" etc.; None for a table without a key


def oracle(src: list[tuple[tuple[str, ...], str]], tgt: list[tuple[tuple[str, ...], str]],
           key: tuple[str, ...]) -> Expected:
    if not key:
        return Expected(Counter(r for _, r in src) != Counter(r for _, r in tgt), len(src), len(tgt), None)
    a, b = dict(src), dict(tgt)
    assert len(a) == len(src) and len(b) == len(tgt), "key texts must be unique"
    keys = set()
    for k in set(a) | set(b):
        if a.get(k) == b.get(k):
            continue
        what = "missing on target" if k not in b else "extra on target" if k not in a else "differ"
        keys.add(", ".join(f"{n}={v}" for n, v in zip(key, k, strict=True)) + f" ({what})")
    return Expected(bool(keys), len(src), len(tgt), keys)


def reported_keys(detail: str) -> set[str]:
    if "differing keys: " not in detail:
        return set()
    part = detail.split("differing keys: ", 1)[1]
    for stop in ("; differing ranges: ", "; contents differ"):
        part = part.split(stop, 1)[0]
    # A changed row's reported columns ("(differ: a, b)") are checked in test_db_verify; the oracle here
    # knows rows, not columns.
    return {re.sub(r" \(differ: [^)]*\)", " (differ)", k) for k in part.split("; ")}


def check_report(report: Report, expected: dict[str, Expected], labels: dict[str, str], all_tables: list[str],
                 setting: str) -> list[str]:
    """Every table's verdict against the oracle's; mutated tables named by their mutation."""
    problems = []
    data = {d.name: d for d in report.diffs if d.kind == "table data"}
    if set(data) != {f"dv.{t}" for t in all_tables}:
        problems.append(f"[{setting}] tables compared: {sorted(data)}")
    others = [d for d in report.differences() if d.kind != "table data"]
    if others:
        problems.append(f"[{setting}] differences beyond table data: {others}")
    for table in all_tables:
        d = data.get(f"dv.{table}")
        if d is None:
            continue
        exp = expected.get(table)
        what = f"[{setting}] {labels.get(table, 'untouched')} on dv.{table}"
        if exp is None or not exp.differ:
            if d.outcome is not Outcome.MATCH:
                problems.append(f"FALSE DIFFER: {what}: verify said {d.outcome.value}: {d.detail}")
            continue
        if d.outcome is not Outcome.DIFFER:
            problems.append(f"FALSE MATCH: {what}: verify said {d.outcome.value}: {d.detail}")
            continue
        counts = f"rows {exp.source_rows} on source, {exp.target_rows} on target"
        if counts not in d.detail:
            problems.append(f"{what}: expected {counts!r} in {d.detail!r}")
        shown = reported_keys(d.detail)
        if exp.keys is not None and len(exp.keys) > KEYS_REPORTED:
            # The first 20 are named, then "and N more" when all were counted, else "and at least N more"
            # (narrowing stops once it has 20 keys and 10 ranges): exact, or a lower bound.
            more = re.search(r" and (at least )?(\d+) more", d.detail)
            named = {k.split(" and ")[0] for k in shown}
            rest = len(exp.keys) - KEYS_REPORTED
            if len(named) != KEYS_REPORTED or not named <= exp.keys or more is None \
                    or (int(more[2]) > rest if more[1] else int(more[2]) != rest):
                problems.append(f"{what}: expected {KEYS_REPORTED} of the {len(exp.keys)} differing keys named"
                                f" (verify said: {d.detail})")
        elif exp.keys is not None and shown != exp.keys:
            problems.append(f"{what}: keys named {sorted(reported_keys(d.detail))}, expected {sorted(exp.keys)}"
                            f" (verify said: {d.detail})")
    return problems


# ---- fixtures ------------------------------------------------------------------------------------------------


@dataclass
class World:
    source_cluster: Any
    target_cluster: Any
    source: str
    target_template: str
    source_rows: dict[str, list[tuple[tuple[str, ...], str]]]

    def all_tables(self) -> list[str]:
        return [t for names in table_names().values() for t in names]


def shape_of(table: str) -> str:
    return table if table in ONE_COPY else table.rsplit("_", 1)[0]


@pytest.fixture(scope="module")
def world(pg_source: Any, pg_target: Any) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:8]
    src = pg_source.create_database(f"dsrc_{suffix}")
    tgt = pg_target.create_database(f"dtgt_tpl_{suffix}", owner=RDS_USER)
    try:
        pg_source.execute(seed_sql(), src)
        clone_database(pg_source.url(src), pg_target.url(tgt, RDS_USER, RDS_PASSWORD))
        tables = [t for names in table_names().values() for t in names]
        with pinned(pg_source.url(src)) as conn:
            rows = {t: table_rows(conn, t, KEYS[shape_of(t)]) for t in tables}
        yield World(pg_source, pg_target, src, tgt, rows)
    finally:
        pg_source.drop_database(src)
        pg_target.drop_database(tgt)


@pytest.fixture
def target(world: World) -> Iterator[DbPair]:
    """The source and a fresh copy of its clone."""
    name = world.target_cluster.create_database(f"dtgt_{uuid.uuid4().hex[:8]}", owner=RDS_USER,
                                                template=world.target_template)
    yield DbPair(world.source_cluster, world.target_cluster, world.source, name)
    world.target_cluster.drop_database(name)


def run_verify(pair: DbPair, setting: str, reporter: RecordingReporter | None = None) -> Report:
    cfg = DbJobConfig.build(pair.source_url, pair.target_url, jobs=2)
    return verify_databases(cfg, reporter or RecordingReporter(), **SETTINGS[setting])


# ---- tests ---------------------------------------------------------------------------------------------------


def test_the_source_has_every_tricky_value(world: World) -> None:
    # Every listed value is loaded in some row (and the twins share values in every fifth row).
    for cols in SHAPES.values():
        for col in cols:
            loaded = {cell(cols, col.name, r) for r in range(1, ZERO_ROW + 1)}
            assert loaded >= set(col.values), (col.name, set(col.values) - loaded)
    with pinned(world.source_cluster.url(world.source)) as conn:
        types = dict(conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = 'dv.byval_0'::regclass AND a.attnum > 0 AND NOT a.attisdropped").fetchall())
        assert types["c5"] == "character(5)" and types["bp"] == "bpchar" and types["vc"] == "character varying(12)"
        dropped = conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'dv.byval_0'::regclass"
                               " AND attisdropped").fetchone()
        assert dropped == (1,)
        twins = conn.execute("SELECT count(*) FROM dv.byval_0 WHERE i8 = i8b AND t = t2 AND u = u2"
                             " AND ts = ts2 AND tz = tz2 AND c5 = c5b").fetchone()
        assert twins is not None and twins[0] >= 10
        assert conn.execute("SELECT f8::text FROM dv.nopk_0 WHERE k = 2").fetchone() == ("-0",)
    # The oracle's ground: the clone holds the same rows, and every mutation has a table to go to.
    with pinned(world.target_cluster.url(world.target_template)) as conn:
        for table, rows in world.source_rows.items():
            assert sorted(table_rows(conn, table, KEYS[shape_of(table)])) == sorted(rows), table
    assert sum(len(b) for b in SCHEDULE) == len(MUTATIONS)
    print(f"\n[differential] {len(MUTATIONS)} mutations over {len(world.all_tables())} tables in {BATCHES} batches")


def test_identical_copy_matches_with_default_settings(world: World, target: DbPair) -> None:
    report = run_verify(target, "default")
    assert check_report(report, {}, {}, world.all_tables(), "default") == []
    assert report.differences() == [] and report.status is Status.SUCCESS
    assert report.totals["rows"] == sum(len(r) for r in world.source_rows.values())
    assert any("per-column hash" in p.note for p in report.phases if p.name == "data"), report.phases


def test_identical_copy_matches_when_cut_into_ranges(world: World, target: DbPair) -> None:
    # The source is analysed: single non-collatable keys are cut at histogram bounds, the others by a key pass.
    with pinned(target.source_url) as conn:
        tables = {name: info for (schema, name), info in list_tables(conn).items() if schema == "dv"}
        for name, info in tables.items():
            if not info.key:
                continue
            bounds = Hasher(info, info.columns, info.key, HASH_BUILTIN).histogram_bounds(conn, SMALL["chunk_rows"])
            histogram = shape_of(name) in ("byval", "textpath", "big", "uuidkey", "tskey", "few")
            assert (bounds is not None) == histogram, (name, bounds)
    rec = RecordingReporter()
    report = run_verify(target, "small ranges", rec)
    assert check_report(report, {}, {}, world.all_tables(), "small ranges") == []
    assert report.differences() == [] and report.status is Status.SUCCESS
    assert report.totals["rows"] == sum(len(r) for r in world.source_rows.values())
    for table in world.all_tables():
        if KEYS[shape_of(table)] and len(world.source_rows[table]) > SMALL["split_rows"]:  # in several ranges
            ranges = [e for e in rec.events if e[0] == "progress" and e[1] == f"dv.{table}"]
            assert len(ranges) > 1, (table, ranges)


@pytest.mark.parametrize("batch", range(BATCHES), ids=[f"batch{i}" for i in range(BATCHES)])
def test_each_mutation_is_judged_like_the_oracle(world: World, target: DbPair, batch: int) -> None:
    work = SCHEDULE[batch]
    labels = {table: m.label for table, m in work}
    expected: dict[str, Expected] = {}
    problems: list[str] = []
    with psycopg.connect(target.target_admin_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Europe/Berlin'")  # not the pinned UTC: mutations must not depend on it
        for table, m in work:
            with conn.transaction():
                for stmt in m.statements:
                    cur = conn.execute(stmt.replace("@T", f"dv.{table}"))
                    assert cur.rowcount > 0, f"{m.label}: touched no row: {stmt}"
    with pinned(target.target_url) as conn:
        for table, m in work:
            key = KEYS[shape_of(table)]
            expected[table] = oracle(world.source_rows[table], table_rows(conn, table, key), key)
            if m.expect is not None and expected[table].differ != (m.expect == "differ"):
                problems.append(f"test design: {m.label} on dv.{table}: stated {m.expect}, the oracle disagrees")
    for setting in SETTINGS:
        problems += check_report(run_verify(target, setting), expected, labels, world.all_tables(), setting)
    changed = sum(e.differ for e in expected.values())
    print(f"\n[differential] batch {batch}: {len(work)} mutations, {changed} real changes, "
          f"{len(work) - changed} no-ops; {len(problems)} problems")
    assert problems == [], "\n".join(problems)


def test_extra_rows_between_a_few_source_keys_are_named(target: DbPair) -> None:
    # Default settings. dv.few has 10 rows on the source (ids 1000, 2000, ... 10000); the target gets 110 more
    # rows in each gap. The table's one range has more than KEY_LIST_MAX (1000) rows on the target, so it is
    # re-split at the keys of the side with more rows (the target's) until the parts can be listed key by key.
    with psycopg.connect(target.target_admin_url, autocommit=True) as conn:
        conn.execute("INSERT INTO dv.few SELECT k * 1000 + j, 'extra' FROM generate_series(1, 10) k,"
                     " generate_series(1, 110) j")
    report = run_verify(target, "default")
    few = next(d for d in report.diffs if d.kind == "table data" and d.name == "dv.few")
    assert few.outcome is Outcome.DIFFER, few
    assert "rows 10 on source, 1110 on target" in few.detail, few.detail
    assert "differing keys: id=1001 (extra on target)" in few.detail, few.detail
    more = re.search(r" and (at least )?(\d+) more", few.detail)
    assert more is not None and (int(more[2]) <= 1080 if more[1] else int(more[2]) == 1080), few.detail
