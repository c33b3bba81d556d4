"""A `db copy` killed outright (SIGKILL: the OOM killer, an ECS task's stop timeout, `kill -9`) cannot
end its children or cancel its statements itself. The kernel ends the children (setpriv --pdeathsig)
and the target ends the statements of a client that is gone (client_connection_check_interval), so
nothing keeps writing to the target and a rerun can start at once."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_db_copy import assert_same_database, env_for
from tests.support.cli import run_cli, start_cli
from tests.support.procs import client_command_lines

pytestmark = pytest.mark.postgres

ACTIVE = ("SELECT application_name, left(query, 60) FROM pg_stat_activity WHERE datname = current_database()"
          " AND state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()")


# Index builds that take ~6 s on the target (1 ms per row, while the target database sets test.slow):
# long enough that a statement left running, or a pg_restore left to carry on, is still there when
# the test looks. The rerun (test.slow reset) builds them at full speed.
SEED = """
CREATE FUNCTION slow(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF current_setting('test.slow', true) = 'on' THEN PERFORM pg_sleep(0.001); END IF;
    RETURN $1;
END$$;
CREATE TABLE p (id int, v text) PARTITION BY RANGE (id);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100000000);
INSERT INTO p SELECT g, md5(g::text) FROM generate_series(1, 6000) g;
CREATE INDEX p_slow ON p (slow(v));
CREATE TABLE big (id int PRIMARY KEY, v text);
INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 6000) g;
CREATE INDEX big_slow ON big (slow(v));
"""


@pytest.mark.parametrize(
    ("mode", "building"),
    [
        ("parallel", "CREATE INDEX p1_"),  # post-data: pg_restore builds the partition's index
        ("parallel", "CREATE INDEX big_slow"),  # data phase: our own connection builds it as the table lands
        ("stream", "CREATE INDEX"),  # pg_dump | pg_restore
    ],
)
def test_sigkill_leaves_no_client_and_no_statement_running(dbs, mode: str, building: str) -> None:  # type: ignore[no-untyped-def]
    dbs.source_sql(SEED)
    dbs.target_sql(f"ALTER DATABASE {dbs.target_db} SET test.slow = 'on'")
    before = set(client_command_lines())
    proc = start_cli("db", "copy", "--jobs", "1", "--no-verify", "--mode", mode, env=env_for(dbs))
    with psycopg.connect(dbs.target_admin_url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
            " AND backend_type = 'client backend' AND query LIKE %s", (building + "%",)
        ).fetchone():
            assert time.monotonic() < deadline and proc.poll() is None, f"never saw {building!r} running"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        left_behind = list(Path(tempfile.gettempdir()).glob(f"paas-migrate-db-{proc.pid}-*"))
        assert left_behind  # its temporary directory (no chance to remove it)...
        # Within seconds (the server checks for its client every second): no client
        # program of ours is left, and nothing of ours is running on the target.
        deadline = time.monotonic() + 4
        while True:
            left = [c for c in client_command_lines() if c not in before]
            running = conn.execute(ACTIVE).fetchall()
            if not left and not running:
                break
            assert time.monotonic() < deadline, (left, running)
            time.sleep(0.1)
    dbs.target_sql(f"ALTER DATABASE {dbs.target_db} RESET test.slow")
    # Nothing blocks the rerun (resume.leftover_sessions would refuse while a session of ours works).
    rerun = ["--resume"] if mode == "parallel" else ["--clean", "--yes"]
    res = run_cli("db", "copy", "--no-verify", "--mode", mode, *rerun, env=env_for(dbs), timeout=300)
    assert res.code == 0, res.output
    assert_same_database(dbs)
    assert not any(p.exists() for p in left_behind)  # ...is removed by the next run
