"""db plan / db copy against real clusters; the oracle is pg_dump's view of both sides."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests.support import pgdump
from tests.support.cli import interrupt, run_cli, start_cli
from tests.support.dbstate import assert_untouched
from tests.support.procs import client_command_lines, client_programs

HARD_SCHEMA = (Path(__file__).parents[1] / "fixtures" / "hard_schema.sql").read_text()


def env_for(dbs) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"MIGRATE_SOURCE_DATABASE_URL": dbs.source_url, "MIGRATE_TARGET_DATABASE_URL": dbs.target_url}


def target_relations(dbs) -> list[str]:  # type: ignore[no-untyped-def]
    from migrate.db.inventory import user_relations

    with psycopg.connect(dbs.target_admin_url) as conn:
        return user_relations(conn)


def assert_same_database(dbs) -> None:  # type: ignore[no-untyped-def]
    assert pgdump.schema(dbs.target_admin_url) == pgdump.schema(dbs.source_url)
    assert pgdump.sorted_data(dbs.target_admin_url) == pgdump.sorted_data(dbs.source_url)


@pytest.mark.parametrize("mode", ["parallel", "stream"])
def test_copy_of_hard_schema_equals_source(dbs, mode: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dbs.source_sql(HARD_SCHEMA)
    report = tmp_path / "report.json"
    # Our own verify runs at the end, and must not cry wolf on an identical copy of this schema.
    res = run_cli("db", "copy", "--mode", mode, "--jobs", "2", "--report", str(report), env=env_for(dbs))
    assert res.code == 0, res.output
    assert_same_database(dbs)
    with psycopg.connect(dbs.target_admin_url) as conn:
        # The trigger exists on the target, and did not fire during the load.
        assert conn.execute("SELECT count(*) FROM organisations WHERE updated_by_trigger").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'organisations_touch'").fetchone() == (1,)
        # Materialized views are populated as on the source (pg_dump's data-only output does not show them).
        target_mv = conn.execute("SELECT mood::text, n FROM org_counts ORDER BY 1 NULLS FIRST").fetchall()
    with psycopg.connect(dbs.source_url) as conn:
        assert target_mv == conn.execute("SELECT mood::text, n FROM org_counts ORDER BY 1 NULLS FIRST").fetchall()
    with psycopg.connect(dbs.target_admin_url) as conn:
        # ANALYZE ran: the planner knows the tables' sizes.
        analyzed = conn.execute(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'users' AND last_analyze IS NOT NULL"
            " OR relname = 'users' AND last_autoanalyze IS NOT NULL"
        ).fetchone()
        assert analyzed == (1,)
        # Every table and materialized view, whichever phase analyzed it.
        missing = conn.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NULL AND last_autoanalyze IS NULL"
        ).fetchall()
        assert missing == [], missing
    data = json.loads(report.read_text())
    assert data["status"] == "success"
    assert data["totals"]["mode"] == mode
    verification = data["children"][0]
    assert verification["kind"] == "db-verify" and verification["status"] == "success"
    assert verification["outcomes"]["match"] > 50
    assert sum(n for k, n in verification["outcomes"].items() if k != "match") == 0
    assert dbs.source_cluster.password not in report.read_text()


def test_small_tables_are_read_over_a_session_and_big_ones_through_psql(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Both ways of reading the source give the source's data: the hard schema read entirely through
    psql (as big tables are), and the CLI test above reads it all over the workers' sessions."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    dbs.source_sql(HARD_SCHEMA)
    ways: list[str] = []
    for name in ("_psql_source", "_session_source"):
        original = getattr(copier._Copier, name)

        def spy(self, unit, fmt, _original=original, _name=name):  # type: ignore[no-untyped-def]
            ways.append(_name)
            return _original(self, unit, fmt)

        monkeypatch.setattr(copier._Copier, name, spy)
    monkeypatch.setattr(copier, "SMALL_COPY_BYTES", -1)  # every table "big"
    monkeypatch.setattr(copier, "SEQUENCES_PER_QUERY", 2)  # the schema's sequences in several round trips
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2), verify=False)
    assert copier.copy_database(cfg, RecordingReporter()).status.value == "success"
    assert ways and set(ways) == {"_psql_source"}, ways
    assert_same_database(dbs)
    # Small (the default): no psql at all; the sessions read in the snapshot (a row committed on the
    # source once the copy is under way is not copied) and end with the data phase.
    dbs.source_sql("CREATE TABLE late_rows (id int); INSERT INTO late_rows SELECT generate_series(1, 5);")
    cfg2 = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2), verify=False,
                        clean=True)
    monkeypatch.setattr(copier, "SMALL_COPY_BYTES", 4 * 1024 * 1024)
    ways.clear()
    copy_unit = copier._Copier._copy_unit
    post_data = copier._Copier.post_data
    inserted: list[bool] = []
    at_post_data: list[tuple[str, str]] = []

    def copy_after_a_write(self, *args):  # type: ignore[no-untyped-def]
        if not inserted:
            inserted.append(True)
            dbs.source_sql("INSERT INTO late_rows VALUES (6)")
        return copy_unit(self, *args)

    def watch_post_data(self):  # type: ignore[no-untyped-def]
        with psycopg.connect(dbs.source_url) as conn:
            at_post_data.extend(conn.execute(
                "SELECT application_name, state FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'paas-migrate%' AND pid <> pg_backend_pid()").fetchall())
        return post_data(self)

    monkeypatch.setattr(copier._Copier, "_copy_unit", copy_after_a_write)
    monkeypatch.setattr(copier._Copier, "post_data", watch_post_data)
    assert copier.copy_database(cfg2, RecordingReporter()).status.value == "success"
    assert ways and set(ways) == {"_session_source"}, ways
    assert inserted
    with psycopg.connect(dbs.target_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM late_rows").fetchone() == (5,)
    # Only the coordinator is left on the source, its snapshot released: no worker session.
    assert len(at_post_data) <= 1 and all(state == "idle" for _, state in at_post_data), at_post_data
    dbs.source_sql("DELETE FROM late_rows WHERE id = 6")
    assert_same_database(dbs)


@pytest.mark.parametrize("small", [True, False], ids=["session", "psql"])
def test_a_column_type_without_binary_io_is_copied_as_text(dbs, monkeypatch, small: bool) -> None:  # type: ignore[no-untyped-def]
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    dbs.source_sql("CREATE TABLE grants (id int PRIMARY KEY, acl aclitem);"
                   "INSERT INTO grants VALUES (1, 'postgres=r/postgres'), (2, NULL);"
                   "CREATE TABLE plain (id int PRIMARY KEY); INSERT INTO plain VALUES (1);")
    monkeypatch.setattr(copier, "SMALL_COPY_BYTES", 4 * 1024 * 1024 if small else -1)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2), verify=False)
    assert copier.copy_database(cfg, RecordingReporter()).status.value == "success"
    with psycopg.connect(dbs.target_admin_url) as conn:
        assert conn.execute("SELECT id, acl::text FROM grants ORDER BY id").fetchall() == [
            (1, "postgres=r/postgres"), (2, None)]


def test_timeouts_an_application_set_do_not_cut_the_copy(dbs) -> None:  # type: ignore[no-untyped-def]
    """Apps often set statement_timeout (and idle timeouts) on their database or role: a long COPY,
    the idle snapshot-holding transaction and the idle lock session must not be cut by them."""
    dbs.source_sql(
        "CREATE TABLE slowish (id int PRIMARY KEY, v text);"
        "INSERT INTO slowish SELECT g, md5(g::text) FROM generate_series(1, 300000) g;"
        "CREATE INDEX slowish_v ON slowish (v);"
        "CREATE TABLE little (id int PRIMARY KEY); INSERT INTO little SELECT generate_series(1, 10);"
    )
    timeouts = ("SET statement_timeout = '20ms'", "SET idle_in_transaction_session_timeout = '50ms'",
                "SET idle_session_timeout = '100ms'")
    for cluster, db in ((dbs.source_cluster, dbs.source_db), (dbs.target_cluster, dbs.target_db)):
        for setting in timeouts:
            cluster.execute(f"ALTER DATABASE {db} {setting}", "postgres")
    res = run_cli("db", "copy", "--jobs", "2", env=env_for(dbs))
    assert res.code == 0, res.output
    assert "db-verify: success" in res.out or "verified: all" in res.out, res.out
    assert_same_database(dbs)


def test_statistics_that_depend_on_post_data_are_computed_after_it(dbs) -> None:  # type: ignore[no-untyped-def]
    """Tables are analyzed as they land, except where the statistics need post-data objects: extended
    statistics (CREATE STATISTICS is post-data) and inheritance parents (their children land later)."""
    dbs.source_sql(
        "CREATE TABLE ext (a int, b int); INSERT INTO ext SELECT g % 100, g % 100 FROM generate_series(1, 5000) g;"
        "CREATE STATISTICS ext_s (dependencies) ON a, b FROM ext;"
        "CREATE TABLE par (id int, v int); CREATE TABLE chi () INHERITS (par);"
        "INSERT INTO par VALUES (1, 1); INSERT INTO chi SELECT g, g FROM generate_series(1, 5000) g;"
    )
    res = run_cli("db", "copy", "--jobs", "2", "--no-verify", env=env_for(dbs))
    assert res.code == 0, res.output
    with psycopg.connect(dbs.target_admin_url) as conn:
        deps = conn.execute(
            "SELECT d.stxddependencies IS NOT NULL FROM pg_statistic_ext e"
            " JOIN pg_statistic_ext_data d ON d.stxoid = e.oid WHERE e.stxname = 'ext_s'"
        ).fetchall()
        assert deps == [(True,)]
        # The parent's whole-tree statistics count the child's rows.
        tree = conn.execute(
            "SELECT count(*) FROM pg_statistic WHERE starelid = 'par'::regclass AND stainherit"
        ).fetchone()
        assert tree is not None and tree[0] > 0


def test_copy_splits_large_tables_into_ranges(dbs) -> None:  # type: ignore[no-untyped-def]
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db.copier import copy_database
    from migrate.progress import RecordingReporter

    dbs.source_sql(
        "CREATE TABLE big_pk (id bigint PRIMARY KEY, v text);"
        "INSERT INTO big_pk SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g;"
        "CREATE TABLE big_nopk (v text); INSERT INTO big_nopk SELECT 'r' || g FROM generate_series(1, 20000) g;"
    )
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2), verify=False,
                       split_threshold_bytes=200_000)
    rec = RecordingReporter()
    report = copy_database(cfg, rec)
    assert report.status.value == "success"
    copies = [t for k, t, _ in rec.events if k == "start" and t.startswith("copy ")]
    assert any("big_pk [" in t for t in copies) and any("big_nopk [" in t for t in copies), copies
    assert report.totals["rows"] == 40000
    assert_same_database(dbs)
    # Progress in bytes with percentages: every copy has a total (its estimate) that its bar never
    # passes; the overall "data" bar ends exactly at the bytes copied, at 100%, never above it.
    totals: dict[str, float] = {}
    done: dict[str, float] = {}
    for kind, task, value in rec.events:
        if task != "data" and not task.startswith("copy "):
            continue
        if kind == "start":
            assert value and value > 0, (task, value)
            totals[task], done[task] = value, 0
        elif kind == "total":
            totals[task] = value
        elif kind == "progress":
            done[task] += value
        assert done.get(task, 0) <= totals.get(task, 0), (kind, task, done.get(task), totals.get(task))
    data_phase = next(p for p in report.phases if p.name == "data")
    assert done["data"] == totals["data"] == data_phase.bytes > 0
    assert rec.tasks["data"].unit == "bytes"


def test_split_tables_are_read_in_page_ranges_from_14_and_in_key_ranges_before(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A key range is read through the key's index, a page (ctid) range by a TID range scan: the page
    ranges are the cheaper read (much cheaper when the rows are not stored in key order: each key range
    then reads most of the table's pages), so PostgreSQL 14+ copies every split table in page ranges;
    older servers, which have no TID range scans, in key ranges."""
    import psycopg

    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.db import inventory as inv
    from migrate.progress import RecordingReporter

    dbs.source_sql(
        "CREATE TABLE in_order (id bigint PRIMARY KEY, v text);"
        "INSERT INTO in_order SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g;"
        "CREATE TABLE shuffled (id bigint PRIMARY KEY, v text);"
        "INSERT INTO shuffled SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g ORDER BY md5(g::text);"
        '''CREATE TABLE "it's" (id bigint PRIMARY KEY, v text);'''
        '''INSERT INTO "it's" SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g ORDER BY md5(g::text);'''
    )
    with psycopg.connect(dbs.source_url) as conn:
        tables = {t.name: t for t in inv.list_tables(conn)}
        for name in ("in_order", "shuffled"):
            by_key = copier._pk_ranges(conn, tables[name], 4, ctid_ranges=False)  # before PostgreSQL 14
            assert [u.where for u in by_key] == ['"id" < 5001', '"id" >= 5001 AND "id" < 10001',
                                                  '"id" >= 10001 AND "id" < 15001', '"id" >= 15001'], by_key
            paged = copier._pk_ranges(conn, tables[name], 4, ctid_ranges=True)
            assert len(paged) == 4 and all("ctid" in (u.where or "") for u in paged), paged
    by_pages: list[str] = []
    ctid_ranges = copier._ctid_ranges

    def spy(coord, table, parts):  # type: ignore[no-untyped-def]
        by_pages.append(table.name)
        return ctid_ranges(coord, table, parts)

    monkeypatch.setattr(copier, "_ctid_ranges", spy)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2), verify=False,
                       split_threshold_bytes=200_000)
    # The plan (and --dry-run) says the same as the copy will do.
    from migrate.db.planner import plan_database

    split = {t["table"]: t["split"] for t in plan_database(cfg).facts["table list"]}
    assert all(split[f"public.{name}"].endswith(" page ranges") for name in ("in_order", "shuffled")), split
    assert by_pages == []  # planning read-only, through the same decision (not the copy's code path)
    rec = RecordingReporter()
    assert copier.copy_database(cfg, rec).status.value == "success"
    assert sorted(by_pages) == ["in_order", "it's", "shuffled"], by_pages
    copies = [t for k, t, _ in rec.events if k == "start" and t.startswith("copy public.shuffled [")]
    assert len(copies) >= 2, copies
    assert_same_database(dbs)


