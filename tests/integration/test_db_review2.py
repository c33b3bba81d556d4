"""db copy / db verify on sources a production migration meets: foreign servers and user mappings,
many large objects, tables in a tablespace the target does not have, parents of foreign tables, a
source user that may not read every table."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_db_copy import assert_same_database, env_for
from tests.support import pgdump
from tests.support.cli import run_cli
from tests.support.dbstate import assert_untouched

REMOTE_PASSWORD = "fdw-remote-pw-81f3"  # a test value: must never be shown

FDW = f"""
CREATE EXTENSION postgres_fdw;
CREATE SERVER reporting FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'reporting.internal', dbname 'reports');
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_reader') THEN CREATE ROLE app_reader; END IF;
END $$;
CREATE USER MAPPING FOR app_reader SERVER reporting OPTIONS (user 'remote', password '{REMOTE_PASSWORD}');
CREATE USER MAPPING FOR PUBLIC SERVER reporting OPTIONS (user 'anyone');
CREATE FOREIGN TABLE remote_totals (id int OPTIONS (column_name 'total_id'), total numeric)
  SERVER reporting OPTIONS (schema_name 'public', table_name 'totals');
CREATE TABLE local_t (id int PRIMARY KEY, v text);
INSERT INTO local_t SELECT g, 'x' || g FROM generate_series(1, 100) g;
"""


def _fdw_target(dbs) -> None:  # type: ignore[no-untyped-def]
    # As on RDS, where the master user creates postgres_fdw and so may use it.
    dbs.target_sql("CREATE EXTENSION postgres_fdw; GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO rds_master")


@pytest.mark.parametrize("mode", ["parallel", "stream"])
def test_a_user_mapping_for_a_role_the_target_lacks_is_a_warning_not_a_failed_copy(
        dbs, mode: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The source's roles are not on the target (RDS): its user mapping for one of them cannot be
    restored. That stopped the whole copy after pre-data (exit 1) with no way on but creating the
    source's roles on the target; it is role-specific, like a privilege: a warning naming it (never
    its password), `db plan` warns of it, and verify lists it as information."""
    dbs.source_sql(FDW)
    _fdw_target(dbs)
    plan = run_cli("db", "plan", "--json", env=env_for(dbs))
    assert plan.code == 0, plan.output  # not a blocker: the plan warns
    assert [w for w in json.loads(plan.out)["warnings"] if "user mapping" in w] == [
        "user mapping for app_reader on foreign server reporting: the target server has no role app_reader, so"
        " it is not copied (a warning of the copy); create it for the target's role, with its password"]
    report = tmp_path / "copy.json"
    res = run_cli("db", "copy", "--mode", mode, "--jobs", "2", "--report", str(report), env=env_for(dbs))
    assert res.code == 0, res.output
    warnings = json.loads(report.read_text())["warnings"]
    assert any("user mapping for a role the target does not have" in w and "app_reader" in w
               for w in warnings), warnings
    assert REMOTE_PASSWORD not in res.output + report.read_text()
    with psycopg.connect(dbs.target_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM local_t").fetchone() == (100,)
        options = conn.execute("SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'reporting'").fetchone()
        assert options and sorted(options[0]) == ["dbname=reports", "host=reporting.internal"]
        assert conn.execute("SELECT count(*) FROM pg_user_mappings WHERE srvname = 'reporting'").fetchone() == (1,)
    verify = tmp_path / "verify.json"
    ver = run_cli("db", "verify", "--report", str(verify), env=env_for(dbs))
    assert ver.code == 0, ver.output
    diffs = json.loads(verify.read_text())["diffs"]
    missing = [d for d in diffs if d["kind"] == "user mapping" and d["outcome"] != "match"]
    assert [(d["name"], d["outcome"], d["info_only"]) for d in missing] == [
        ("for app_reader server reporting", "missing on target", True)], missing
    assert REMOTE_PASSWORD not in ver.output + verify.read_text()


def test_verify_compares_foreign_servers_and_foreign_tables_options(dbs) -> None:  # type: ignore[no-untyped-def]
    """A foreign server or foreign table that reaches elsewhere on the target is a difference (verify
    compared neither the servers nor a foreign table's options)."""
    dbs.source_sql(FDW.replace("CREATE USER MAPPING FOR app_reader", "CREATE USER MAPPING FOR CURRENT_USER"))
    _fdw_target(dbs)
    res = run_cli("db", "copy", "--jobs", "2", env=env_for(dbs))
    assert res.code == 0, res.output
    dbs.target_sql("ALTER SERVER reporting OPTIONS (SET host 'old-reporting.internal');"
                   "ALTER FOREIGN TABLE remote_totals OPTIONS (SET table_name 'totals_v1');"
                   "ALTER FOREIGN TABLE remote_totals ALTER COLUMN id OPTIONS (SET column_name 'id')")
    ver = run_cli("db", "verify", "--json", env=env_for(dbs))
    assert ver.code == 3, ver.output
    differ = {(d["kind"], d["name"]) for d in json.loads(ver.out)["diffs"]
              if d["outcome"] != "match" and not d["info_only"]}
    assert differ == {("foreign server", "reporting"), ("foreign table", "public.remote_totals"),
                      ("column", "public.remote_totals.id")}, differ


def _commits(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0])  # type: ignore[index]


