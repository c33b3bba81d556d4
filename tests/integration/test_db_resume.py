"""db copy --resume against real clusters: what an interrupted copy committed is kept, the rest is copied,
and the result equals the source by pg_dump's account (an oracle independent of our verify)."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_db_copy import HARD_SCHEMA, assert_same_database, env_for
from tests.support.cli import interrupt, run_cli, start_cli
from tests.support.dbfaults import fail_copy_of

STATE = "_paas_migrate"


def _wait_for_copy_of(dbs, table: str, timeout: float = 60) -> int:  # type: ignore[no-untyped-def]
    """The source backend running the COPY of `table` (the copy runs it through psql)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dbs.source_cluster.url(dbs.source_db), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
                " AND query LIKE 'COPY %%' AND query LIKE %s", (f"%{table}%",)
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.01)
    raise AssertionError(f"the copy never started a COPY of {table}")


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def _state_exists(dbs) -> bool:  # type: ignore[no-untyped-def]
    with psycopg.connect(dbs.target_admin_url) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (STATE,)).fetchone() is not None


def _wait_until_unlocked(dbs, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    from migrate.db.resume import lock_holder

    deadline = time.monotonic() + timeout
    with psycopg.connect(dbs.target_admin_url, autocommit=True) as conn:
        while lock_holder(conn) is not None:
            assert time.monotonic() < deadline, lock_holder(conn)
            time.sleep(0.1)


def _seed(dbs) -> None:  # type: ignore[no-untyped-def]
    # Copied biggest first with one job: a_big lands (and its key is built) before b_mid starts.
    dbs.source_sql(
        "CREATE TABLE a_big (id int PRIMARY KEY, v text);"
        "INSERT INTO a_big SELECT g, md5(g::text) || md5((g+1)::text) FROM generate_series(1, 600000) g;"
        "CREATE TABLE b_mid (id int PRIMARY KEY, v text, a int REFERENCES a_big);"
        "INSERT INTO b_mid SELECT g, md5(g::text), g FROM generate_series(1, 400000) g;"
        "CREATE TABLE c_small (id serial PRIMARY KEY, v text); INSERT INTO c_small (v) VALUES ('x'), ('y');"
        "SELECT lo_from_bytea(0, '\\x00ff'::bytea);"
    )


SEEDED = ("a_big", "b_mid", "c_small")


def _resume_copies_only_the_rest(dbs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The final `--resume`: it keeps what is on the target and copies only the rest. A resume that
    emptied the target and copied everything again would also end equal to the source, so count."""
    source = {t: _count(dbs.source_url, t) for t in SEEDED}
    before = {t: _count(dbs.target_admin_url, t) for t in SEEDED}
    # A table's copy commits whole or not at all: each is either complete or empty on the target.
    assert all(before[t] in (0, source[t]) for t in SEEDED), (before, source)
    kept = [t for t in SEEDED if before[t] == source[t]]
    assert kept, before  # something committed before the stop, or this would prove nothing
    report_path = tmp_path / "final-resume.json"
    res = run_cli("db", "copy", "--resume", "--report", str(report_path), env=env_for(dbs))
    assert res.code == 0, res.output
    report = json.loads(report_path.read_text())
    data = next(p for p in report["phases"] if p["name"] == "data")
    assert data["rows"] == sum(source[t] - before[t] for t in SEEDED), (data, before, source)
    assert f"{len(kept)} {'copy' if len(kept) == 1 else 'copies'} kept" in data["note"], data


def _killed_copy(dbs) -> None:  # type: ignore[no-untyped-def]
    """A copy whose source connection dies while it copies b_mid: exit 1, a_big already committed."""
    proc = start_cli("db", "copy", "--jobs", "1", "--no-verify", env=env_for(dbs))
    pid = _wait_for_copy_of(dbs, "b_mid")
    with psycopg.connect(dbs.source_cluster.url(dbs.source_db), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "b_mid" in err and "--resume" in err, err
    assert _count(dbs.target_admin_url, "a_big") == 600000
    assert _count(dbs.target_admin_url, "b_mid") == 0


def test_resume_keeps_what_committed_and_copies_the_rest(dbs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _seed(dbs)
    _killed_copy(dbs)
    # A plain rerun is refused: it names both ways forward and writes nothing.
    res = run_cli("db", "copy", "--no-verify", env=env_for(dbs))
    assert res.code == 1, res.output
    assert "--resume" in res.err and "--clean --yes" in res.err and len(res.err.strip().splitlines()) == 1
    assert _count(dbs.target_admin_url, "a_big") == 600000
    # The plan says what would be kept.
    res = run_cli("db", "plan", "--json", env=env_for(dbs))
    assert json.loads(res.out)["facts"]["interrupted copy on the target"] == {"copies": 1, "index builds": 1}
    report_path = tmp_path / "resume.json"
    res = run_cli("db", "copy", "--resume", "--report", str(report_path), env=env_for(dbs))
    assert res.code == 0, res.output  # verification included: it matches
    report = json.loads(report_path.read_text())
    data = next(p for p in report["phases"] if p["name"] == "data")
    # Only what the interrupted run had not committed was copied again.
    assert data["rows"] == 400000 + 2, data
    assert "1 copy kept" in data["note"], data
    assert any(w.startswith("--resume: keeping 1 table copies") for w in report["warnings"]), report["warnings"]
    assert not _state_exists(dbs)
    assert_same_database(dbs)
    # Finished: nothing is left to resume, and the target counts as not empty again.
    res = run_cli("db", "copy", "--resume", "--no-verify", env=env_for(dbs))
    assert res.code == 1 and "no record of an interrupted" in res.err, res.output


def test_resume_refuses_when_it_cannot_continue(dbs) -> None:  # type: ignore[no-untyped-def]
    _seed(dbs)
    for args, code, text in [
        (("--resume", "--clean", "--yes"), 2, "--resume keeps"),
        (("--resume", "--mode", "stream"), 2, "cannot be resumed"),
    ]:
        res = run_cli("db", "copy", *args, env=env_for(dbs))
        assert res.code == code and text in res.err, res.output
    _killed_copy(dbs)
    # The source's schema changed since: what was copied cannot be trusted to fit it.
    dbs.source_sql("ALTER TABLE b_mid ADD COLUMN extra int")
    res = run_cli("db", "copy", "--resume", env=env_for(dbs))
    assert res.code == 1 and "schema changed" in res.err and len(res.err.strip().splitlines()) == 1, res.output
    assert _count(dbs.target_admin_url, "a_big") == 600000  # refused: nothing touched
    res = run_cli("db", "copy", "--clean", "--yes", env=env_for(dbs))
    assert res.code == 0, res.output
    assert not _state_exists(dbs)
    assert_same_database(dbs)


def test_resume_on_an_empty_target_copies_everything(dbs) -> None:  # type: ignore[no-untyped-def]
    dbs.source_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);")
    res = run_cli("db", "copy", "--resume", env=env_for(dbs))
    assert res.code == 0, res.output
    assert_same_database(dbs)


def test_resume_after_an_interrupt(dbs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _seed(dbs)
    proc = start_cli("db", "copy", "--jobs", "1", "--no-verify", env=env_for(dbs))
    _wait_for_copy_of(dbs, "b_mid")
    res = interrupt(proc, signal.SIGTERM)
    assert res.code == 130 and "--resume" in res.err, res.output
    # The stop ended the running COPY at once (an ECS stop allows 30 s): nothing of it was committed.
    assert _count(dbs.target_admin_url, "b_mid") == 0
    assert _count(dbs.target_admin_url, "a_big") == 600000
    _resume_copies_only_the_rest(dbs, tmp_path)
    assert_same_database(dbs)


@pytest.mark.parametrize("jobs", [2, 1])
def test_resume_of_a_table_copied_in_ranges(dbs, monkeypatch, jobs: int) -> None:  # type: ignore[no-untyped-def]
    """The first range of a split table commits, the second fails. Resumed with the same --jobs, the
    committed range is kept; with another --jobs (another split) the table is emptied and copied whole.
    Either way no row is copied twice."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.errors import CopyFailed
    from migrate.progress import NullReporter

    dbs.source_sql(
        "CREATE TABLE ranged (id bigint PRIMARY KEY, v text);"
        "INSERT INTO ranged SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g;"
        "CREATE INDEX ranged_v ON ranged (v);"
    )
    real = copier._Copier._copy_unit
    first_landed = threading.Event()

    def failing(self, unit, fmt, *inline):  # type: ignore[no-untyped-def]
        if unit.part == 0:
            real(self, unit, fmt, *inline)
            first_landed.set()
            return
        first_landed.wait(30)
        raise CopyFailed("injected failure")

    monkeypatch.setattr(copier._Copier, "_copy_unit", failing)

    def cfg(j: int, resume: bool) -> DbCopyConfig:
        return DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=j), verify=False,
                            resume=resume, split_threshold_bytes=300_000)

    with pytest.raises(CopyFailed, match="injected failure"):
        copier.copy_database(cfg(2, False), NullReporter())
    kept = _count(dbs.target_admin_url, "ranged")
    assert 0 < kept < 20000
    monkeypatch.setattr(copier._Copier, "_copy_unit", real)
    report = copier.copy_database(cfg(jobs, True), NullReporter())
    data = next(p for p in report.phases if p.name == "data")
    assert data.rows == (20000 - kept if jobs == 2 else 20000), (data.rows, kept)
    assert not _state_exists(dbs)
    assert_same_database(dbs)