def test_index_builds_get_parallel_workers_only_from_idle_jobs(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each job keeps a target core busy: a build started while other work is queued runs without
    parallel workers (with the server's 2 they slowed the bench copy by ~0.4 s on 2 cores, taking CPU
    from the GIN build on its critical path); the last build may use the idle jobs' share."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    dbs.source_sql(
        "CREATE TABLE wide (id int PRIMARY KEY, v text);"  # over SMALL_COPY_BYTES: builds are jobs of their own
        "INSERT INTO wide SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 60000) g;"
        "CREATE INDEX wide_v ON wide (v);"
    )
    seen: list[tuple[str, int | None, str]] = []
    real = copier._Copier._build_in

    def spy(self, conn, item, workers=None):  # type: ignore[no-untyped-def]
        real(self, conn, item, workers)
        # what the build ran with, read in its own transaction (not yet committed)
        setting = conn.execute("SELECT current_setting('max_parallel_maintenance_workers')").fetchone()
        seen.append((item.name, workers, setting[0] if setting else ""))

    monkeypatch.setattr(copier._Copier, "_build_in", spy)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=3), verify=False)
    assert copier.copy_database(cfg, RecordingReporter()).status.value == "success"
    # wide_v (the bigger build) goes first with wide_pkey still queued; wide_pkey then starts with
    # nothing queued and one of the 3 jobs busy: one idle job's worth
    by_name = {name: (workers, setting) for name, workers, setting in seen}
    assert by_name == {"public.wide_v": (0, "0"), "public.wide_pkey": (1, "1")}, seen
    assert_same_database(dbs)


def test_index_builds_and_analyze_show_the_percentage_the_server_reports(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    dbs.source_sql(
        "CREATE TABLE docs (id int PRIMARY KEY, v text, doc jsonb);"
        "INSERT INTO docs SELECT g, md5(g::text), jsonb_build_object('n', md5(g::text))"
        " FROM generate_series(1, 300000) g;"
        "CREATE INDEX docs_v ON docs (v); CREATE INDEX docs_doc ON docs USING gin (doc);"
    )
    monkeypatch.setattr(copier, "STREAM_POLL_SECONDS", 0.02)  # sample the builds often
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2), verify=False)
    rec = RecordingReporter()
    assert copier.copy_database(cfg, rec).status.value == "success"
    jobs = {t for k, t, _ in rec.events if k == "start" and t.startswith(("index ", "analyze "))}
    assert {"index public.docs_v", "index public.docs_doc", "analyze public.docs"} <= jobs, jobs
    moved_by_server = set()
    for task in jobs:
        assert rec.tasks[task].unit == "%" and rec.tasks[task].total == 100, task
        steps = [v for k, t, v in rec.events if k == "progress" and t == task]
        shown = 0.0
        for v in steps:
            assert v > 0, (task, steps)
            shown += v
            assert shown <= 100 + 1e-9, (task, steps)
        assert shown == pytest.approx(100), (task, steps)  # ends full
        if len(steps) > 1:  # a percentage read while it ran, then the rest when it finished
            moved_by_server.add(task)
    assert {"index public.docs_v", "index public.docs_doc"} <= moved_by_server, moved_by_server
    assert_same_database(dbs)


