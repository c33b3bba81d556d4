"""Commits on a target that flushes its WAL to disk (a durable cluster, as RDS is): pg_restore's
sessions must not wait for the disk once per entry of its list, and the copy must still be durable
when it is reported done."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from migrate.local.postgres import LocalPostgres, find_bindir
from tests.support.services import RDS_PASSWORD, RDS_USER, unavailable

TABLES = 120  # pre-data: a table, its sequence, OWNED BY and DEFAULT each: 480 entries


@pytest.fixture(scope="module")
def durable_target() -> Iterator[LocalPostgres]:
    if find_bindir() is None:
        unavailable("no PostgreSQL server binaries for a durable (fsync on) cluster")
    cluster = LocalPostgres("durable-target", durable=True).start()
    try:
        cluster.create_role(RDS_USER, RDS_PASSWORD)
        cluster.execute("CREATE EXTENSION pg_walinspect")
        # Nothing but the copy writes WAL: the commits found after it are the copy's.
        cluster.execute("ALTER SYSTEM SET autovacuum = off")
        cluster.execute("SELECT pg_reload_conf()")
        yield cluster
    finally:
        cluster.stop()


def _wal(cluster: LocalPostgres, query: str, *args: Any) -> Any:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        return conn.execute(query, args).fetchone()[0]  # type: ignore[index]


@pytest.mark.parametrize("mode", ["parallel", "stream"])
def test_restore_commits_do_not_wait_for_the_disk_and_the_copy_is_durable_when_done(
        dbs: Any, durable_target: LocalPostgres, mode: str) -> None:
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    dbs.source_sql("DO $$ BEGIN FOR i IN 1.." + str(TABLES) + " LOOP EXECUTE format("
                   "'CREATE TABLE t%s (id serial PRIMARY KEY, ref int); CREATE INDEX ON t%s (ref);"
                   " INSERT INTO t%s (ref) SELECT g FROM generate_series(1, 10) g', i, i, i); END LOOP; END $$")
    target_db = durable_target.create_database(f"tgt_{uuid.uuid4().hex[:10]}", owner=RDS_USER)
    time.sleep(1.5)  # the statistics of what came before are reported
    syncs = _wal(durable_target, "SELECT wal_sync FROM pg_stat_wal")
    start = _wal(durable_target, "SELECT pg_current_wal_insert_lsn()")
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, durable_target.url(target_db, RDS_USER, RDS_PASSWORD),
                                            jobs=2), mode=mode, verify=False)
    report = copier.copy_database(cfg, RecordingReporter())
    flushed = _wal(durable_target, "SELECT pg_current_wal_flush_lsn()")  # at once: what is durable now
    assert report.status.value == "success", report.errors
    time.sleep(1.5)  # the WAL writer flushes the rest; every session has reported its statistics
    # Every commit the copy made was on disk when it was reported done...
    unflushed = _wal(durable_target,
                     "SELECT count(*) FROM pg_get_wal_records_info(%s, pg_current_wal_flush_lsn())"
                     " WHERE resource_manager = 'Transaction' AND record_type LIKE 'COMMIT%%' AND end_lsn > %s",
                     start, flushed)
    assert unflushed == 0
    # ...without a flush per pg_restore entry (one per commit: over 4*TABLES before).
    made = _wal(durable_target, "SELECT wal_sync FROM pg_stat_wal") - syncs
    assert made < TABLES, made
    durable_target.drop_database(target_db)