def test_a_second_copy_into_the_same_target_is_refused_while_one_runs(dbs) -> None:  # type: ignore[no-untyped-def]
    """Two copies at once (an ECS task started while the last one still stops) would both copy what
    neither has recorded: the target's advisory lock lets one through."""
    from migrate.db.resume import LOCK_KEY

    dbs.source_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
    with psycopg.connect(dbs.target_admin_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        for args in ((), ("--resume",), ("--mode", "stream")):
            res = run_cli("db", "copy", *args, env=env_for(dbs))
            assert res.code == 1 and "another paas-migrate copy" in res.err, res.output
            pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            assert f"session pid {pid}," in res.err and "pg_terminate_backend" in res.err, res.err
        with psycopg.connect(dbs.target_admin_url) as conn:
            assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)
    res = run_cli("db", "copy", env=env_for(dbs))  # the lock went with its session
    assert res.code == 0, res.output


def test_sessions_left_working_by_a_killed_run_stop_the_next_one(dbs) -> None:  # type: ignore[no-untyped-def]
    """A run killed with SIGKILL leaves its pg_restore (and any query its server has not yet found
    orphaned) working on the target: a rerun would race it. It is refused, naming the session."""
    dbs.source_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
    leftover = psycopg.connect(dbs.target_url, autocommit=True,  # the copy's own user, as its pg_restore
                               application_name="paas-migrate restore 4242")
    try:
        pid = leftover.info.backend_pid
        def sleep() -> None:
            with contextlib.suppress(psycopg.OperationalError):  # ended by pg_terminate_backend below
                leftover.execute("SELECT pg_sleep(60)")

        worker = threading.Thread(target=sleep, daemon=True)
        worker.start()
        with psycopg.connect(dbs.target_admin_url, autocommit=True) as admin:
            deadline = time.monotonic() + 10
            while admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() != ("active",):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for cmd in (("db", "copy"), ("db", "copy", "--resume"), ("db", "plan")):
                res = run_cli(*cmd, env=env_for(dbs))
                assert res.code == 1 and f"pid {pid}: SELECT pg_sleep(60)" in res.output, res.output
                assert "pg_terminate_backend" in res.output, res.output
            assert admin.execute("SELECT to_regclass('public.t')").fetchone() == (None,)  # nothing written
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        worker.join(timeout=10)
    finally:
        leftover.close()
    res = run_cli("db", "copy", env=env_for(dbs))
    assert res.code == 0, res.output