def test_post_data_shows_each_statement_pg_restore_runs(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """pg_restore's post-data is a black box to us: its statements are read from the target while they
    run (by its application name), an index build with its percentage."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    dbs.source_sql(
        "CREATE TABLE p (id int, v text) PARTITION BY RANGE (id);"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100000000);"
        "INSERT INTO p SELECT g, md5(g::text) FROM generate_series(1, 300000) g;"
        "CREATE INDEX p_v ON p (v, id);"
    )
    monkeypatch.setattr(copier, "STREAM_POLL_SECONDS", 0.01)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=1), verify=False)
    rec = RecordingReporter()
    assert copier.copy_database(cfg, rec).status.value == "success"
    started = [t for k, t, _ in rec.events if k == "start"]
    builds = [t for t in started if t.startswith("CREATE INDEX p1_v_id_idx ON public.p1 ")]
    assert len(builds) == 1, started
    task = rec.tasks[builds[0]]
    assert task.unit == "%" and task.finished and task.ok and task.done == pytest.approx(100), task
    steps = [v for k, t, v in rec.events if k == "progress" and t == builds[0]]
    assert len(steps) > 1 and all(v > 0 for v in steps), steps  # read while it ran, then filled
    assert started.index(builds[0]) > started.index("data"), started  # in post-data, after the data phase
    # Every statement task that started also ended.
    statements = [t for t in started if t.startswith(("CREATE ", "ALTER ", "SELECT ", "SET "))]
    assert all(rec.tasks[t].finished for t in statements), [t for t in statements if not rec.tasks[t].finished]
    assert_same_database(dbs)


def test_longest_chain_goes_first_and_heavy_tasks_never_exceed_jobs(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The table with the most data + index work is split over the jobs and loaded first; its index
    builds start as it lands, before further copies; copies and builds together never exceed --jobs."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier, inventory
    from migrate.progress import RecordingReporter

    monkeypatch.setattr(inventory, "SPLIT_LONGEST_MIN", 100_000)
    dbs.source_sql(
        "CREATE TABLE chain (id bigint PRIMARY KEY, doc jsonb, n int);"
        "INSERT INTO chain SELECT g, jsonb_build_object('k', md5(g::text)), g % 7 FROM generate_series(1, 20000) g;"
        "CREATE INDEX chain_doc ON chain USING gin (doc); CREATE INDEX chain_n ON chain (n);"
        "CREATE TABLE side_a (id int PRIMARY KEY, v text);"
        "INSERT INTO side_a SELECT g, 'a' FROM generate_series(1, 3000) g;"
        "CREATE TABLE side_b (v text); INSERT INTO side_b SELECT 'b' || g FROM generate_series(1, 3000) g;"
        # copies still waiting when chain lands (its builds must go before them)
        + "".join(f"CREATE TABLE side_{c} (v text); INSERT INTO side_{c} SELECT 'x' FROM generate_series(1, 1000);"
                  for c in "cdefgh")
    )
    # The scheduler's view, in its own order: what it handed out and which jobs it saw finish (the
    # reporter's events come from the worker threads: a job handed out before chain landed may say
    # "start" after chain's "done").
    seen: list[str] = []
    labels: dict[object, str] = {}

    class Recording(copier.cf.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            name = getattr(fn, "__name__", "")
            label = {"copy_unit": lambda: f"copy {args[0].label}", "build_index": lambda: f"index {args[0].name}",
                     "analyze_table": lambda: f"analyze {args[1]}"}.get(name, lambda: "")()
            fut = super().submit(fn, *args, **kwargs)
            if label:
                seen.append(f"hand {label}")
                labels[fut] = label
            return fut

    real_wait = copier.cf.wait

    def wait(fs, *args, **kwargs):  # type: ignore[no-untyped-def]
        done, pending = real_wait(fs, *args, **kwargs)
        seen.extend(f"done {labels[f]}" for f in done if f in labels)
        return done, pending

    monkeypatch.setattr(copier.cf, "ThreadPoolExecutor", Recording)
    monkeypatch.setattr(copier.cf, "wait", wait)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2), verify=False)
    rec = RecordingReporter()
    report = copier.copy_database(cfg, rec)
    assert report.status.value == "success"
    heavy = [(k, t) for k, t, _ in rec.events
             if k in ("start", "done") and t.startswith(("copy ", "index ", "analyze "))]
    starts = [t for k, t in heavy if k == "start"]
    assert sorted(seen[:2]) == ["hand copy public.chain [1/2]", "hand copy public.chain [2/2]"], seen
    # chain's builds (GIN first: the longest) go before further copies: once chain has landed (its
    # last range done), no copy is handed out until all of its builds are (small tables may be
    # copied, with their builds, by the worker freed by chain's first range while the second loads)
    landed = max(seen.index("done copy public.chain [1/2]"), seen.index("done copy public.chain [2/2]"))
    builds = [seen.index(f"hand index public.chain_{i}") for i in ("doc", "pkey", "n")]
    assert landed < seen.index("hand index public.chain_doc") == min(builds), seen
    assert not any(t.startswith("hand copy ") for t in seen[landed:max(builds)]), seen
    # A small table's builds and ANALYZE run inside its copy's job (and transaction): not extra jobs.
    table_of = {"index public.chain_doc": "chain", "index public.chain_n": "chain", "index public.chain_pkey": "chain",
                "index public.side_a_pkey": "side_a", "analyze public.chain": "chain",
                "analyze public.side_a": "side_a", **{f"analyze public.side_{c}": f"side_{c}" for c in "bcdefgh"}}
    copying: dict[str, int] = {}
    running = peak = 0
    for k, t in heavy:
        if t.startswith("copy "):
            name = t.split()[1].removeprefix("public.")
            copying[name] = copying.get(name, 0) + (1 if k == "start" else -1)
        elif copying.get(table_of[t], 0) > 0:
            assert table_of[t] != "chain", heavy  # the split table's builds are jobs of their own
            continue
        else:
            assert table_of[t] == "chain", (t, heavy)  # side_a's builds and ANALYZE ran inside its copy
        running += 1 if k == "start" else -1
        peak = max(peak, running)
    assert peak <= 2, heavy
    # Each table is analyzed in the data phase, after its last index build (side_a's in its copy's
    # transaction: they are said done when it commits, with the copy).
    for table, last_index in (("chain", "index public.chain_n"), ("side_a", "index public.side_a_pkey")):
        assert f"analyze public.{table}" in starts, " | ".join(starts)
        analyzed = starts.index(f"analyze public.{table}")
        assert analyzed > starts.index(last_index), starts
        if table == "chain":
            assert heavy.index(("done", last_index)) < heavy.index(("start", f"analyze public.{table}")), heavy
        else:
            assert heavy.index(("done", last_index)) < heavy.index(("done", "copy public.side_a")), heavy
    assert "analyze public.side_b" in starts  # no index: analyzed as soon as it landed
    assert_same_database(dbs)


def test_dry_run_and_plan_write_nothing(dbs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dbs.source_sql(HARD_SCHEMA)
    assert_untouched(dbs.target_admin_url)  # the baseline: an empty database
    state = tmp_path / "state"
    env = {**env_for(dbs), "MIGRATE_STATE_DIR": str(state)}
    res = run_cli("db", "copy", "--dry-run", env=env)
    assert res.code == 0, res.output
    # Nothing at all on the target: no extension, schema (not even the copy's own _paas_migrate),
    # table, type or function; and no state file on this side either.
    assert_untouched(dbs.target_admin_url)
    assert not state.exists() or list(state.iterdir()) == []
    assert "pre-data" in res.out and "post-data" in res.out
    res = run_cli("db", "plan", "--json", env=env_for(dbs))
    assert res.code == 0, res.output
    plan = json.loads(res.out)
    assert plan["blockers"] == []
    assert set(plan["facts"]["extensions"]) == {"citext", "uuid-ossp", "pgcrypto"}
    assert plan["facts"]["extensions"]["citext"]["creatable"] is True
    assert any(t["table"] == "public.organisations" for t in plan["facts"]["table list"])
    # On a terminal too: per-table sizes and row estimates, and the extensions with their availability.
    res = run_cli("db", "plan", env=env_for(dbs))
    assert res.code == 0, res.output
    assert "table list" in res.out and "rows (estimate)" in res.out and "public.organisations" in res.out
    assert "extensions" in res.out and "uuid-ossp" in res.out and "creatable" in res.out
    assert target_relations(dbs) == []
    assert_untouched(dbs.target_admin_url)


def test_plan_estimates_rows_of_a_never_analyzed_table(dbs) -> None:  # type: ignore[no-untyped-def]
    """A freshly loaded source has reltuples = -1 (never vacuumed or analyzed): the plan must not say 0."""
    dbs.source_sql(
        "CREATE TABLE fresh (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = off);"
        "INSERT INTO fresh SELECT g, repeat('x', 40) FROM generate_series(1, 20000) g;"
        "CREATE TABLE analysed (id int) WITH (autovacuum_enabled = off);"
        "INSERT INTO analysed SELECT generate_series(1, 3000); ANALYZE analysed;"
        "CREATE TABLE empty_one (id int);"
        "CREATE TABLE tiny (id int) WITH (autovacuum_enabled = off); INSERT INTO tiny VALUES (1), (2), (3);"
    )
    res = run_cli("db", "plan", "--json", env=env_for(dbs))
    assert res.code == 0, res.output
    rows = {t["table"]: t["rows (estimate)"] for t in json.loads(res.out)["facts"]["table list"]}
    assert 20000 / 3 <= rows["public.fresh"] <= 20000 * 3, rows
    assert rows["public.analysed"] == 3000
    assert rows["public.empty_one"] == 0
    assert rows["public.tiny"] == 3  # one page: counted (the planner would assume 10 pages)
    assert json.loads(res.out)["facts"]["rows (estimate)"] == sum(rows.values())


def test_non_empty_target_is_refused_then_clean_replaces_it(dbs) -> None:  # type: ignore[no-untyped-def]
    dbs.source_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
    dbs.target_sql("SET ROLE rds_master; CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42);")
    res = run_cli("db", "copy", env=env_for(dbs))
    assert res.code == 1
    assert "already holds" in res.err and "--clean" in res.err
    assert len(res.err.strip().splitlines()) == 1, res.err
    assert target_relations(dbs) == ["public.keep_me"]
    res = run_cli("db", "copy", "--clean", env=env_for(dbs))  # no TTY, no --yes: refused
    assert res.code == 2 and "--yes" in res.err
    assert target_relations(dbs) == ["public.keep_me"]
    res = run_cli("db", "copy", "--clean", "--yes", "--no-verify", env=env_for(dbs))
    assert res.code == 0, res.output
    assert target_relations(dbs) == ["public.t"]
    assert_same_database(dbs)


def test_bad_connections_give_one_line_and_no_secret(dbs) -> None:  # type: ignore[no-untyped-def]
    wrong = dbs.target_url.replace("rds-master-password", "wrong-pass-s3cret")
    cases = [
        ({"MIGRATE_SOURCE_DATABASE_URL": dbs.source_url, "MIGRATE_TARGET_DATABASE_URL": wrong}, 1,
         "rejected the password"),
        ({"MIGRATE_SOURCE_DATABASE_URL": "postgresql://u:s3cret@nowhere.invalid/db",
          "MIGRATE_TARGET_DATABASE_URL": dbs.target_url}, 1, "cannot resolve"),
        ({"MIGRATE_SOURCE_DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:1/db",
          "MIGRATE_TARGET_DATABASE_URL": dbs.target_url}, 1, "refused"),
        ({"MIGRATE_SOURCE_DATABASE_URL": "mysql://u:s3cret@h/db", "MIGRATE_TARGET_DATABASE_URL": dbs.target_url},
         2, "not a PostgreSQL URL"),
    ]
    for command in (["db", "plan"], ["db", "copy"], ["db", "verify"]):
        for env, code, text in cases:
            res = run_cli(*command, env=env)
            assert res.code == code, (command, res.output)
            assert text in res.err, (command, res.err)
            assert len(res.err.strip().splitlines()) == 1, res.err
            assert "s3cret" not in res.output and "Traceback" not in res.output
            # The target (reachable, or reachable by another login) got nothing: no relation, no
            # extension, not even the copy's own _paas_migrate schema.
            assert_untouched(dbs.target_admin_url)
            if code == 1:  # a script asking for --json still gets an object on stdout, and the same one line
                res = run_cli(*command, "--json", env=env)
                failed = json.loads(res.out)
                assert (res.code, failed["status"], failed["exit_code"]) == (1, "failed", 1), res.output
                assert any(text in e for e in failed["errors"]) and "s3cret" not in res.output
                assert len(res.err.strip().splitlines()) == 1, res.err


def test_the_same_database_as_source_and_target_is_refused_before_anything(dbs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two URLs that reach one database (here: another user) are one database: a copy would drop the
    data it is about to copy (--clean), a verification would compare it with itself."""
    dbs.source_sql("CREATE TABLE precious (id int PRIMARY KEY); INSERT INTO precious SELECT generate_series(1, 1000);")
    admin_url = dbs.source_url
    other_user = dbs.source_cluster.url(dbs.source_db)  # the superuser URL of the same database
    dbs.source_sql(f"CREATE ROLE second_user LOGIN PASSWORD 'second-pass' IN ROLE pg_read_all_data;"
                   f"GRANT ALL ON DATABASE {dbs.source_db} TO second_user; GRANT ALL ON SCHEMA public TO second_user")
    second = dbs.source_cluster.url(dbs.source_db, "second_user", "second-pass")
    tokyo = f"{admin_url}?options=-c%20TimeZone%3DAsia%2FTokyo"  # the same server start, in another time zone
    try:
        for target in (admin_url, other_user, second, tokyo):
            env = {"MIGRATE_SOURCE_DATABASE_URL": admin_url, "MIGRATE_TARGET_DATABASE_URL": target}
            for command in (["db", "plan"], ["db", "copy", "--clean", "--yes"], ["db", "verify"]):
                res = run_cli(*command, env=env)
                assert res.code == 2, (command, res.output)
                assert "the source and the target are the same database" in res.err, res.err
                assert len(res.err.strip().splitlines()) == 1, res.err
        # Its report says what happened, with the exit code the command had.
        report = tmp_path / "same.json"
        res = run_cli("db", "copy", "--clean", "--yes", "--report", str(report),
                      env={"MIGRATE_SOURCE_DATABASE_URL": admin_url, "MIGRATE_TARGET_DATABASE_URL": second})
        written = json.loads(report.read_text())
        assert res.code == 2 and written["status"] == "failed" and written["exit_code"] == 2, written
        with psycopg.connect(admin_url) as conn:
            assert conn.execute("SELECT count(*) FROM precious").fetchone() == (1000,)
            assert conn.execute("SELECT to_regnamespace('_paas_migrate')").fetchone() == (None,)
    finally:
        dbs.source_sql(f"REVOKE ALL ON DATABASE {dbs.source_db} FROM second_user;"
                       " REVOKE ALL ON SCHEMA public FROM second_user; DROP ROLE second_user")


def test_a_policy_for_a_role_the_target_lacks_is_a_blocker(dbs) -> None:  # type: ignore[no-untyped-def]
    """Roles are not copied (RDS has its own): a policy TO a role the target lacks would fail in post-data,
    after all the data; the plan says so first."""
    role = f"reader_{dbs.source_db[-8:]}"
    dbs.source_sql(f"CREATE ROLE {role}; CREATE TABLE notes (owner text, body text);"
                   f" ALTER TABLE notes ENABLE ROW LEVEL SECURITY;"
                   f" CREATE POLICY readers_see_all ON notes FOR SELECT TO {role} USING (true);"
                   " INSERT INTO notes VALUES ('a', 'x');")
    try:
        for command in (["db", "plan"], ["db", "copy"]):
            res = run_cli(*command, env=env_for(dbs))
            assert res.code == 1, res.output
            assert f"policy readers_see_all on public.notes applies to role {role}" in res.output, res.output
        assert target_relations(dbs) == []
        with psycopg.connect(dbs.target_cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {role}")
        res = run_cli("db", "copy", env=env_for(dbs))
        assert res.code == 0, res.output
        assert_same_database(dbs)
    finally:
        dbs.source_sql(f"DROP POLICY IF EXISTS readers_see_all ON notes; DROP ROLE {role}")
        with psycopg.connect(dbs.target_admin_url, autocommit=True) as conn:
            conn.execute("DROP POLICY IF EXISTS readers_see_all ON notes")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_failed_copy_or_verify_still_writes_its_report(dbs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The report is for the change ticket: it matters most when the run failed, and an earlier
    run's report at the same path must not pass for this one."""
    dbs.source_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
    with psycopg.connect(dbs.target_url) as conn:
        conn.execute("CREATE TABLE already_here (id int)")
    report = tmp_path / "copy.json"
    report.write_text('{"status": "success"}')
    res = run_cli("db", "copy", "--report", str(report), env=env_for(dbs))
    assert res.code == 1 and "already holds" in res.err, res.output
    written = json.loads(report.read_text())
    assert written["status"] == "failed" and written["exit_code"] == 1 and written["kind"] == "db-copy", written
    assert any("already holds" in e for e in written["errors"]), written
    assert "rds-master-password" not in report.read_text()
    refused = {**env_for(dbs), "MIGRATE_TARGET_DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:1/db"}
    verify_report = tmp_path / "verify.json"
    res = run_cli("db", "verify", "--report", str(verify_report), env=refused)
    assert res.code == 1, res.output
    written = json.loads(verify_report.read_text())
    assert written["status"] == "failed" and any("refused the connection" in e for e in written["errors"]), written
    assert "s3cret" not in verify_report.read_text()
    # Refused before the job could start (here: --clean needs --yes off a terminal): no report is
    # written, and the earlier one is gone rather than passing for this run's.
    res = run_cli("db", "copy", "--clean", "--report", str(report), env=env_for(dbs))
    assert res.code == 2 and "--yes" in res.err, res.output
    assert not report.exists()
    # A report that cannot be written is found before the work, not after it.
    res = run_cli("db", "copy", "--report", "/proc/no-such-dir/report.json", env=env_for(dbs))
    assert res.code == 2 and "cannot write the report" in res.err, res.output
    with psycopg.connect(dbs.target_admin_url) as conn:
        assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)


def test_password_on_argv_is_redacted_and_warned(dbs) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("db", "plan", "--source", dbs.source_url, "--target",
                  dbs.target_url.replace("rds-master-password", "wrong-pass-s3cret"))
    assert res.code == 1
    assert "wrong-pass-s3cret" not in res.output and dbs.source_cluster.password not in res.output
    assert "MIGRATE_SOURCE_DATABASE_URL" in res.err


def _wait_for_copy(dbs, timeout: float = 60) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    with psycopg.connect(dbs.source_cluster.url(dbs.source_db), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY %'"
                " AND state = 'active'"
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.01)
    raise AssertionError("the copy never started a COPY on the source")


def _seed_slow_table(dbs) -> None:  # type: ignore[no-untyped-def]
    dbs.source_sql(
        "CREATE TABLE small (id int PRIMARY KEY); INSERT INTO small VALUES (1);"
        "CREATE TABLE slow_big (id int PRIMARY KEY, v text);"
        "INSERT INTO slow_big SELECT g, md5(g::text) || md5((g+1)::text) FROM generate_series(1, 1500000) g;"
    )


def test_source_killed_mid_copy_fails_naming_table_then_rerun_succeeds(dbs) -> None:  # type: ignore[no-untyped-def]
    _seed_slow_table(dbs)
    proc = start_cli("db", "copy", "--jobs", "1", "--no-verify", env=env_for(dbs))
    pid = _wait_for_copy(dbs)
    with psycopg.connect(dbs.source_cluster.url(dbs.source_db), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "slow_big" in err and len(err.strip().splitlines()) == 1, err
    with psycopg.connect(dbs.target_admin_url) as conn:
        # The failed COPY committed nothing.
        assert conn.execute("SELECT count(*) FROM slow_big").fetchone() == (0,)
    res = run_cli("db", "copy", "--clean", "--yes", "--no-verify", env=env_for(dbs))
    assert res.code == 0, res.output
    with psycopg.connect(dbs.target_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM slow_big").fetchone() == (1500000,)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_and_leaves_no_client_processes(dbs, sig: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _seed_slow_table(dbs)
    before = set(client_command_lines())
    report = tmp_path / "report.json"
    report.write_text('{"status": "success"}')  # an earlier run's: must not survive as this run's
    # Progress shown (plain lines, as in an ECS task's log): nothing unfinished is reported done.
    proc = start_cli("db", "copy", "--jobs", "2", "--no-verify", "--report", str(report),
                     env={**env_for(dbs), "MIGRATE_NO_PROGRESS": "0"})
    _wait_for_copy(dbs)
    res = interrupt(proc, sig)
    assert res.code == 130, res.output
    assert "interrupted" in res.err and "Traceback" not in res.err
    assert not re.search(r"\bdone: data\b", res.err), res.err
    written = json.loads(report.read_text())
    assert written["status"] == "interrupted" and written["exit_code"] == 130, written
    assert [p["name"] for p in written["phases"]] == ["snapshot", "pre-data"], written["phases"]
    assert any("interrupted during data" in e for e in written["errors"]), written["errors"]
    # Checked at once, with no grace period: the command must have ended (and reaped) its client programs
    # before it exited. A delay here would let an orphaned psql die of SIGPIPE and hide a broken clean-up.
    leftover = [c for c in client_command_lines() if c not in before and str(dbs.source_cluster.port) in c]
    assert leftover == []
    with psycopg.connect(dbs.source_cluster.url(dbs.source_db), autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY %'"
            " AND state = 'active'"
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "a COPY kept running on the source after the interrupt"
            time.sleep(0.1)


def _wait_for_process(name: str, marker: str, timeout: float = 60) -> int:
    """Poll /proc until a client program `name` whose arguments contain `marker` runs; its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, prog, cmd in client_programs():
            if prog == name and marker in cmd:
                return pid
        time.sleep(0.005)
    raise AssertionError(f"no {name} with {marker!r} started")


def test_interrupt_during_pre_data_leaves_no_pg_dump(dbs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """pg_dump of the schema writes to a file, not a pipe: an orphan would not die of SIGPIPE but run on,
    so it must be gone the moment the interrupted command has exited."""
    dbs.source_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
    port = str(dbs.source_cluster.port)
    before = set(client_command_lines())
    report = tmp_path / "report.json"
    proc = start_cli("db", "copy", "--jobs", "2", "--no-verify", "--report", str(report), env=env_for(dbs))
    dump = _wait_for_process("pg_dump", "--section=pre-data")
    # A schema dump takes a fraction of a second here: stop it, so that it is surely still running when
    # the interrupt arrives (and so that it ends only if the command kills it: it ignores SIGTERM now).
    os.kill(dump, signal.SIGSTOP)
    try:
        res = interrupt(proc, signal.SIGTERM)
        # At once, no grace period: the command must have ended its pg_dump before it exited.
        leftover = [c for c in client_command_lines() if c not in before and port in c]
        assert leftover == [], leftover
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(dump, signal.SIGKILL)  # only if the check above failed
    assert res.code == 130, res.output
    assert "interrupted" in res.err and "Traceback" not in res.err
    written = json.loads(report.read_text())
    assert written["status"] == "interrupted" and written["exit_code"] == 130, written
    assert "pre-data" not in [p["name"] for p in written["phases"]], written["phases"]
    # nothing of the source's schema reached the target (only the copy's own resume state may have)
    assert [r for r in target_relations(dbs) if not r.startswith("_paas_migrate.")] == []


def test_tool_version_check() -> None:
    from migrate.db.pgtools import find_tool
    from migrate.errors import ToolError

    tool = find_tool("pg_dump")
    assert tool.major >= 10
    with pytest.raises(ToolError) as info:
        find_tool("pg_dump", min_major=tool.major + 1)
    assert "older than the source server" in str(info.value)


def test_a_pg_dump_older_than_the_source_server_blocks_the_plan(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import migrate.db.planner as planner
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db.pgtools import PgTool, find_tool

    def old_pg_dump(name: str) -> PgTool:
        return PgTool(name, "/opt/old/pg_dump", "9.6") if name == "pg_dump" else find_tool(name)

    monkeypatch.setattr(planner, "find_tool", old_pg_dump)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url))
    plan = planner.plan_database(cfg)
    assert not plan.ok
    assert any("pg_dump 9.6 is older than the source server" in b for b in plan.blockers), plan.blockers
    assert plan.facts["pg_restore"].endswith(f"({find_tool('pg_restore').path})"), plan.facts
    monkeypatch.undo()
    assert planner.plan_database(cfg).ok


def test_restore_error_classification() -> None:
    from migrate.db.pgtools import parse_restore_errors

    stderr = (
        "pg_restore: error: could not execute query: ERROR:  must be owner of extension citext\n"
        "Command was: COMMENT ON EXTENSION citext IS 'x';\n"
        "pg_restore: error: could not execute query: ERROR:  type \"nope\" does not exist\n"
        "Command was: CREATE TABLE public.t (a nope);\n"
        "pg_restore: warning: errors ignored on restore: 2\n"
    )
    errors = parse_restore_errors(stderr)
    assert [e.harmless for e in errors] == [True, False]
    assert "CREATE TABLE" in errors[1].command


def test_forced_row_level_security_fails_loudly_instead_of_copying_a_subset(dbs) -> None:  # type: ignore[no-untyped-def]
    """A non-superuser source user (as on a PaaS) reading a FORCE ROW LEVEL SECURITY table it owns
    would see only the rows its policy allows: the copy must refuse, not copy a filtered subset."""
    from psycopg import sql

    role, pw = f"paas_{dbs.source_db}", "paas-user-pw"
    dbs.source_cluster.create_role(role, pw)
    dbs.source_sql(
        sql.SQL("ALTER SCHEMA public OWNER TO {r}; SET ROLE {r};"
                "CREATE TABLE tenant_rows (tenant text NOT NULL, v int);"
                "INSERT INTO tenant_rows VALUES ('a', 1), ('b', 2);"
                "ALTER TABLE tenant_rows ENABLE ROW LEVEL SECURITY; ALTER TABLE tenant_rows FORCE ROW LEVEL SECURITY;"
                "CREATE POLICY only_a ON tenant_rows USING (tenant = 'a');").format(r=sql.Identifier(role))
        .as_string(None)
    )
    env = {"MIGRATE_SOURCE_DATABASE_URL": dbs.source_cluster.url(dbs.source_db, role, pw),
           "MIGRATE_TARGET_DATABASE_URL": dbs.target_url}
    res = run_cli("db", "copy", "--no-verify", env=env)
    assert res.code == 1, res.output
    assert "tenant_rows" in res.err and "row-level security" in res.err and "BYPASSRLS" in res.err
    assert len(res.err.strip().splitlines()) == 1
    with psycopg.connect(dbs.target_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM tenant_rows").fetchone() == (0,)
    # Our verify does not cry wolf either: it reports an error for the table it cannot fully read.
    res = run_cli("db", "verify", env=env)
    assert res.code == 1, res.output
    assert "tenant_rows" in res.out


@pytest.mark.parametrize("mode", ["parallel", "stream"])
def test_interrupt_during_pg_restore_cancels_its_server_work(dbs, mode: str) -> None:  # type: ignore[no-untyped-def]
    """An ECS stop while pg_restore builds indexes (post-data of a partitioned table; or anything in
    stream mode): pg_restore is ended with its queries, nothing keeps running on the target."""
    dbs.source_sql(
        "CREATE TABLE p (id int, v text) PARTITION BY RANGE (id);"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100000000);"
        "INSERT INTO p SELECT g, md5(g::text) FROM generate_series(1, 2000000) g;"
        "CREATE INDEX p_v ON p (v); CREATE INDEX p_v_id ON p (v, id); CREATE INDEX p_id_v ON p (id, v);"
    )
    before = set(client_command_lines())
    proc = start_cli("db", "copy", "--jobs", "1", "--no-verify", "--mode", mode, env=env_for(dbs))
    active = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
              " AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
    with psycopg.connect(dbs.target_admin_url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
            " AND backend_type = 'client backend' AND query ILIKE 'CREATE INDEX%'"
        ).fetchone():
            assert time.monotonic() < deadline and proc.poll() is None, "pg_restore never built an index"
            time.sleep(0.02)
        res = interrupt(proc, signal.SIGTERM)
        assert res.code == 130, res.output
        # Ended before we exited (not left to finish the restore on its own)...
        assert [c for c in client_command_lines() if c not in before] == []
        # ...and its queries were cancelled, not left running on the server.
        deadline = time.monotonic() + 2
        while conn.execute(active).fetchone() != (0,):
            assert time.monotonic() < deadline, conn.execute(
                "SELECT application_name, left(query, 80) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchall()
            time.sleep(0.1)
    if mode == "parallel":  # stopped inside post-data: a resume finishes it
        res = run_cli("db", "copy", "--resume", env=env_for(dbs))
        assert res.code == 0, res.output
        assert_same_database(dbs)


def test_stream_copy_shows_progress_read_from_the_target(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """pg_dump | pg_restore is a pipe we do not read: its progress comes from the target's
    pg_stat_progress_copy, per table and overall, never above 100%, full at the end."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    monkeypatch.setattr(copier, "STREAM_POLL_SECONDS", 0.02)
    dbs.source_sql(
        "CREATE EXTENSION citext;"
        "CREATE TABLE big (id int PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 600000) g;"
        "CREATE TABLE small (id int); INSERT INTO small VALUES (1);"
    )
    # Installed on the target by an administrator, as on RDS: pg_restore's COMMENT ON EXTENSION fails
    # (harmless) and pg_restore exits 1 - the copy is still a success, and so is its progress.
    dbs.target_sql("CREATE EXTENSION citext")
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=1), mode="stream", verify=False)
    rec = RecordingReporter()
    report = copier.copy_database(cfg, rec)
    assert report.status.value == "success"
    totals: dict[str, float] = {}
    done: dict[str, float] = {}
    for kind, task, value in rec.events:
        if kind == "start":
            totals[task], done[task] = value or 0, 0
        elif kind == "total":
            totals[task] = value
        elif kind == "progress":
            done[task] += value
            assert done[task] <= totals[task], (task, done[task], totals[task])
    assert done["copy public.big"] > 0 and rec.tasks["copy public.big"].finished, rec.tasks
    assert any("harmless" in w for w in report.warnings), report.warnings
    assert done["dump | restore"] == totals["dump | restore"] > 0
    assert rec.tasks["dump | restore"].ok and rec.tasks["dump | restore"].unit == "bytes"
    assert_same_database(dbs)


def _target_database_settings(dbs) -> list[str]:  # type: ignore[no-untyped-def]
    with psycopg.connect(dbs.target_cluster.url()) as conn:  # (the postgres database: the target may be read-only)
        row = conn.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
                           " WHERE d.datname = %s AND s.setrole = 0", (dbs.target_db,)).fetchone()
    return list(row[0]) if row else []


SECRET_SETTING = "jwt-s3cret-never-shown"


def test_database_settings_reach_the_target_at_the_end_of_the_copy(dbs) -> None:  # type: ignore[no-untyped-def]
    """ALTER DATABASE ... SET is outside pg_dump's sections (only --create writes it): without it on the
    target, an application relying on the database's search_path finds none of its tables after cutover."""
    role = f"app_{dbs.source_db[-10:]}"
    src, tgt = dbs.source_db, dbs.target_db
    dbs.source_sql(f"CREATE SCHEMA app; CREATE TABLE app.users (id int PRIMARY KEY); INSERT INTO app.users VALUES (1);"
                   f"CREATE ROLE {role}")
    # Read-only too: had it been set before the copy's own sessions, none of them could write.
    dbs.source_cluster.execute(
        f"ALTER DATABASE {src} SET search_path = app, public; ALTER DATABASE {src} SET TimeZone = 'Europe/London';"
        f"ALTER DATABASE {src} SET default_transaction_read_only = on;"
        f"ALTER DATABASE {src} SET app.jwt_secret = '{SECRET_SETTING}';"
        f"ALTER ROLE {role} IN DATABASE {src} SET work_mem = '64MB'")
    role_statement = f'ALTER ROLE "{role}" IN DATABASE "{tgt}" SET "work_mem" TO \'64MB\''
    # PostgreSQL 15+: a custom setting needs a grant to be stored by a non-superuser (on RDS too).
    dbs.target_cluster.execute("GRANT SET ON PARAMETER app.jwt_secret TO rds_master")
    try:
        res = run_cli("db", "plan", "--json", env=env_for(dbs))
        assert res.code == 0, res.output
        plan = json.loads(res.out)
        assert {(s["role"], s["setting"], s["value"]) for s in plan["facts"]["database settings"]} == {
            ("(every role)", "search_path", "app, public"), ("(every role)", "TimeZone", "Europe/London"),
            ("(every role)", "app.jwt_secret", "(hidden)"), (role, "work_mem", "64MB")}
        # Read-only is how a cutover stops writers: not the application's, not copied (said so).
        assert any("default_transaction_read_only" in w and "not copied" in w for w in plan["warnings"])
        assert any(role_statement in w for w in plan["warnings"]), plan["warnings"]
        assert "database settings" in [s["name"] for s in plan["steps"]]
        assert run_cli("db", "copy", "--dry-run", env=env_for(dbs)).code == 0
        assert _target_database_settings(dbs) == []

        res = run_cli("db", "copy", "--jobs", "2", env=env_for(dbs))
        assert res.code == 0, res.output
        assert sorted(_target_database_settings(dbs)) == sorted(
            ["search_path=app, public", "TimeZone=Europe/London", f"app.jwt_secret={SECRET_SETTING}"])
        assert role_statement in res.out and "default_transaction_read_only" in res.out, res.out
        assert SECRET_SETTING not in res.output
        assert_same_database(dbs)
        with psycopg.connect(dbs.target_url) as conn:  # a new session, as the application's after cutover
            assert conn.execute("SELECT id FROM users").fetchall() == [(1,)]
            assert conn.execute("SHOW TimeZone").fetchone() == ("Europe/London",)

        # verify compares them: a different value is a difference; a setting only the target has
        # (its DBA's) is information.
        dbs.target_cluster.execute(f"ALTER DATABASE {tgt} SET search_path = public")
        dbs.target_cluster.execute(f"ALTER DATABASE {tgt} SET app.jwt_secret = 'another-value'")
        res = run_cli("db", "verify", "--json", env=env_for(dbs))
        diffs = {(d["kind"], d["name"]): d for d in json.loads(res.out)["diffs"]}
        assert res.code == 3 and diffs[("database setting", "search_path")]["outcome"] == "differ", res.output
        assert diffs[("database setting", "app.jwt_secret")]["outcome"] == "differ", res.output
        assert SECRET_SETTING not in res.output and "another-value" not in res.output
        dbs.target_cluster.execute(f"ALTER DATABASE {tgt} SET app.jwt_secret = '{SECRET_SETTING}'")
        dbs.target_cluster.execute(f"ALTER DATABASE {tgt} SET search_path = app, public;"
                                   f" ALTER DATABASE {tgt} SET work_mem = '8MB'")
        res = run_cli("db", "verify", "--json", env=env_for(dbs))
        diffs = {(d["kind"], d["name"]): d for d in json.loads(res.out)["diffs"]}
        assert res.code == 0, res.output
        assert diffs[("database setting", "work_mem")]["outcome"] == "extra on target"
        assert diffs[("database setting", "work_mem")]["info_only"] is True

        # A target user that does not own the database cannot set them: a warning naming the statements.
        dbs.target_cluster.execute(f"ALTER DATABASE {tgt} RESET ALL; ALTER DATABASE {tgt} OWNER TO postgres;"
                                   f" GRANT CREATE ON DATABASE {tgt} TO rds_master")
        res = run_cli("db", "plan", env=env_for(dbs))
        assert "rds_master does not own the target database" in res.out, res.out
        res = run_cli("db", "copy", "--clean", "--yes", "--no-verify", "--json", env=env_for(dbs))
        assert res.code == 0, res.output
        warnings = json.loads(res.out)["warnings"]
        assert any("could not be set on the target" in w and "must be owner of database" in w
                   and f'ALTER DATABASE "{tgt}" SET "search_path" TO \'app\', \'public\'' in w
                   for w in warnings), warnings
        assert SECRET_SETTING not in res.output
        assert any(""""app.jwt_secret" TO '(hidden)'""" in w for w in warnings), warnings
        assert _target_database_settings(dbs) == []
        res = run_cli("db", "verify", env=env_for(dbs))
        assert res.code == 3 and "search_path" in res.out, res.output
    finally:
        dbs.source_cluster.execute(f"DROP ROLE IF EXISTS {role}")


def _database_comment(cluster, db: str) -> str | None:  # type: ignore[no-untyped-def]
    with psycopg.connect(cluster.url()) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (db,)).fetchone()
    return row[0] if row else None


def test_the_database_comment_reaches_the_target_and_is_verified(dbs) -> None:  # type: ignore[no-untyped-def]
    """COMMENT ON DATABASE is outside pg_dump's sections too (only --create writes it): the copy sets
    it on the target at the end, and verify compares it."""
    src, tgt = dbs.source_db, dbs.target_db
    text = "Bulk upload service: it's the app's data ✓"
    dbs.source_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    dbs.source_cluster.execute(f"COMMENT ON DATABASE {src} IS 'Bulk upload service: it''s the app''s data ✓'")
    res = run_cli("db", "plan", "--json", env=env_for(dbs))
    assert res.code == 0 and "database settings" in [s["name"] for s in json.loads(res.out)["steps"]], res.output
    res = run_cli("db", "copy", "--jobs", "2", env=env_for(dbs))
    assert res.code == 0, res.output
    assert _database_comment(dbs.target_cluster, tgt) == text
    assert_same_database(dbs)

    dbs.target_cluster.execute(f"COMMENT ON DATABASE {tgt} IS 'another comment'")
    res = run_cli("db", "verify", "--json", env=env_for(dbs))
    diffs = {(d["kind"], d["name"]): d for d in json.loads(res.out)["diffs"]}
    assert res.code == 3 and diffs[("database comment", "current database")]["outcome"] == "differ", res.output

    # A target user that does not own the database cannot set it: said by the plan, a warning of the copy.
    dbs.target_cluster.execute(f"COMMENT ON DATABASE {tgt} IS NULL; ALTER DATABASE {tgt} OWNER TO postgres;"
                               f" GRANT CREATE ON DATABASE {tgt} TO rds_master")
    statement = f"""COMMENT ON DATABASE "{tgt}" IS 'Bulk upload service: it''s the app''s data ✓'"""
    res = run_cli("db", "plan", "--json", env=env_for(dbs))
    assert any("cannot set the source database's comment" in w and statement in w
               for w in json.loads(res.out)["warnings"]), res.output
    res = run_cli("db", "copy", "--clean", "--yes", "--no-verify", "--json", env=env_for(dbs))
    assert res.code == 0, res.output
    assert any("could not be set on the target" in w and statement in w
               for w in json.loads(res.out)["warnings"]), res.output
    assert _database_comment(dbs.target_cluster, tgt) is None


def test_extensions_are_created_at_the_source_version(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A pg_upgrade'd source keeps older extension versions; pg_dump's CREATE EXTENSION names none, so
    a restore would install the target's default and every copy would differ from its source."""
    dbs.source_sql("CREATE EXTENSION pg_trgm VERSION '1.4'; CREATE SCHEMA ext; CREATE EXTENSION hstore SCHEMA ext"
                   " VERSION '1.7'; CREATE TABLE t (id int PRIMARY KEY, body text, kv ext.hstore);"
                   " CREATE INDEX t_trgm ON t USING gist (body gist_trgm_ops); INSERT INTO t VALUES (1, 'hi', 'a=>1');")

    def versions() -> dict[str, tuple[str, str]]:
        with psycopg.connect(dbs.target_admin_url) as conn:
            return {name: (version, schema) for name, version, schema in conn.execute(
                "SELECT extname, extversion, extnamespace::regnamespace::text FROM pg_extension"
                " WHERE extname <> 'plpgsql'").fetchall()}

    # A stream cannot skip the restore's CREATE SCHEMA ext: hstore gets the target's default version
    # there, which the plan says, and which verify shows as information, not as a difference.
    res = run_cli("db", "plan", "--mode", "stream", env=env_for(dbs))
    assert res.code == 0 and "--mode stream installs the target's default version" in res.out, res.output
    res = run_cli("db", "copy", "--mode", "stream", "--json", env=env_for(dbs))
    assert res.code == 0, res.output
    installed = versions()
    assert installed["pg_trgm"] == ("1.4", "public") and installed["hstore"][0] != "1.7", installed
    diffs = [d for d in json.loads(res.out)["children"][0]["diffs"] if d["kind"] == "extension"]
    assert {(d["name"], d["outcome"], d["info_only"]) for d in diffs if d["outcome"] != "match"} == {
        ("hstore", "differ", True)}, diffs
    assert any("version 1.7 on source" in d["detail"] for d in diffs), diffs

    res = run_cli("db", "copy", "--dry-run", "--clean", "--json", env=env_for(dbs))
    assert res.code == 0 and not any("extension" in w for w in json.loads(res.out)["warnings"]), res.output
    res = run_cli("db", "copy", "--jobs", "2", "--clean", "--yes", env=env_for(dbs))
    assert res.code == 0, res.output
    assert versions() == {"pg_trgm": ("1.4", "public"), "hstore": ("1.7", "ext")}
    assert_same_database(dbs)

    # A version the target server does not offer: the plan says the default will be installed.
    import migrate.db.extensions as extensions
    import migrate.db.planner as planner
    from migrate.config import DbCopyConfig, DbJobConfig

    on_target = extensions.on_target

    def without_1_4(conn, names):  # type: ignore[no-untyped-def]
        found = on_target(conn, names)
        found["pg_trgm"].versions.discard("1.4")
        return found

    monkeypatch.setattr(extensions, "on_target", without_1_4)
    plan = planner.plan_database(DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url), clean=True))
    assert plan.ok and any("does not offer version 1.4" in w for w in plan.warnings), plan.warnings