def test_many_small_large_objects_are_copied_in_batches(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """5,000 small large objects, an empty one, ones across the batch's first-read size and the
    chunk size, with comments. They were copied one per transaction in four round trips each
    (lo_create, lo_get, lo_put, commit): 5,000 commits here, and at a 1 ms round trip to RDS 20k
    objects spent 80 s. Now a batch per round trip each way and one commit per batch."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    monkeypatch.setattr(copier, "LO_CHUNK", 4096)  # the long objects below take several chunks
    dbs.source_sql(
        "SELECT lo_from_bytea(0, convert_to('object ' || g, 'UTF8')) FROM generate_series(1, 5000) g;"
        "SELECT lo_create(0);"  # empty
        "SELECT lo_from_bytea(0, decode(repeat('ab', n), 'hex'))"
        "  FROM unnest(ARRAY[4095, 4096, 4097, 65535, 65536, 65537, 73728, 200000]) n;"
        "SELECT lo_from_bytea(0, decode(repeat('cd', n), 'hex')) FROM generate_series(1, 3) n;"
    )
    with psycopg.connect(dbs.source_url, autocommit=True) as conn:
        oids = [r[0] for r in conn.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY oid").fetchall()]
        for oid in (oids[0], oids[-1]):
            conn.execute(f"COMMENT ON LARGE OBJECT {oid} IS 'object {oid} ✓'")
    before = _commits(dbs.target_admin_url)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2))
    report = copier.copy_database(cfg, RecordingReporter())
    assert report.status.value == "success", report.errors + [str(d) for d in report.differences()]
    lo = next(p for p in report.phases if p.name == "large objects")
    assert lo.items == 5012
    assert _commits(dbs.target_admin_url) - before < 500  # the whole copy's, verify's included
    assert_same_database(dbs)
    query = ("SELECT m.oid, md5(lo_get(m.oid)), obj_description(m.oid, 'pg_largeobject')"
             " FROM pg_largeobject_metadata m ORDER BY 1")
    with psycopg.connect(dbs.source_url) as src, psycopg.connect(dbs.target_admin_url) as tgt:
        assert tgt.execute(query).fetchall() == src.execute(query).fetchall()


@pytest.mark.parametrize("mode", ["parallel", "stream"])
def test_tables_in_a_tablespace_the_target_lacks_land_in_its_default_one(dbs, mode: str) -> None:  # type: ignore[no-untyped-def]
    """A table (its key, an index, a partitioned table) in a tablespace of the source: pg_restore's
    SET default_tablespace failed on the target, which has no such tablespace (RDS), and every copy
    stopped in pre-data (exit 1)."""
    space = f"fast_{uuid.uuid4().hex[:8]}"
    location = Path(tempfile.mkdtemp(prefix=f"{space}-"))  # not under tmp_path: the server's user must reach it
    shutil.chown(location, "postgres", "postgres")
    admin = dbs.source_cluster.url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE {space} LOCATION '{location}'")
    try:
        dbs.source_sql(
            f"CREATE TABLE t (id int PRIMARY KEY USING INDEX TABLESPACE {space}, v text) TABLESPACE {space};"
            f"CREATE INDEX t_v ON t (v) TABLESPACE {space};"
            "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;"
            f"CREATE TABLE pt (id int PRIMARY KEY, v text) PARTITION BY RANGE (id) TABLESPACE {space};"
            "CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (0) TO (1000);"
            "INSERT INTO pt SELECT g, 'p' FROM generate_series(1, 999) g;")
        res = run_cli("db", "copy", "--mode", mode, "--jobs", "2", env=env_for(dbs))  # verify included
        assert res.code == 0, res.output
        assert pgdump.sorted_data(dbs.target_admin_url) == pgdump.sorted_data(dbs.source_url)
        with psycopg.connect(dbs.target_admin_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_class WHERE relname IN ('t', 't_pkey', 't_v', 'pt', 'pt_1')"
                                " AND reltablespace = 0").fetchone() == (5,)
    finally:
        dbs.source_sql("DROP TABLE t, pt")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP TABLESPACE {space}")
        shutil.rmtree(location, ignore_errors=True)


@pytest.mark.parametrize("mode", ["parallel", "stream"])
def test_parents_of_foreign_tables_are_not_analyzed_through_the_remote_server(
        dbs, mode: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A partitioned table with an archive partition on another server (a foreign table), and an
    inheritance parent with a foreign child: their ANALYZE samples the foreign rows through
    postgres_fdw, from the target ("password is required" for its user; else whatever the remote
    server answers), and the copy failed at its very end, after every row was in."""
    dbs.source_sql(
        "CREATE EXTENSION postgres_fdw;"
        "CREATE SERVER archive FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '1', dbname 'x');"
        "CREATE USER MAPPING FOR PUBLIC SERVER archive OPTIONS (user 'archive');"
        "CREATE TABLE ev (id int, at date, v text) PARTITION BY RANGE (at);"
        "CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
        "CREATE TABLE ev_old PARTITION OF ev FOR VALUES FROM ('2000-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);"
        "CREATE FOREIGN TABLE ev_old_1 PARTITION OF ev_old FOR VALUES FROM ('2000-01-01') TO ('2025-01-01')"
        "  SERVER archive;"
        "INSERT INTO ev_2025 SELECT g, '2025-03-01', 'x' FROM generate_series(1, 1000) g;"
        "CREATE TABLE notes (id int, v text);"
        "CREATE FOREIGN TABLE notes_remote () INHERITS (notes) SERVER archive;"
        "INSERT INTO notes SELECT g, 'n' FROM generate_series(1, 10) g;")
    _fdw_target(dbs)
    report = tmp_path / "copy.json"
    res = run_cli("db", "copy", "--mode", mode, "--jobs", "2", "--report", str(report), env=env_for(dbs))
    assert res.code == 0, res.output  # verify included
    warnings = [w for w in json.loads(report.read_text())["warnings"] if "not analyzed" in w]
    assert [w.split(" not analyzed")[0] for w in warnings] == ['"public"."ev"', '"public"."ev_old"',
                                                               '"public"."notes"'], warnings
    assert 'run ANALYZE "public"."ev" on the target' in warnings[0]
    with psycopg.connect(dbs.target_admin_url) as conn:
        analyzed = conn.execute("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
                                " ORDER BY 1").fetchall()
    assert analyzed == [("ev_2025",)]


def test_plan_blocks_a_copy_when_the_source_user_may_not_read_a_table_or_sequence(dbs) -> None:  # type: ignore[no-untyped-def]
    """The source user (not a superuser, not the owner) lacks SELECT on a table, a sequence and a
    large object. `db plan` passed (exit 0), and the copy then failed in pg_dump ("permission denied
    for table secret"; for the large object, after all the tables' rows), leaving the target marked
    as an interrupted copy. Now the plan names them, and the copy stops before writing anything."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(dbs.source_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        dbs.source_sql(
            "CREATE TABLE open (id int PRIMARY KEY); CREATE TABLE secret (id int PRIMARY KEY, v text);"
            "CREATE SEQUENCE counter; INSERT INTO secret VALUES (1, 'x');"
            f"GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON open TO {role};"
            "SELECT lo_from_bytea(0, '\\x00ff'::bytea); SELECT lo_from_bytea(0, '\\x01'::bytea)")
        with psycopg.connect(dbs.source_url, autocommit=True) as conn:
            los = [r[0] for r in conn.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY 1").fetchall()]
            conn.execute(f"GRANT SELECT ON LARGE OBJECT {los[1]} TO {role}")
        env = {"MIGRATE_SOURCE_DATABASE_URL": dbs.source_cluster.url(dbs.source_db, role, password),
               "MIGRATE_TARGET_DATABASE_URL": dbs.target_url}
        plan = run_cli("db", "plan", "--json", env=env)
        assert plan.code == 1, plan.output
        blockers = json.loads(plan.out)["blockers"]
        assert [b for b in blockers if "may not read" in b] == [
            "the source user may not read 2 tables or sequences (public.counter, public.secret): the copy reads"
            " every one; grant SELECT on them (and USAGE on their schemas) to the source user, or connect as"
            " their owner",
            f"the source user may not read 1 large object (oid {los[0]}): the copy reads every one; GRANT SELECT"
            " ON LARGE OBJECT to the source user, or connect as their owner"], blockers
        res = run_cli("db", "copy", "--jobs", "2", env=env)
        assert res.code == 1 and "may not read 2 tables or sequences" in res.err, res.output
        assert_untouched(dbs.target_admin_url)
        dbs.source_sql(f"GRANT SELECT ON secret, counter TO {role}; GRANT SELECT ON LARGE OBJECT {los[0]} TO {role}")
        assert run_cli("db", "plan", env=env).code == 0
        res = run_cli("db", "copy", "--jobs", "2", env=env)
        assert res.code == 0, res.output
    finally:
        dbs.source_sql(f"DROP OWNED BY {role}")
        with psycopg.connect(dbs.source_cluster.url(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_verify_hashes_a_large_object_longer_than_it_reads_at_once_in_parts(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """verify hashed each large object with md5(lo_get(oid)): one of 1 GB or more failed it ("large
    object read request is too large"; a 1.1 GB one, copied fine, then failed the copy's verify:
    exit 1). Longer ones than LO_WHOLE_MAX are hashed in parts; the limits are made small here.
    A change in any part, or a longer or shorter object, is still a difference."""
    from migrate.config import DbJobConfig
    from migrate.db import verify
    from migrate.progress import RecordingReporter

    monkeypatch.setattr(verify, "LO_WHOLE_MAX", 100_000)
    monkeypatch.setattr(verify, "LO_HASH_CHUNK", 30_000)
    sizes = [0, 99_999, 100_000, 100_001, 120_000, 150_000, 300_001]
    dbs.source_sql(";".join(f"SELECT lo_from_bytea({1000 + i}, decode(repeat('a1', {n}), 'hex'))"
                            for i, n in enumerate(sizes)))
    res = run_cli("db", "copy", "--jobs", "2", "--no-verify", env=env_for(dbs))
    assert res.code == 0, res.output
    cfg = DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2)
    report = verify.verify_databases(cfg, RecordingReporter())
    assert report.status.value == "success", [str(d) for d in report.differences()]
    dbs.target_sql("SELECT lo_put(1003, 100000, '\\xff'::bytea);"  # the byte past the whole read
                   "SELECT lo_put(1004, 119999, '\\xff'::bytea);"  # the last byte of the last part
                   "SELECT lo_put(1005, 150000, '\\x00'::bytea);"  # one byte longer
                   "SELECT lo_put(1006, 0, '\\x00'::bytea)")  # the first byte
    report = verify.verify_databases(cfg, RecordingReporter())
    differ = sorted(d.name for d in report.differences() if d.kind == "large object")
    assert differ == ["1003", "1004", "1005", "1006"], [str(d) for d in report.differences()]