# Where the first run's post-data stopped: which of its entries it had run. "late" ran every entry
# except those whose object already exists before they run (a view's placeholder has its _RETURN rule,
# a partition has its copy of the parent's trigger, a materialized view is there before its REFRESH).
_LATE = re.compile(r" RULE .* _RETURN | TRIGGER public logs_2023 | MATERIALIZED VIEW DATA ")
_STOPS = {
    "none": lambda entries: [],
    "half": lambda entries: entries[: len(entries) // 2],
    "late": lambda entries: [e for e in entries if not _LATE.search(e)],
    "all": lambda entries: entries,
}


@pytest.mark.parametrize("stop", list(_STOPS))
def test_a_copy_stopped_inside_post_data_resumes_there(dbs, monkeypatch, tmp_path: Path, stop: str) -> None:  # type: ignore[no-untyped-def]
    """pg_restore -j runs each post-data entry as one transaction: after a stop, the entries whose
    object is on the target are kept (matched by name: the target's oids differ) and the rest run."""
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.errors import CopyFailed
    from migrate.progress import NullReporter

    dbs.source_sql(HARD_SCHEMA)
    real_toc, real_restore = copier._Copier._toc, copier._Copier.restore_section
    first_run: list[str] = []
    all_entries: list[str] = []

    def stopped_toc(self, section):  # type: ignore[no-untyped-def]
        path = real_toc(self, section)
        if section == "post-data":
            all_entries[:] = [ln for ln in path.read_text().splitlines() if copier.TOC_ENTRY.match(ln)]
            first_run[:] = _STOPS[stop](all_entries)
            path.write_text("\n".join(first_run) + "\n")
        return path

    def stopping(self, section, jobs):  # type: ignore[no-untyped-def]
        real_restore(self, section, jobs)
        if section == "post-data":
            raise CopyFailed("injected: stopped inside post-data")

    monkeypatch.setattr(copier._Copier, "_toc", stopped_toc)
    monkeypatch.setattr(copier._Copier, "restore_section", stopping)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2), verify=False)
    with pytest.raises(CopyFailed) as info:
        copier.copy_database(cfg, NullReporter())
    assert info.value.hint and "--resume" in info.value.hint, info.value.hint
    monkeypatch.undo()
    assert len(all_entries) > 15 and len([e for e in all_entries if _LATE.search(e)]) == 4, all_entries
    with psycopg.connect(dbs.target_admin_url) as conn:
        steps = {r[0] for r in conn.execute(f"SELECT name FROM {STATE}.copy_state WHERE kind = 'step'")}
    assert {"pre-data", "data", "post-data started"} <= steps and "post-data" not in steps, steps
    res = run_cli("db", "copy", "--resume", "--dry-run", env=env_for(dbs))
    assert res.code == 0 and "post-data restored" in " ".join(res.output.split()), res.output
    report_path = tmp_path / "report.json"
    res = run_cli("db", "copy", "--resume", "--report", str(report_path), env=env_for(dbs))
    assert res.code == 0, res.output  # our verify included
    report = json.loads(report_path.read_text())
    post = next(p for p in report["phases"] if p["name"] == "post-data")
    kept = int(post["note"].split()[0])
    # Kept: what the first run created (never an entry it did not run); none of it twice (an error).
    assert post["note"] == f"{kept} objects kept from the interrupted run", post
    assert kept <= len([e for e in first_run if not _LATE.search(e)]), (kept, first_run)
    assert (kept == 0) == (stop == "none"), (stop, kept)
    assert not any(w.startswith("post-data:") for w in report["warnings"]), report["warnings"]  # no restore error
    assert_same_database(dbs)
    with psycopg.connect(dbs.target_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'organisations_touch'").fetchone() == (1,)
        populated = conn.execute("SELECT relname, relispopulated FROM pg_class WHERE relkind = 'm' ORDER BY 1")
        assert populated.fetchall() == [("org_counts", True), ("users_by_id_mv", True)]
        assert conn.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'logs_audit'"
                            " AND tgrelid = 'logs_2023'::regclass").fetchone() == ("D",)
        assert conn.execute("SELECT count(*) FROM users_by_id WHERE id IS NOT NULL").fetchone() == (500,)
    assert not _state_exists(dbs)