def test_an_extension_the_target_has_in_another_schema_blocks_the_copy(dbs) -> None:  # type: ignore[no-untyped-def]
    """CREATE EXTENSION IF NOT EXISTS does nothing when the DBA installed it elsewhere: the tables that
    use its types would fail to restore ('type "ext.citext" does not exist'), and --clean cannot drop it."""
    dbs.source_sql("CREATE SCHEMA ext; CREATE EXTENSION citext SCHEMA ext;"
                   " CREATE TABLE users (id int PRIMARY KEY, email ext.citext); INSERT INTO users VALUES (1, 'A@x');")
    dbs.target_sql("CREATE EXTENSION citext")  # as the DBA, in public
    blocker = "extension citext is already installed on the target in schema public, but in schema ext on the source"
    for command in (["db", "plan"], ["db", "copy"], ["db", "copy", "--clean", "--yes"]):
        res = run_cli(*command, env=env_for(dbs))
        assert res.code == 1 and blocker in res.output, (command, res.output)
        assert "ALTER EXTENSION \"citext\" SET SCHEMA \"ext\"" in res.output
    assert len(res.err.strip().splitlines()) == 1, res.err
    assert target_relations(dbs) == []
    # Moved, but into a schema the target user may not use: the plan says what to grant.
    dbs.target_sql("CREATE SCHEMA ext; ALTER EXTENSION citext SET SCHEMA ext")
    res = run_cli("db", "plan", env=env_for(dbs))
    assert res.code == 1 and 'GRANT USAGE, CREATE ON SCHEMA "ext" TO "rds_master"' in res.out, res.output
    # Granted, as the blocker says: the schema exists on the target before the restore, which must
    # not create it again.
    dbs.target_sql("GRANT USAGE, CREATE ON SCHEMA ext TO rds_master")
    res = run_cli("db", "copy", "--jobs", "2", env=env_for(dbs))
    assert res.code == 0, res.output
    assert_same_database(dbs)


