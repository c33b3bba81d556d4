"""Narrowing a differing table to its keys, whatever the key's type, and whatever the statistics say:
the histogram's bounds and width_bucket() serve ordered scalar keys; arrays, composites and text
keys are cut by a pass over the key and placed by row comparisons."""

from __future__ import annotations

from typing import Any

import pytest

from migrate.config import DbJobConfig
from migrate.db.verify import verify_databases
from migrate.progress import RecordingReporter
from tests.support.services import RDS_USER, DbPair

CASES = {
    "int4[]": ("k int4[] PRIMARY KEY, v text", "SELECT ARRAY[g, g % 7], 'x' FROM generate_series(1, 3000) g",
               "k = ARRAY[1234, 1234 % 7]", "k={1234,2}"),
    "composite": ("k public.pair PRIMARY KEY, v text",
                  "SELECT ROW(g, 'n' || g)::public.pair, 'x' FROM generate_series(1, 3000) g",
                  "k = ROW(1234, 'n1234')::public.pair", "k=(1234,n1234)"),
    "numeric": ("k numeric PRIMARY KEY, v text",
                "SELECT (g / 7.0)::numeric, 'x' FROM generate_series(1, 2995) g UNION ALL VALUES"
                " ('NaN'::numeric, 'x'), ('Infinity', 'x'), ('-Infinity', 'x'), ('1e-30', 'x'), ('-0.000', 'x')",
                "k = 1234 / 7.0", "k=176.2857142857142857"),
    "timestamptz": ("k timestamptz PRIMARY KEY, v text",
                    "SELECT timestamptz '2024-10-27 00:30:00+02' + g * interval '1 min 0.000001 s', 'x'"
                    " FROM generate_series(1, 3000) g",
                    "k = timestamptz '2024-10-27 00:30:00+02' + 1234 * interval '1 min 0.000001 s'", "k=2024-10-27"),
    "text": ("k text PRIMARY KEY, v text", "SELECT 'key-' || g, 'x' FROM generate_series(1, 3000) g",
             "k = 'key-1234'", "k=key-1234"),
}


def _both(dbs: DbPair, ddl: str, table: str) -> None:
    dbs.source_sql(f"{ddl}; ANALYZE {table};")
    dbs.target_sql(f"{ddl}; ANALYZE {table}; ALTER TABLE {table} OWNER TO {RDS_USER};")


def _differences(dbs: DbPair, **kw: Any) -> dict[str, str]:
    cfg = DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2)
    return {d.name: d.detail for d in verify_databases(cfg, RecordingReporter(), **kw).differences()}


@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_row_is_named_whatever_the_key_type(dbs: DbPair, case: str) -> None:
    cols, rows, where, named = CASES[case]
    pre = "CREATE TYPE public.pair AS (a int, b text);" if case == "composite" else ""
    _both(dbs, f"{pre} CREATE TABLE public.t ({cols}); INSERT INTO public.t {rows}", "public.t")
    dbs.target_sql(f"UPDATE public.t SET v = 'changed' WHERE {where}")
    # Small ranges: the table is cut into ranges and a differing one narrowed over several levels.
    diffs = _differences(dbs, split_rows=100, chunk_rows=500, key_list_max=20)
    assert set(diffs) == {"public.t"}, diffs
    assert named in diffs["public.t"] and "(differ: v)" in diffs["public.t"], diffs


def test_a_target_with_ten_times_the_rows_has_them_named_from_the_lowest(dbs: DbPair) -> None:
    """The statistics of the side with more rows cut the ranges: they must not waste the narrowing's
    depth on two-way cuts (the keys missing from the source, from id=1 on, are named)."""
    dbs.source_sql("CREATE TABLE public.t (id int PRIMARY KEY, v text);"
                   "INSERT INTO public.t SELECT g * 10, 'x' FROM generate_series(1, 20000) g; ANALYZE public.t;")
    dbs.target_sql("CREATE TABLE public.t (id int PRIMARY KEY, v text);"
                   "INSERT INTO public.t SELECT g, 'x' FROM generate_series(1, 200000) g; ANALYZE public.t;"
                   f"ALTER TABLE public.t OWNER TO {RDS_USER};")
    detail = _differences(dbs)["public.t"]
    assert "differing keys: id=1 (extra on target); id=2 (extra on target)" in detail, detail