def test_without_create_on_the_database_the_copy_keeps_no_record_and_says_so(dbs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.errors import CopyFailed
    from migrate.progress import NullReporter
    from tests.support.services import RDS_USER

    dbs.source_sql("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 10);"
                   "CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b VALUES (1);")
    with psycopg.connect(dbs.target_cluster.url(dbs.target_db), autocommit=True) as admin:
        admin.execute(f"REVOKE CREATE ON DATABASE {dbs.target_db} FROM {RDS_USER}, PUBLIC")
    res = run_cli("db", "plan", env=env_for(dbs))
    assert res.code == 0 and "no resume record" in res.output, res.output
    fail_copy_of(monkeypatch, "b")
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=1), verify=False)
    with pytest.raises(CopyFailed) as info:
        copier.copy_database(cfg, NullReporter())
    # No record, so no --resume: the hint says what will work.
    assert info.value.hint and "--clean --yes" in info.value.hint and "--resume" not in info.value.hint
    assert not _state_exists(dbs)


def test_resume_after_kill_9_twice(dbs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """No goodbye at all (an OOM kill, a host gone): what the server committed is kept, what it had not
    is not, twice over; the third run finishes and equals the source."""
    import os

    _seed(dbs)
    for table, args in (("a_big", ()), ("b_mid", ("--resume",))):
        proc = start_cli("db", "copy", "--jobs", "1", "--no-verify", *args, env=env_for(dbs))
        _wait_for_copy_of(dbs, table)
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        _wait_until_unlocked(dbs)  # the server ends the dead run's sessions as it notices them
    assert _state_exists(dbs)
    _resume_copies_only_the_rest(dbs, tmp_path)
    assert not _state_exists(dbs)
    assert_same_database(dbs)