def test_jobs_beyond_a_connection_limit_are_refused_by_the_plan(dbs) -> None:  # type: ignore[no-untyped-def]
    """A role's or database's CONNECTION LIMIT below what --jobs opens made the copy fail part-way
    ("too many connections for role"); the plan counts the copy's connections and names the --jobs that fits."""
    role, pw = f"few_{dbs.source_db[-10:]}", "few-conns-pw"
    dbs.source_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}' CONNECTION LIMIT 3 IN ROLE pg_read_all_data;"
                   "CREATE TABLE a (id int PRIMARY KEY, v text);"
                   " INSERT INTO a SELECT g, 'x' FROM generate_series(1, 500) g;"
                   "CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b SELECT generate_series(1, 500);"
                   "CREATE TABLE c (id int); INSERT INTO c SELECT generate_series(1, 500)")
    dbs.target_cluster.execute(f"ALTER DATABASE {dbs.target_db} CONNECTION LIMIT 5")
    env = {**env_for(dbs), "MIGRATE_SOURCE_DATABASE_URL": dbs.source_cluster.url(dbs.source_db, role, pw)}
    try:
        for command in (["db", "plan", "--jobs", "4"], ["db", "copy", "--jobs", "4"]):
            res = run_cli(*command, env=env)
            assert res.code == 1, res.output
            assert (f"up to 5 connections to the source at once (--jobs 4), but only 3 may be opened: role {role}"
                    " has CONNECTION LIMIT 3") in res.output, res.output
            assert (f"up to 7 connections to the target at once (--jobs 4), but only 5 may be opened: database"
                    f" {dbs.target_db} has CONNECTION LIMIT 5") in res.output, res.output
            assert "use --jobs 2 or fewer" in res.output
        assert len(res.err.strip().splitlines()) == 1, res.err
        assert target_relations(dbs) == []
        # Exactly at both limits (3 on the source, 5 on the target), with the verification.
        res = run_cli("db", "copy", "--jobs", "2", env=env)
        assert res.code == 0, res.output
        assert_same_database(dbs)
        res = run_cli("db", "copy", "--mode", "stream", "--jobs", "2", "--clean", "--yes", env=env)
        assert res.code == 0, res.output
    finally:
        dbs.source_cluster.execute(f"DROP ROLE IF EXISTS {role}")


def test_autovacuum_is_paused_on_big_tables_during_the_load_and_put_back(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A freshly loaded table draws autovacuum, whose lock an index build then waits for (a second,
    until the server cancels it): paused for the load, each table's own setting back at the end."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    dbs.source_sql("CREATE TABLE plain (id int PRIMARY KEY); INSERT INTO plain SELECT generate_series(1, 1000);"
                   "CREATE TABLE tuned (id int PRIMARY KEY) WITH (autovacuum_enabled = true, fillfactor = 90);"
                   "INSERT INTO tuned SELECT generate_series(1, 1000);"
                   "CREATE TABLE off (id int) WITH (autovacuum_enabled = false); INSERT INTO off VALUES (1);")
    monkeypatch.setattr(copier, "AUTOVACUUM_OFF_BYTES", 1)
    seen: list[dict[str, list[str] | None]] = []
    real = copier._Copier.copy_data

    def copy_data(self):  # type: ignore[no-untyped-def]
        with psycopg.connect(dbs.target_admin_url) as conn:
            seen.append(dict(conn.execute("SELECT relname::text, reloptions FROM pg_class"
                                          " WHERE relname IN ('plain', 'tuned', 'off')").fetchall()))
        return real(self)

    monkeypatch.setattr(copier._Copier, "copy_data", copy_data)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2))
    report = copier.copy_database(cfg, RecordingReporter())
    assert report.status.value == "success", [str(d) for c in report.children for d in c.diffs
                                              if d.outcome.value != "match" and not d.info_only]
    assert seen == [{"plain": ["autovacuum_enabled=false"], "tuned": ["fillfactor=90", "autovacuum_enabled=false"],
                     "off": ["autovacuum_enabled=false"]}]
    assert_same_database(dbs)  # reloptions included: reset, true, false as on the source

    # A copy that fails puts them back too (what it cannot, its report names the statements for).

    def failing(self):  # type: ignore[no-untyped-def]
        raise copier.CopyFailed("injected")

    monkeypatch.setattr(copier._Copier, "copy_data", real)
    for phase in ("copy_data", "post_data"):  # in the data phase, and after it (the pause spans both)
        dbs.target_sql("DROP TABLE IF EXISTS plain, tuned, off, late")
        with monkeypatch.context() as m:
            m.setattr(copier._Copier, phase, failing)
            with pytest.raises(copier.CopyFailed):
                copier.copy_database(DbCopyConfig(db=cfg.db, verify=False, clean=True), RecordingReporter())
        with psycopg.connect(dbs.target_admin_url) as conn:
            assert dict(conn.execute("SELECT relname::text, reloptions FROM pg_class"
                                     " WHERE relname IN ('plain', 'tuned', 'off')").fetchall()) == {
                "plain": None, "tuned": ["autovacuum_enabled=true", "fillfactor=90"],
                "off": ["autovacuum_enabled=false"]}, phase


def test_a_failing_index_build_of_a_small_table_names_it_and_commits_none_of_it(dbs) -> None:  # type: ignore[no-untyped-def]
    """A small table's record, builds and ANALYZE go to the server in one pipeline with its copy's
    transaction: a build that fails there (an index expression reading a setting of the source
    database, which the target gets only at the end) names the table and the server's reason, and
    rolls back the table's rows and its record, so that a rerun copies it again."""
    dbs.source_sql(
        f"ALTER DATABASE {dbs.source_db} SET app.buckets = '1000'; SET app.buckets = '1000';"
        "CREATE FUNCTION bucket(int) RETURNS int IMMUTABLE LANGUAGE sql"
        " AS $$ SELECT $1 % current_setting('app.buckets')::int $$;"
        "CREATE TABLE fine (id int PRIMARY KEY); INSERT INTO fine SELECT generate_series(1, 5000);"  # copied first
        "CREATE TABLE keyed (id int PRIMARY KEY, v text);"
        "INSERT INTO keyed SELECT g, 'v' FROM generate_series(1, 100) g;"
        "CREATE UNIQUE INDEX keyed_bucket ON keyed (bucket(id));"
    )
    res = run_cli("db", "copy", "--jobs", "1", "--no-verify", env=env_for(dbs))
    assert res.code == 1, res.output
    lines = [ln for ln in res.err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "public.keyed" in lines[0] and "app.buckets" in lines[0], res.err
    assert "Traceback" not in res.err
    with psycopg.connect(dbs.target_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM keyed").fetchone() == (0,)  # rolled back with the build
        recorded = {r[0] for r in conn.execute("SELECT tbl FROM _paas_migrate.copy_state")}
    assert not any("keyed" in t for t in recorded) and any("fine" in t for t in recorded), recorded
