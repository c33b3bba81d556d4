"""`db copy`: stream a PostgreSQL database into another (RDS) without a dump on disk.

Parallel mode, in order (each phase's connection and concurrency as in pgcopydb's docs):

1. snapshot   — one source connection opens REPEATABLE READ and exports its snapshot; it stays open
                until the last reader has started, so every reader sees the same data.
2. pre-data   — `pg_dump --section=pre-data --section=post-data --snapshot` (DDL only, kept in a private temp
                dir), then `pg_restore --section=pre-data --no-owner --no-acl` as the target user.
3. data       — N workers. Source side: `psql` runs COPY ... TO STDOUT (FORMAT binary) inside a
                transaction that adopted the snapshot. We relay its pipe in ~128 KiB blocks into
                COPY ... FROM STDIN on the target (psycopg), never decoding a row. Each table or
                range commits on its own; a failure aborts that COPY, so nothing is half-counted.
                Triggers and foreign keys do not exist yet (they are post-data), so no trigger
                fires during the load and the target's rows equal the source's. A table's indexes
                and keys are built, and it is analyzed, as soon as it has landed, by the same N
                workers; a build started while work is queued runs without the server's parallel
                workers (each worker already keeps a target core busy).
4. large objects, 5. sequences (values read in the snapshot).
6. post-data  — `pg_restore --section=post-data -j N`: indexes in parallel, then constraints,
                triggers, materialized-view data. Resumed, it restores only the entries whose object
                is not on the target yet (each entry is one transaction).
7. analyze    — ANALYZE every table in parallel (an unanalysed database is slow the next morning).
8. verify     — `db verify` (unless --no-verify).

Stream mode is `pg_dump -Fc | pg_restore` through a pipe (no file): the simple baseline.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import fcntl
import functools
import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from migrate.config import DatabaseURL, DbCopyConfig, redact
from migrate.db import dbsettings, extensions, layout, resume
from migrate.db import inventory as inv
from migrate.db.connect import begin_snapshot_reader, connect, psql_no_timeouts, qualified, quote_ident
from migrate.db.pgtools import (
    ChildProcesses,
    libpq_target,
    parse_restore_errors,
    summarize,
    tool_env,
)
from migrate.db.planner import DbPlanDetail, plan_with_detail
from migrate.errors import CopyFailed, Interrupted, MigrateError, PreflightError, ToolError
from migrate.model import PhaseResult, Plan, Report
from migrate.progress import Reporter, counted

log = logging.getLogger(__name__)

BLOCK = 128 * 1024
SMALL_COPY_BYTES = 4 * 1024 * 1024  # tables/ranges up to this size are read over a worker's own session
FREEZE_MIN_BYTES = 1024 * 1024  # whole tables above this size are loaded frozen
SEQUENCES_PER_QUERY = 200
AUTOVACUUM_OFF_BYTES = 16 * 1024 * 1024  # tables above this size load with autovacuum paused on them
ANALYZE_BATCH = 50  # small tables analyzed per statement in the analyze phase...
ANALYZE_ALONE_BYTES = 8 * 1024 * 1024  # ...and tables above this size one per statement
PIPE_SIZE = 1024 * 1024
LO_CHUNK = 1024 * 1024
# Large objects are copied in batches: one read of up to LO_BATCH objects' first LO_FIRST_READ bytes,
# one write, one commit (rest of a longer object: LO_CHUNK at a time, in the batch's transaction).
# One object at a time is four round trips and a commit each: 20k small objects, 80 s at a 1 ms round trip.
LO_BATCH = 256
LO_FIRST_READ = 64 * 1024  # a batch holds at most LO_BATCH * LO_FIRST_READ (16 MiB) in memory
GIN_BUILD_MEMORY = "4MB"
STREAM_POLL_SECONDS = 1.0  # how often server-side progress (stream COPY, index builds) is read from the target
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
TOC_ENTRY = re.compile(r"\s*\d+;\s+(\d+)\s+(\d+)\s+(.*)")  # pg_restore -l: "id; catalog oid DESC ..."
PG_CLASS = 1259  # pg_class's oid (fixed in every cluster)
# The target (RDS) has other roles, and not the source's tablespaces: a table in one made pg_restore's
# SET default_tablespace fail, which stopped the copy. Everything lands in the target's default one
# (on RDS every tablespace is on the same storage anyway).
RESTORE_ARGS = ("--no-owner", "--no-acl", "--no-tablespaces")
RESTORE_APP = f"paas-migrate restore {os.getpid()}"  # application_name of our pg_restore sessions


def restore_options(options: str) -> str:
    """PGOPTIONS for pg_restore's sessions: the caller's, plus commits that do not wait for the WAL
    to reach the disk. pg_restore commits every entry of its list on its own (thousands for a
    schema of a few hundred tables), each a disk flush on the server, and on RDS (Multi-AZ: a
    synchronous write to the standby's storage too) each of them milliseconds. The copy ends with
    one synchronous commit (_Copier.make_durable), which makes them all durable."""
    return f"{options} -c synchronous_commit=off".strip()


@dataclass
class CopyUnit:
    """One COPY: a whole table, or one range of a large one."""

    table: inv.TableInfo
    where: str | None = None  # SQL predicate for a range
    part: int = 0
    parts: int = 1

    @property
    def label(self) -> str:
        name = f"{self.table.schema}.{self.table.name}"
        return name if self.parts == 1 else f"{name} [{self.part + 1}/{self.parts}]"

    def source_sql(self, fmt: str) -> str:
        cols = ", ".join(sql.Identifier(c).as_string(None) for c in self.table.columns)
        rel = qualified(self.table.schema, self.table.name)
        if self.table.config_filter is not None:
            # An extension's configuration table: the rows pg_dump would copy (its condition is
            # the extension's own SQL, "WHERE ..." or ""); the extension's script made the rest.
            return f"COPY (SELECT {cols} FROM ONLY {rel} {self.table.config_filter}) TO STDOUT (FORMAT {fmt})"
        if self.where is None:
            return f"COPY {rel} ({cols}) TO STDOUT (FORMAT {fmt})"
        return f"COPY (SELECT {cols} FROM ONLY {rel} WHERE {self.where}) TO STDOUT (FORMAT {fmt})"

    @property
    def whole(self) -> bool:
        return self.parts == 1

    @property
    def freeze(self) -> bool:
        """Loaded frozen (COPY FREEZE, after TRUNCATE in the same transaction): a whole table, big
        enough that setting hint bits on its pages later costs more than the TRUNCATE (new files)."""
        return self.whole and self.table.bytes > FREEZE_MIN_BYTES and self.table.config_filter is None

    @property
    def record_name(self) -> str:
        """The table's name in the resume record: quoted, so that no two tables share it."""
        return qualified(self.table.schema, self.table.name)

    @property
    def key(self) -> str:
        """Names this COPY in the target's resume record: a range's bounds, or the whole table."""
        return f"{self.part + 1}/{self.parts} {self.where or 'all'}"

    @property
    def estimate(self) -> int:
        """Bytes this COPY is expected to carry, for percentages and ETAs: the table's size on disk
        over its ranges. Binary COPY output is close to it, but not equal (no tuple headers or free
        space; TOAST comes back decompressed), so the copy grows the estimate when it is passed."""
        return max(self.table.bytes // self.parts, 1)

    def target_sql(self, fmt: str) -> str:
        cols = ", ".join(sql.Identifier(c).as_string(None) for c in self.table.columns)
        # FREEZE (whole tables only, after TRUNCATE in the same transaction): rows land frozen, so the
        # index builds and ANALYZE that read them next do not rewrite every page to set hint bits.
        freeze = ", FREEZE" if self.freeze else ""
        return f"COPY {qualified(self.table.schema, self.table.name)} ({cols}) FROM STDIN (FORMAT {fmt}{freeze})"


def copy_database(cfg: DbCopyConfig, reporter: Reporter, plan: Plan | None = None) -> Report:
    """Copy the source database into the target as the plan describes, then verify (unless told not to).

    Refuses (PreflightError, nothing written) when the plan has blockers, e.g. a non-empty target
    without --clean. Interrupts end every child process and raise Interrupted. `plan`, if given, is
    not trusted: the preflight runs again right before anything is written (a plan may be stale).
    """
    # The target's copy lock first: the plan reads the resume record, which must not change under us.
    lock = _lock_target(cfg)
    try:
        fresh_plan, detail = plan_with_detail(cfg)
    except BaseException:
        lock.close()
        raise
    blockers = fresh_plan.blockers
    if blockers:
        lock.close()
        raise PreflightError("; ".join(blockers))
    report = Report(kind="db-copy", source=cfg.db.source.display(), target=cfg.db.target.display())
    report.warnings += [w for w in fresh_plan.warnings if w.startswith("--resume")] + detail.report_warnings
    copier = _Copier(cfg, detail, reporter, report, lock)

    def partial(exc: MigrateError) -> MigrateError:
        """The report files of a copy that stopped still say what it completed."""
        report.totals = copier.totals()
        exc.report = report
        return exc

    try:
        copier.run()
    except KeyboardInterrupt:
        copier.abort()
        done = ", ".join(p.name for p in report.phases) or "nothing"
        raise partial(Interrupted(
            f"interrupted during {copier.phase}; completed phases: {done}",
            hint=("the copy is complete: run `db verify` to check it" if copier.phase == "verify"
                  else f"the target is incomplete: {copier.rerun_hint}"),
        )) from None
    except psycopg.Error as exc:  # a server error in a phase that has no message of its own
        copier.abort()
        raise partial(CopyFailed(f"{copier.phase} failed: {_first_line(str(exc))}",
                                 hint=f"fix the cause, then {copier.rerun_hint}")) from None
    except MigrateError as exc:
        copier.abort()
        if copier.phase not in ("preflight", "verify"):
            # Whatever the cause's own advice, say what the rerun should be from where this stopped.
            rerun = f"then {copier.rerun_hint}"
            if exc.hint is None:
                exc.hint = f"fix the cause, {rerun}"
            elif "--resume" not in exc.hint and "--clean" not in exc.hint:
                exc.hint = f"{exc.hint}; {rerun}"
        partial(exc)
        raise
    except BaseException:
        copier.abort()
        raise
    finally:
        copier.cleanup()
    report.totals = copier.totals()
    report.finish()
    return report.settle()


TMP_PREFIX = "paas-migrate-db-"  # + the pid of the run that made it


def _remove_dead_runs_files() -> None:
    """Delete the schema dumps of earlier runs that could not clean up after themselves (killed with
    SIGKILL): temporary directories named for a process that no longer exists. Never another live
    run's (its pid exists), nor anything we may not delete."""
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*"):
        pid = path.name[len(TMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # it exists (another user's): leave it


class _Copier:
    def __init__(self, cfg: DbCopyConfig, detail: DbPlanDetail, reporter: Reporter, report: Report,
                 lock: psycopg.Connection | None = None) -> None:
        self.cfg = cfg
        self.detail = detail
        self.reporter = reporter
        self.report = report
        self.children = ChildProcesses()
        self.phase = "preflight"
        _remove_dead_runs_files()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
        os.chmod(self.tmp, 0o700)
        self._coordinator: psycopg.Connection | None = None
        self._local = threading.local()
        self._conns: list[psycopg.Connection] = []
        self._sources: list[psycopg.Connection] = []  # the workers' source sessions (small tables)
        self._conns_lock = threading.Lock()
        self.rows = 0
        self.bytes = 0
        self.early_built: set[tuple[int, int]] = set()
        self.restored: set[tuple[int, int]] = set()  # post-data entries an interrupted run restored
        self.autovacuum_paused: dict[str, list[str]] = {}  # quoted table -> its reloptions on the source
        self.target_has: set[tuple[int, int]] = set()  # pre-data entries for what the target has (extensions' schemas)
        self._watch: _BuildWatch | None = None  # the data phase's index build and ANALYZE percentages
        self._count_lock = threading.Lock()
        self._data_total = 0  # estimated bytes of the data phase's copies, corrected as they land
        self.analyzed: set[str] = set()  # tables analyzed in the data phase
        # The target's record of what is done (parallel mode): the interrupted run's, when resuming.
        self.state: resume.ResumeState | None = detail.resume if cfg.resume else None
        self.resuming = self.state is not None
        self.recording = self.resuming  # a new record is opened by run() (parallel mode)
        self._lock_conn = lock  # holds the target's copy lock; closed by cleanup()
        self.kept_copies = 0

    @property
    def rerun_hint(self) -> str:
        """What a rerun should be, given the phase that failed or was interrupted: --resume where the
        record allows it (see the preflight's resume checks), else starting again."""
        resumable = self.recording and (
            self.resuming or self.phase in ("data", "large objects", "sequences", "post-data", "analyze"))
        if resumable:
            return ("rerun with --resume to continue (the source must not change meanwhile),"
                    " or start again with --clean --yes")
        return "start again with --clean --yes"

    # ---- orchestration -------------------------------------------------------------------
    def run(self) -> None:
        jobs = self.cfg.db.jobs
        if self.cfg.clean:
            self._phase("clean", 1, self.clean_target)
        if self.cfg.mode == "stream":
            self._phase("dump | restore", 1, self.stream_copy)
        else:
            if self.resuming:
                self.reporter.note("resuming the interrupted copy recorded in the target")
            else:
                self.state = resume.ResumeState()
                self._open_record()
            self._phase("snapshot", 1, self.export_snapshot)
            self._phase("pre-data", 1, self.schema_dump)
            if not self.resuming:
                self._phase("pre-data", 1, self.create_extensions, merge=True)
                self._phase("pre-data", 1, lambda: self.restore_section("pre-data", 1), merge=True)
                self._record(lambda c: resume.mark(c, resume.STEP, "", "pre-data"))
            self.pause_autovacuum()  # put back after the analyze phase, or by abort()
            self._phase("data", jobs, self.copy_data)
            self._close_idle_connections()
            self._phase("large objects", 1, self._guard("copying large objects", self.copy_large_objects))
            self._phase("sequences", 1, self._guard("setting sequences", self.copy_sequences))
            self.release_snapshot()
            self._close_idle_connections()
            self._phase("post-data", jobs, self.post_data)
        self._phase("analyze", jobs, self._guard("analyzing the target", self.analyze))
        self.restore_autovacuum(quick=False)
        self._close_idle_connections()
        if self.state is not None:
            self._record(resume.drop_state)  # the copy is complete: nothing left to resume
        if any(s.role is None for s in self.detail.settings) or self.detail.database_comment is not None:
            self._phase("database settings", 1, self.apply_database_settings)
        self.make_durable()
        if self.cfg.verify:
            from migrate.db.verify import verify_databases

            self.phase = "verify"
            self.reporter.note("verify: comparing source and target")
            started = time.monotonic()
            verification = verify_databases(self.cfg.db, self.reporter, inside_copy=True)
            self.report.children.append(verification)
            self.report.phases.append(
                PhaseResult("verify", time.monotonic() - started, jobs, note=verification.status.value)
            )

    def _guard(self, what: str, fn: Callable[[], PhaseResult]) -> Callable[[], PhaseResult]:
        """Turn a server error inside a phase into one clear CopyFailed line."""

        def wrapped() -> PhaseResult:
            try:
                return fn()
            except psycopg.Error as exc:
                raise CopyFailed(f"{what} failed: {_first_line(str(exc))}",
                                 hint=f"fix the cause, then {self.rerun_hint}") from None

        return wrapped

    def _phase(self, name: str, concurrency: int, fn: Callable[[], object], merge: bool = False) -> None:
        self.phase = name
        if not merge:
            self.reporter.note(f"{name}: starting")
        started = time.monotonic()
        result = fn()
        seconds = time.monotonic() - started
        if merge and self.report.phases and self.report.phases[-1].name == name:
            self.report.phases[-1].seconds += seconds
            return
        phase = PhaseResult(name, seconds, concurrency)
        if isinstance(result, PhaseResult):
            phase = result
            phase.seconds = seconds
        self.report.phases.append(phase)

    def totals(self) -> dict[str, object]:
        return {
            "tables": len(self.detail.source.tables),
            "rows": self.rows,
            "bytes": self.bytes,
            "sequences": len(self.detail.source.sequences),
            "large_objects": self.detail.source.large_objects,
            "mode": self.cfg.mode,
            "jobs": self.cfg.db.jobs,
        }

    def abort(self) -> None:
        self.children.terminate_all()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(Exception):
                c.cancel()
        self.restore_autovacuum(quick=True)  # once our statements (and pg_restore's) are ended

    def cleanup(self) -> None:
        self.release_snapshot()
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                self._lock_conn.close()
        with self._conns_lock:
            conns, self._conns = list(self._conns), []
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _close_idle_connections(self) -> None:
        """Between phases (no other thread works): close the connections the last phase's workers
        left open, and the released snapshot's, keeping this thread's target session and a held
        snapshot. Idle sessions count against connection limits (see migrate.db.capacity)."""
        keep = {id(getattr(self._local, "target", None)), id(self._coordinator)}
        with self._conns_lock:
            idle = [c for c in self._conns if id(c) not in keep and c not in self._sources]
            self._conns = [c for c in self._conns if c not in idle]
        for c in idle:
            with contextlib.suppress(Exception):
                c.close()

    # ---- connections ---------------------------------------------------------------------
    def _source(self) -> psycopg.Connection:
        """This thread's source session, in a read-only REPEATABLE READ transaction that adopted the
        copy's snapshot (while the coordinator holds it: the data phase). Used for small tables."""
        conn = getattr(self._local, "source", None)
        if conn is None or conn.closed:
            conn = connect(self.cfg.db.source, "source")
            with self._conns_lock:
                self._conns.append(conn)
                self._sources.append(conn)
            begin_snapshot_reader(conn, self.snapshot)
            # As pg_dump does: rows row-level security would hide fail the copy, never filtered.
            conn.execute("SET LOCAL row_security = off")
            # Text in the target's encoding (the source converts it), names of objects qualified.
            conn.execute("SELECT pg_catalog.set_config('client_encoding', %s, true),"
                         " pg_catalog.set_config('search_path', '', true)", (self.detail.target_encoding,))
            self._local.source = conn
        return conn

    def _close_source(self) -> None:
        conn = getattr(self._local, "source", None)
        if conn is not None:
            self._local.source = None
            with self._conns_lock:
                if conn in self._sources:
                    self._sources.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    def _target(self) -> psycopg.Connection:
        """This thread's target connection (one per worker)."""
        conn = getattr(self._local, "target", None)
        if conn is None or conn.closed:
            conn = connect(self.cfg.db.target, "target")
            # Durability of each commit does not matter mid-load: a failed load is redone with --clean.
            conn.execute("SET synchronous_commit = off")
            # The encoding the source sends its text in (whatever PGCLIENTENCODING or a role says).
            conn.execute("SELECT pg_catalog.set_config('client_encoding', %s, false)", (self.detail.target_encoding,))
            conn.commit()
            self._local.target = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _open_record(self) -> None:
        try:
            with connect(self.cfg.db.target, "target") as conn:
                resume.create_state(conn)
                conn.commit()
            self.recording = True
        except psycopg.errors.InsufficientPrivilege as exc:
            self.report.warnings.append(
                f"no resume record: the target user may not create schema {resume.SCHEMA}"
                f" ({_first_line(str(exc))}); if this copy fails, rerun it with --clean --yes")
        except psycopg.Error as exc:
            raise CopyFailed(f"could not create the copy's record (schema {resume.SCHEMA}) in the target:"
                             f" {_first_line(str(exc))}",
                             hint=f"drop schema {resume.SCHEMA} if it is left from an earlier attempt, or use"
                                  " --clean --yes") from None

    def _mark(self, conn: psycopg.Connection, kind: str, table: str, name: str) -> None:
        """Record a step in `conn`'s transaction (so it commits with the work it records)."""
        if self.recording:
            resume.mark(conn, kind, table, name)

    def _record(self, fn: Callable[[psycopg.Connection], None]) -> None:
        """One change to the resume record, committed at once (phase boundaries)."""
        if not self.recording:
            return
        conn = self._target()  # this (main) thread's: idle between phases
        try:
            fn(conn)
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            raise CopyFailed(f"could not update the copy's record in the target ({resume.SCHEMA}):"
                             f" {_first_line(str(exc))}") from None

    # ---- phases --------------------------------------------------------------------------
    def clean_target(self) -> None:
        with connect(self.cfg.db.target, "target", autocommit=True) as conn:
            # Everything the target user owns; objects of other roles stay (and are reported).
            row = conn.execute(
                "SELECT obj_description(oid, 'pg_namespace'), has_schema_privilege('public', oid, 'USAGE')"
                " FROM pg_namespace WHERE nspname = 'public'"
            ).fetchone()
            conn.execute("DROP OWNED BY CURRENT_USER CASCADE")
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'public'").fetchone()
            if row is not None and not exists:
                # DROP OWNED took the public schema with it (the user owned it): put it back as it was.
                conn.execute("CREATE SCHEMA public")
                if row[0] is not None:
                    conn.execute(sql.SQL("COMMENT ON SCHEMA public IS {}").format(sql.Literal(row[0])))
                if row[1]:
                    conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
            left = inv.user_relations(conn)
        if left:
            raise CopyFailed(
                f"--clean could not drop {len(left)} relations owned by other roles ({', '.join(left[:5])})",
                hint="drop them as their owner, or use a fresh target database",
            )

    def create_extensions(self, create_schemas: bool = True) -> None:
        """Extensions the source has at another version than the target would install: created at the
        source's version before the schema restore (see migrate.db.extensions). The restore then does
        not create the extensions' schemas that exist on the target (made here, or by its DBA)."""
        if not self.detail.extensions:
            return
        with connect(self.cfg.db.target, "target", autocommit=True) as conn:
            oids, warnings = extensions.create_at_source_versions(conn, self.detail.extensions,
                                                                  create_schemas=create_schemas)
        self.target_has |= {(extensions.PG_NAMESPACE, oid) for oid in oids}
        self.report.warnings += warnings

    def apply_database_settings(self) -> PhaseResult:
        """The source database's own settings and comment, set on the target database once the copy's
        writing is done (they apply to sessions opened afterwards: default_transaction_read_only, say,
        must not apply to the copy's). A setting the target user may not set is a warning naming the
        statements, not a failure."""
        own = [s for s in self.detail.settings if s.role is None]
        comment = self.detail.database_comment
        with connect(self.cfg.db.target, "target", autocommit=True) as conn:
            failed = dbsettings.apply(conn, own, comment)
        if failed:
            self.report.warnings.append(dbsettings.not_applied_warning(failed))
        names = [s.name for s in own] + (["comment"] if comment is not None else [])
        return PhaseResult("database settings", 0.0, 1, items=len(names) - len(failed),
                           note=", ".join(names) + (f"; {len(failed)} not set" if failed else ""))

    def export_snapshot(self) -> None:
        conn = connect(self.cfg.db.source, "source")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL row_security = off")  # errors, never silently filtered reads (see _copy_unit)
        self.snapshot = str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        self._coordinator = conn
        with self._conns_lock:
            self._conns.append(conn)
        log.info("exported source snapshot %s", self.snapshot)

    def pause_autovacuum(self) -> None:
        """Pause autovacuum on the big tables for the load (ALTER TABLE ... SET (autovacuum_enabled =
        false), as their owner). Autovacuum visits a freshly loaded table within a minute; its VACUUM
        takes a lock that an index build or ADD CONSTRAINT on that table then waits for until the
        server cancels the VACUUM (deadlock_timeout: 1 s each), and it spends target CPU on pages
        the load is still writing. restore_autovacuum() puts each table's own setting back (the
        source's: also right after an interrupted run paused them). Best effort: a refusal only
        leaves autovacuum on."""
        coord = self._coordinator
        assert coord is not None
        big = [t for t in self.detail.source.tables
               if t.bytes >= AUTOVACUUM_OFF_BYTES and t.config_filter is None]
        if not big:
            return
        rows = coord.execute("SELECT c.oid::bigint, c.reloptions FROM pg_catalog.pg_class c WHERE c.oid = ANY(%s)",
                             ([t.oid for t in big],)).fetchall()
        own = {int(oid): list(opts or []) for oid, opts in rows}
        rels = {qualified(t.schema, t.name): own.get(t.oid, []) for t in big}
        try:
            conn = self._target()
            with conn.transaction():
                for rel in rels:
                    conn.execute(f"ALTER TABLE ONLY {rel} SET (autovacuum_enabled = false)".encode())
            conn.commit()
            self.autovacuum_paused = rels
            log.info("autovacuum paused on %d tables for the load", len(rels))
        except psycopg.Error as exc:
            log.info("autovacuum not paused (%s)", _first_line(str(exc)))

    def restore_autovacuum(self, *, quick: bool) -> None:
        """Each paused table's storage options as on the source, in its order, one table at a time.
        `quick` (the copy failed or was interrupted): no lock is waited for more than 2 s. What
        cannot be put back is a report warning naming the statements to run."""
        rels, self.autovacuum_paused = self.autovacuum_paused, {}
        if not rels:
            return
        restored: set[str] = set()
        problem = ""
        try:
            with connect(self.cfg.db.target, "target", autocommit=True) as conn:
                conn.execute("SET lock_timeout = '2s'" if quick else "SET lock_timeout = '60s'")
                for rel, options in rels.items():
                    try:
                        with conn.transaction():
                            for stmt in _reloptions_statements(rel, options):
                                conn.execute(stmt.encode())
                        restored.add(rel)
                    except psycopg.Error as exc:
                        problem = problem or _first_line(str(exc))
        except (psycopg.Error, MigrateError, KeyboardInterrupt) as exc:
            problem = problem or _first_line(str(exc)) or "interrupted"
        left = [rel for rel in rels if rel not in restored]
        if left:
            stmts = [stmt for rel in left for stmt in _reloptions_statements(rel, rels[rel])]
            self.report.warnings.append(
                f"autovacuum stays paused on {counted(len(left), 'table')} of the target ({problem});"
                f" to put back the source's settings run: {'; '.join(stmts)}")

    def release_snapshot(self) -> None:
        """End the coordinator's transaction and close the workers' source sessions (the data is read)."""
        conn, self._coordinator = self._coordinator, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                conn.rollback()
        with self._conns_lock:
            sources, self._sources = self._sources, []
        for c in sources:
            with contextlib.suppress(Exception):
                c.close()

    def _run_tool(self, argv: list[str], env: dict[str, str], what: str) -> subprocess.CompletedProcess[bytes]:
        proc = self.children.popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()  # interrupted: it stays known, so abort() ends it (and its queries)
        self.children.forget(proc)
        if self.children.cancelled.is_set():
            raise KeyboardInterrupt
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _dump_args(self) -> list[str]:
        return [
            "--no-owner", "--no-acl", "--no-publications", "--no-subscriptions", "--no-security-labels",
        ]

    def schema_dump(self) -> None:
        tool = self.detail.tools["pg_dump"]
        src = self.cfg.db.source
        # Not --schema-only: that also drops MATERIALIZED VIEW DATA, a post-data entry (the REFRESH).
        # -B: large objects are copied by us, in the snapshot, after the data.
        argv = [tool.path, "--section=pre-data", "--section=post-data", "-B", "-Fc", *self._dump_args(),
                f"--snapshot={self.snapshot}",
                "-f", str(self.tmp / "schema.dump"), "--dbname", libpq_target(src)]
        res = self._run_tool(argv, tool_env(src), "pg_dump")
        if res.returncode != 0:
            raise ToolError(f"pg_dump of the schema failed: {_last_error(res.stderr)}")
        digest = self._schema_digest()
        assert self.state is not None
        if not self.resuming:
            self._record(lambda c: resume.mark(c, resume.META, "", f"schema {digest}"))
        elif self.state.schema_hash() != digest:
            raise CopyFailed("--resume: the source's schema changed since the interrupted copy, so what it copied"
                             " cannot be kept", hint="start again with --clean --yes")

    def _schema_digest(self) -> str:
        """A fingerprint of the source's schema: the SQL its archive restores (definitions, not just
        names)."""
        tool = self.detail.tools["pg_restore"]
        res = self._run_tool([tool.path, "-f", "-", str(self.tmp / "schema.dump")], dict(os.environ),
                             "pg_restore -f -")
        if res.returncode != 0:
            raise ToolError(f"pg_restore could not read the schema archive: {_last_error(res.stderr)}")
        # Not the lines that differ between two dumps of the same schema: \restrict's random key
        # (pg_dump 17.6, 16.10, 15.14 and later), the versions of the server and of pg_dump.
        lines = [ln for ln in res.stdout.splitlines()
                 if not ln.startswith((b"\\restrict ", b"\\unrestrict ", b"-- Dumped from", b"-- Dumped by"))]
        return hashlib.sha256(b"\n".join(lines)).hexdigest()

    def _toc_lines(self, section: str) -> list[str]:
        tool = self.detail.tools["pg_restore"]
        res = self._run_tool([tool.path, "-l", f"--section={section}", str(self.tmp / "schema.dump")],
                             dict(os.environ), "pg_restore -l")
        if res.returncode != 0:
            raise ToolError(f"pg_restore could not read the schema archive: {_last_error(res.stderr)}")
        return res.stdout.decode("utf-8", "replace").splitlines()

    def _toc(self, section: str) -> Path:
        """pg_restore's table of contents for one section, minus what a non-superuser may not do and
        what is already on the target (built early, or restored by an interrupted run)."""
        kept, skipped = [], []
        there = self.early_built | self.restored | self.target_has
        for line in self._toc_lines(section):
            # COMMENT ON EXTENSION needs the extension's owner (on RDS: rdsadmin, never us).
            if re.search(r"\bCOMMENT - EXTENSION\b", line):
                skipped.append(line)
                continue
            m = TOC_ENTRY.match(line)
            if m and (int(m.group(1)), int(m.group(2))) in there:
                continue
            kept.append(line)
        for line in skipped:
            name = re.sub(r"^.*COMMENT - EXTENSION\s+", "", line).split()[0]
            self.report.warnings.append(f"skipped COMMENT ON EXTENSION {name}: only the extension's owner may set it")
        path = self.tmp / f"{section}.list"
        path.write_text("\n".join(kept) + "\n")
        return path

    def post_data(self) -> PhaseResult | None:
        """pg_restore's post-data, recorded as started first and as done at the end. In between, it
        runs its entries in several sessions (-j), each entry one implicit transaction: a resumed
        post-data restores only the entries whose object is not on the target yet."""
        assert self.state is not None
        if self.state.step("post-data"):
            return None
        resumed = self.state.step("post-data started")
        if resumed:
            self.restored = self._restored_by_interrupted_run()
        else:
            self._record(lambda c: resume.mark(c, resume.STEP, "", "post-data started"))
        watch = _BuildWatch(self.cfg.db.target, self.reporter, STREAM_POLL_SECONDS, app=RESTORE_APP)
        ok = False
        try:
            self.restore_section("post-data", self.cfg.db.jobs)
            ok = True
        finally:
            watch.close(ok)
        self._record(lambda c: resume.mark(c, resume.STEP, "", "post-data"))
        if not resumed:
            return None
        return PhaseResult("post-data", 0.0, self.cfg.db.jobs,
                           note=f"{counted(len(self.restored), 'object')} kept from the interrupted run")

    def _restored_by_interrupted_run(self) -> set[tuple[int, int]]:
        """The post-data entries (as keyed in the table of contents) whose index, constraint, trigger,
        rule, policy, statistics object or materialized view data the interrupted run created."""
        asked: dict[tuple[int, int], tuple[int, int, bool]] = {}  # TOC key -> (catalog, oid, data?)
        for line in self._toc_lines("post-data"):
            m = TOC_ENTRY.match(line)
            if not m:
                continue
            key = (int(m.group(1)), int(m.group(2)))
            if key in self.early_built:
                continue  # built in the data phase, not by pg_restore
            if key[0] == 0 and m.group(3).startswith("MATERIALIZED VIEW DATA "):
                asked[key] = (PG_CLASS, key[1], True)  # its REFRESH: done if the view is populated
            elif key[0] and key[1]:
                asked[key] = (key[0], key[1], False)
        with connect(self.cfg.db.source, "source") as src, connect(self.cfg.db.target, "target") as tgt:
            return resume.already_restored(src, tgt, asked)

    def restore_section(self, section: str, jobs: int) -> None:
        tool = self.detail.tools["pg_restore"]
        tgt = self.cfg.db.target
        toc = self._toc(section)
        argv = [tool.path, f"--section={section}", *RESTORE_ARGS, "-L", str(toc), "--dbname", libpq_target(tgt)]
        if jobs > 1:
            argv += ["-j", str(jobs)]
        argv.append(str(self.tmp / "schema.dump"))
        res = self._run_tool(argv, self._restore_env(), "pg_restore")
        self._classify_restore(res, section)

    def _restore_env(self) -> dict[str, str]:
        """pg_restore's environment: named, so that a rerun can tell its sessions from anyone else's
        (see resume.leftover_sessions); its commits not waiting for the disk (below)."""
        env = {**tool_env(self.cfg.db.target), "PGAPPNAME": RESTORE_APP}
        env["PGOPTIONS"] = restore_options(env.get("PGOPTIONS", ""))
        return env

    def make_durable(self) -> None:
        """One synchronous commit on the target once everything is written: WAL is flushed in
        order, so it makes every earlier commit durable too - the copy's sessions and pg_restore's
        commit without waiting for the disk (a load cut short is redone; a copy reported done must
        survive a crash of the target right after)."""
        try:
            with connect(self.cfg.db.target, "target") as conn:
                conn.execute("SET synchronous_commit = on")  # whatever the role or database says
                # A commit waits for the disk only if its transaction wrote WAL: a temporary table's
                # catalog rows (and nothing left behind).
                conn.execute("CREATE TEMPORARY TABLE paas_migrate_flush () ON COMMIT DROP")
                conn.commit()
        except psycopg.Error as exc:
            # The server's WAL writer flushes asynchronous commits within a second on its own.
            self.report.warnings.append(f"could not wait for the target to write the copy to disk"
                                        f" ({_first_line(str(exc))}); it does so within a second on its own")

    def _classify_restore(self, res: subprocess.CompletedProcess[bytes], what: str) -> None:
        text = res.stderr.decode("utf-8", "replace")
        errors = parse_restore_errors(text)
        fatal = [e for e in errors if not e.harmless]
        for e in errors:
            if e.harmless:
                self.report.warnings.append(f"{what}: harmless restore error ({e.reason}): {summarize(e)}")
        if fatal:
            first = summarize(fatal[0])
            more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
            for e in fatal:
                self.report.errors.append(f"{what}: {summarize(e)}")
            raise CopyFailed(f"restoring the {what} schema failed: {first}{more}",
                             hint=f"fix the cause, then {self.rerun_hint}")
        if res.returncode != 0 and not errors:
            raise ToolError(f"pg_restore ({what}) failed: {_last_error(res.stderr)}")

    # ---- data ----------------------------------------------------------------------------
    def plan_units(self) -> list[CopyUnit]:
        units: list[CopyUnit] = []
        source = self.detail.source
        coord = self._coordinator
        assert coord is not None
        longest = inv.longest_chain(source.tables)
        for table in source.tables:
            if not table.columns:
                continue  # a table with no columns has nothing COPY can carry (its row count is checked)
            parts = inv.split_parts(table, longest, self.cfg.split_threshold_bytes, self.cfg.db.jobs,
                                    source.server_version_num)
            if parts > 1 and table.pk_int_column:
                units += _pk_ranges(coord, table, parts, ctid_ranges=source.server_version_num >= 140000)
            elif parts > 1:
                units += _ctid_ranges(coord, table, parts)
            else:
                units.append(CopyUnit(table))
        # The longest chain first (all jobs load it), then most work first (data plus the indexes built
        # when it lands); ranges of one table interleave with others.
        units.sort(key=lambda u: (u.table is longest, (u.table.bytes + u.table.index_bytes) / u.parts),
                   reverse=True)
        return units

    def copy_data(self) -> PhaseResult:
        """COPY every unit and build every table's indexes and keys as soon as all of its units have
        landed, with at most `jobs` of these heavy server tasks at a time (each keeps one target core
        busy). Index builds of landed tables go before further copies: a landed table's builds are the
        end of its chain, and the longest chain (the biggest table and its indexes, split so that all
        jobs load it first) decides the wall time."""
        jobs = self.cfg.db.jobs
        coord = self._coordinator
        assert coord is not None
        # Fully qualified DDL (search_path is empty while it is generated and run), as pg_dump does.
        coord.execute("SELECT pg_catalog.set_config('search_path', '', true)")
        early = inv.early_indexes(coord, self.detail.source.tables)
        self.early_built = {(e.catalog, e.object_oid) for e in early}
        state = self.state
        assert state is not None
        if state.step("data"):  # the interrupted run got past its data phase
            return PhaseResult("data", 0.0, jobs, note="copied by the interrupted run")
        names = {t.oid: qualified(t.schema, t.name) for t in self.detail.source.tables}
        labels = {t.oid: t.qualified for t in self.detail.source.tables}
        by_table: dict[int, list[inv.EarlyIndex]] = {}
        for e in sorted(early, key=lambda e: e.bytes, reverse=True):  # the longest build of a table first
            if not state.has(resume.INDEX, names.get(e.table_oid, ""), e.name):  # built by an interrupted run
                by_table.setdefault(e.table_oid, []).append(e)
        # ANALYZE each table as soon as its data and indexes are in (the analyze phase then has only
        # the rest), unless its statistics depend on something post-data creates.
        late = inv.analyze_after_post_data(coord, self.detail.source.tables, early)
        builds_left: dict[int, int] = {}
        analyses: collections.deque[int] = collections.deque()
        units = self.plan_units()
        if self.resuming:
            units = self._units_left(units)
        remaining: dict[int, int] = {}
        for u in units:
            remaining[u.table.oid] = remaining.get(u.table.oid, 0) + 1
        self._data_total = sum(u.estimate for u in units)
        self.reporter.on_start("data", total=self._data_total, unit="bytes")
        failures: list[str] = []
        hint: str | None = None
        copies = collections.deque(units)
        builds: collections.deque[inv.EarlyIndex] = collections.deque()
        for oid, items in by_table.items():
            if oid not in remaining:  # landed in the interrupted run: only its builds are left
                builds.extend(items)
                builds_left[oid] = len(items)
        # A small table copied whole gets its indexes and ANALYZE in its copy's transaction: for a
        # few rows, separate jobs (a transaction, a commit and a hand-over each) cost more than the work.
        inline: dict[int, tuple[list[inv.EarlyIndex], str | None]] = {
            u.table.oid: (by_table.get(u.table.oid, []), None if u.table.oid in late else labels[u.table.oid])
            for u in units if u.whole and u.estimate <= SMALL_COPY_BYTES}
        pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="copy")
        running: dict[cf.Future[None], tuple[str, CopyUnit | None, int]] = {}
        self._watch = _BuildWatch(self.cfg.db.target, self.reporter, STREAM_POLL_SECONDS)

        def fill() -> None:
            while len(running) < jobs and (builds or analyses or copies):
                if builds:
                    e = builds.popleft()
                    # Every job keeps a target core busy: a build started while work is queued gets no
                    # parallel workers (they only took CPU from the other jobs: the bench copy 5.4-5.7 s
                    # without, 5.7-6.1 s with the server's 2); one started when nothing is queued may use
                    # the idle jobs' share.
                    spare = 0 if builds or analyses or copies else jobs - len(running) - 1
                    running[pool.submit(self.build_index, e, spare)] = (f"index {e.name}", None, e.table_oid)
                elif analyses:
                    oid = analyses.popleft()
                    label = labels[oid]
                    running[pool.submit(self.analyze_table, names[oid], label)] = (f"analyze {label}", None, 0)
                else:
                    u = copies.popleft()
                    running[pool.submit(self.copy_unit, u, *inline.get(u.table.oid, ()))] = (u.label, u, u.table.oid)

        def indexes_done(oid: int) -> None:
            if oid not in late:
                analyses.append(oid)

        finished = False  # the loop ran to its end (not cut short by an interrupt)
        try:
            fill()
            while running:
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    label, unit, oid = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        if isinstance(exc, KeyboardInterrupt):
                            raise exc
                        message = exc.message if isinstance(exc, MigrateError) else _first_line(str(exc))
                        if not failures and isinstance(exc, MigrateError):
                            hint = exc.hint
                        failures.append(f"{label}: {message}")
                        continue
                    if unit is None:
                        if oid:  # an index build finished: the table's last one?
                            builds_left[oid] -= 1
                            if builds_left[oid] == 0:
                                indexes_done(oid)
                        continue
                    remaining[oid] -= 1
                    if oid in inline:
                        continue  # built and analyzed with its copy
                    if remaining[oid] == 0:
                        items = by_table.get(oid, [])
                        builds.extend(items)
                        builds_left[oid] = len(items)
                        if not items:
                            indexes_done(oid)
                if failures:
                    # Fail fast: the copy is unusable anyway, and the rest would only take time.
                    self.children.cancelled.set()
                    copies.clear()
                    builds.clear()
                    analyses.clear()
                    for f in running:
                        f.cancel()
                    self.abort()
                    break
                fill()
            finished = True
        except BaseException:
            # Ctrl-C / SIGTERM (an ECS stop gives 30 s before SIGKILL): end the running copies and
            # builds now. Waiting for the pool first would let each finish (and commit) whole tables.
            self.children.cancelled.set()
            self.abort()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._watch.close()
            self._watch = None
            self.reporter.on_done("data", ok=finished and not failures)
        if failures:
            self.report.errors.extend(failures)
            raise CopyFailed(f"copying table {failures[0]}",
                             hint=hint or f"fix the cause, then {self.rerun_hint}")
        self.finish_indexes(early)
        self._record(lambda c: resume.mark(c, resume.STEP, "", "data"))
        kept = f"; {counted(self.kept_copies, 'copy', 'copies')} kept from the interrupted run" if self.resuming else ""
        return PhaseResult("data", 0.0, jobs, items=len(units), rows=self.rows, bytes=self.bytes,
                           note=f"{counted(len(early), 'index or key', 'indexes/keys')} built as tables landed{kept}")

    def _units_left(self, units: list[CopyUnit]) -> list[CopyUnit]:
        """--resume: the units the interrupted run did not commit. A table whose recorded ranges are not
        this run's (another --jobs changes the split) is emptied and copied again whole."""
        state = self.state
        assert state is not None
        by_table: dict[str, list[CopyUnit]] = {}
        for u in units:
            by_table.setdefault(u.record_name, []).append(u)
        left: list[CopyUnit] = []
        for name, mine in by_table.items():
            done = state.copies(name)
            if not done <= {u.key for u in mine}:
                self.report.warnings.append(
                    f"--resume: {name} was copied in other ranges by the interrupted run (another --jobs?):"
                    " copying it again whole")
                conn = self._target()
                try:
                    conn.execute(f"TRUNCATE ONLY {name}")
                    resume.forget_copies(conn, name)
                    conn.commit()
                except psycopg.Error as exc:
                    conn.rollback()
                    raise CopyFailed(f"--resume: could not empty {name} to copy it again: {_first_line(str(exc))}",
                                     hint="start again with --clean --yes") from None
                done = set()
            self.kept_copies += sum(u.key in done for u in mine)
            left += [u for u in mine if u.key not in done]
        keep = {id(u) for u in left}
        return [u for u in units if id(u) in keep]  # in the planned order

    def finish_indexes(self, early: list[inv.EarlyIndex]) -> None:
        """Attach the built unique indexes as their constraints, CLUSTER ON, REPLICA IDENTITY: catalog
        changes that need locks conflicting with index builds, so they run after all of them."""
        steps = [stmt for e in early for stmt in e.finish]
        assert self.state is not None
        if not steps or self.state.step("keys attached"):
            return
        conn = self._target()
        try:
            conn.execute("SELECT pg_catalog.set_config('search_path', '', true)")
            for stmt in steps:
                conn.execute(stmt.encode())
            self._mark(conn, resume.STEP, "", "keys attached")
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            raise CopyFailed(f"attaching the keys failed: {_first_line(str(exc))}",
                             hint=f"fix the cause, then {self.rerun_hint}") from None

    def _target_job(self, task: str, kind: str, what: str, work: Callable[[psycopg.Connection], object]) -> None:
        """One job of the data phase (`kind`: "index" or "analyze") on this worker's target connection,
        in a transaction of its own, shown as `task` with the percentage the server reports. An
        interrupt cancels it (KeyboardInterrupt); a server error is one line."""
        if self.children.cancelled.is_set():
            raise KeyboardInterrupt
        self.reporter.on_start(task, total=100, unit="%")
        conn = self._target()
        pid = conn.info.backend_pid
        if self._watch is not None:
            self._watch.watch(pid, task, kind)
        ok = False
        try:
            work(conn)
            conn.commit()
            ok = True
        except psycopg.Error as exc:
            conn.rollback()
            if self.children.cancelled.is_set():
                raise KeyboardInterrupt from None
            raise CopyFailed(f"{what} failed: {_first_line(str(exc))}") from None
        finally:
            shown = self._watch.forget(pid) if self._watch is not None else 0.0
            if ok and shown < 100:
                self.reporter.on_progress(task, 100 - shown)
            self.reporter.on_done(task, ok=ok)

    def build_index(self, item: inv.EarlyIndex, workers: int | None = None) -> None:
        self._target_job(f"index {item.name}", "index", f"building {item.name}",
                         functools.partial(self._build_in, item=item, workers=workers))

    def _table_name(self, oid: int) -> str:
        """A table's name in the resume record (quoted: see CopyUnit.record_name)."""
        return next((qualified(t.schema, t.name) for t in self.detail.source.tables if t.oid == oid), "")

    def _grow_data_total(self, delta: int) -> None:
        if delta:
            with self._count_lock:  # totals reach the reporter in the order they were computed
                self._data_total += delta
                self.reporter.on_total("data", self._data_total)

    def copy_unit(self, unit: CopyUnit, builds: Sequence[inv.EarlyIndex] = (), analyze: str | None = None) -> None:
        """COPY one table or range; for a small table copied whole, also build `builds` and ANALYZE
        it (shown as `analyze`) in the same transaction."""
        if unit.table.text_only:  # oids of named objects (regclass...): as names, which the target resolves
            self._copy_unit(unit, "text", builds, analyze)
            return
        try:
            self._copy_unit(unit, "binary", builds, analyze)
        except _BinaryUnsupported:
            log.info("%s: a column type has no binary form; copying as text", unit.label)
            self._copy_unit(unit, "text", builds, analyze)

    def _copy_unit(self, unit: CopyUnit, fmt: str, builds: Sequence[inv.EarlyIndex], analyze: str | None) -> None:
        if self.children.cancelled.is_set():
            raise KeyboardInterrupt
        task = f"copy {unit.label}"
        estimate = unit.estimate
        self.reporter.on_start(task, total=estimate, unit="bytes")
        conn = self._target()
        moved = 0
        ok = False
        # A small table is read over this worker's own source session: starting psql (a process, a
        # login, the snapshot) costs ~35 ms, which dominates for a few rows; a big one through psql,
        # whose pipe we relay in blocks without touching rows (a session hands Python every row).
        small = estimate <= SMALL_COPY_BYTES
        if not small:
            self._close_source()  # at most one source connection per worker: psql's, or the session
        source = self._session_source(unit, fmt) if small else self._psql_source(unit, fmt)
        try:
            with source as blocks, conn.cursor() as cur:
                try:
                    if unit.table.text_only:  # names of objects as the source printed them: qualified
                        cur.execute("SELECT pg_catalog.set_config('search_path', '', true)")
                    if unit.freeze:
                        # The table is empty (a fresh or cleaned target); truncating it in this transaction
                        # is what allows COPY FREEZE. ONLY: inheritance children are copied on their own.
                        cur.execute(f"TRUNCATE ONLY {qualified(unit.table.schema, unit.table.name)}")
                    with cur.copy(unit.target_sql(fmt)) as copy:
                        # Raising inside the COPY block (the source failed) makes psycopg abort it:
                        # nothing is committed.
                        for block in blocks:
                            copy.write(block)
                            moved += len(block)
                            if moved > estimate:  # bigger than its size on disk: keep the bars below 100%
                                grown = moved + moved // 4
                                self._grow_data_total(grown - estimate)
                                estimate = grown
                                self.reporter.on_total(task, estimate)
                            self.reporter.on_progress(task, len(block))
                            self.reporter.on_progress("data", len(block))
                except _SourceFailed as exc:
                    conn.rollback()
                    if self.children.cancelled.is_set():
                        raise KeyboardInterrupt from None
                    if "binary" in exc.stderr and fmt == "binary" and "function" in exc.stderr:
                        raise _BinaryUnsupported from None
                    if "row-level security" in exc.stderr:
                        raise CopyFailed(
                            "row-level security would hide some of its rows from the source user",
                            hint="grant that user BYPASSRLS for the migration (as pg_dump would need)",
                        ) from None
                    raise CopyFailed(f"reading from the source failed: {_last_error(exc.stderr.encode())}") from None
                except psycopg.Error as exc:
                    conn.rollback()
                    if self.children.cancelled.is_set():
                        raise KeyboardInterrupt from None
                    if fmt == "binary" and "no binary input function" in str(exc):  # the target's COPY says first
                        raise _BinaryUnsupported from None
                    raise CopyFailed(f"writing to the target failed: {_first_line(str(exc))}") from None
                rows = max(cur.rowcount, 0)
            inline = self._build_inline(conn, unit, builds, analyze)  # committed with its pipeline
            for t in inline:
                self.reporter.on_done(t, ok=True)
            ok = True
            with self._count_lock:
                self.rows += rows
                self.bytes += moved
                if analyze is not None:
                    self.analyzed.add(qualified(unit.table.schema, unit.table.name))
            self._grow_data_total(moved - estimate)  # landed: its actual size replaces the estimate
        finally:
            if not ok and moved:
                self.reporter.on_progress("data", -moved)  # rolled back (or retried as text): not copied
            self.reporter.on_done(task, ok=ok)

    def _build_inline(self, conn: psycopg.Connection, unit: CopyUnit, builds: Sequence[inv.EarlyIndex],
                      analyze: str | None) -> list[str]:
        """The unit's record and, for a small table, its index builds and ANALYZE, in its copy's
        transaction, each shown as its own task, then the commit. Sent in one pipeline: for a few
        rows, a round trip per statement (eleven for a table with two indexes) costs more than the
        work. Returns the tasks that ran (committed): the caller says them done; a failure rolls
        them back with the copy."""
        steps: list[tuple[str, Callable[[], object]]] = [
            (f"index {e.name}", functools.partial(self._build_in, conn, e)) for e in builds]
        if analyze is not None:
            rel = qualified(unit.table.schema, unit.table.name)
            steps.append((f"analyze {analyze}", functools.partial(conn.execute, f"ANALYZE {rel}")))
        ran: list[str] = []
        try:
            try:
                with conn.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext():
                    self._mark(conn, resume.COPY, unit.record_name, unit.key)
                    for task, work in steps:
                        self.reporter.on_start(task, total=100, unit="%")
                        ran.append(task)
                        work()
                    # In the pipeline, no round trip of its own. An error of any statement above comes
                    # from here (pipelined results are read at the end), the commit's own very rarely.
                    conn.commit()
            except psycopg.Error as exc:
                conn.rollback()
                if self.children.cancelled.is_set():
                    raise KeyboardInterrupt from None
                what = (f"building the indexes and statistics of {unit.label}" if steps
                        else f"committing the copy of {unit.label}")
                raise CopyFailed(f"{what} failed: {_first_line(str(exc))}") from None
            for task in ran:
                self.reporter.on_progress(task, 100)
        except BaseException:
            for task in ran:
                self.reporter.on_done(task, ok=False)
            raise
        return ran

    def _build_in(self, conn: psycopg.Connection, item: inv.EarlyIndex, workers: int | None = None) -> None:
        """One early index build on `conn`, in its current transaction, recorded there; with at most
        `workers` parallel workers (PostgreSQL 11+; None: the server's setting)."""
        if workers is not None and conn.info.server_version >= 110000:
            conn.execute("SELECT pg_catalog.set_config('search_path', '', true),"
                         " pg_catalog.set_config('max_parallel_maintenance_workers', %s, true)", (str(workers),))
        else:
            conn.execute("SELECT pg_catalog.set_config('search_path', '', true)")
        if item.method == "gin":
            # Measured (bench/, PostgreSQL 15, 2 MiB L2 per core): a high-cardinality GIN build
            # (1M jsonb docs) takes 3.0 s with 4MB, 3.4 s with 16MB, 4.4-5.4 s with 64MB and
            # 5.4-6.2 s with 256MB-1GB (a smaller accumulator stays in CPU cache); 4M docs and a
            # low-cardinality int[] index are the same at 4, 16 and 64MB. B-tree builds want the
            # opposite (in-memory sorts), so GIN only.
            conn.execute("SELECT pg_catalog.set_config('maintenance_work_mem', %s, true)", (GIN_BUILD_MEMORY,))
        conn.execute(item.statement.encode())
        if item.method == "gin":  # the rest of an inline transaction (b-tree builds, ANALYZE): the default
            conn.execute("SET LOCAL maintenance_work_mem TO DEFAULT")
        self._mark(conn, resume.INDEX, self._table_name(item.table_oid), item.name)

    @contextlib.contextmanager
    def _psql_source(self, unit: CopyUnit, fmt: str) -> Iterator[Iterator[bytes]]:
        """The unit's COPY TO STDOUT run by psql in the snapshot: its pipe, in blocks. The blocks end
        with _SourceFailed (psql's stderr) when psql failed or the copy was interrupted."""
        psql = self.detail.tools["psql"]
        src = self.cfg.db.source
        argv = [
            psql.path, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", libpq_target(src),
            *psql_no_timeouts(),
            "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            "-c", f"SET TRANSACTION SNAPSHOT '{self.snapshot}'",
            # As pg_dump does: if row-level security would hide rows from this user, fail loudly
            # instead of copying a filtered subset.
            "-c", "SET LOCAL row_security = off",
            "-c", "SET LOCAL search_path = ''",  # names of objects (regclass...) qualified
            "-c", unit.source_sql(fmt),
            "-c", "COMMIT",
        ]
        # Text in the target's encoding (the source converts it, as for pg_restore's client_encoding).
        env = dict(tool_env(src), PGCLIENTENCODING=self.detail.target_encoding)
        proc = self.children.popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        stderr = proc.stderr

        def blocks(fd: int) -> Iterator[bytes]:
            yield from _blocks(fd)
            rc = proc.wait()
            if rc != 0 or self.children.cancelled.is_set():
                raise _SourceFailed(stderr.read().decode("utf-8", "replace"))

        try:
            fd = proc.stdout.fileno()
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
            yield blocks(fd)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self.children.forget(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    @contextlib.contextmanager
    def _session_source(self, unit: CopyUnit, fmt: str) -> Iterator[Iterator[bytes]]:
        """The unit's COPY TO STDOUT over this worker's source session (in the snapshot), in blocks of
        up to BLOCK bytes. A failure ends the blocks with _SourceFailed and closes the session (the
        next unit opens another)."""
        conn = self._source()

        def blocks() -> Generator[bytes, None, None]:
            buf = bytearray()
            try:
                with conn.cursor() as cur, cur.copy(unit.source_sql(fmt)) as copy:
                    for row in copy:
                        buf += row
                        if len(buf) >= BLOCK:
                            yield bytes(buf)
                            buf.clear()
            except psycopg.Error as exc:
                raise _SourceFailed(str(exc)) from None
            if buf:
                yield bytes(buf)
            if self.children.cancelled.is_set():
                raise _SourceFailed("interrupted")

        gen = blocks()
        done = False
        try:
            yield gen
            done = True
        finally:
            if not done or conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                # Stopped part-way (the target failed) or the source failed: the session may be
                # mid-COPY or its transaction aborted. Closing it ends its COPY on the server.
                self._local.source = None
                with contextlib.suppress(Exception):
                    conn.close()
            with contextlib.suppress(Exception):
                gen.close()


    def copy_large_objects(self) -> PhaseResult:
        coord = self._coordinator
        assert coord is not None
        oids = [r[0] for r in coord.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY oid").fetchall()]
        if not oids:
            return PhaseResult("large objects", 0.0, 1, items=0)
        total = 0
        conn = self._target()
        if self.resuming:  # each batch of large objects commits whole: those on the target are done
            there = {r[0] for r in conn.execute("SELECT oid FROM pg_largeobject_metadata").fetchall()}
            conn.commit()
            oids = [o for o in oids if o not in there]
        self.reporter.on_start("large objects", total=len(oids), unit="objects")
        for start in range(0, len(oids), LO_BATCH):
            batch = oids[start:start + LO_BATCH]
            # One byte more than the first read: an object that returns it is longer (read on below).
            firsts = coord.execute(
                "SELECT lo_get(b.oid, 0, %s) FROM unnest(%s::oid[]) WITH ORDINALITY AS b(oid, i) ORDER BY b.i",
                (LO_FIRST_READ + 1, batch), binary=True).fetchall()
            heads = [r[0][:LO_FIRST_READ] for r in firsts]
            conn.execute("SELECT lo_from_bytea(b.oid, b.data) FROM unnest(%s::oid[], %b::bytea[]) AS b(oid, data)",
                         (batch, heads))
            for oid, (first,), head in zip(batch, firsts, heads, strict=True):
                offset = len(head)
                more = len(first) > LO_FIRST_READ
                while more:  # the rest of a longer object, LO_CHUNK at a time until a short read
                    chunk = coord.execute("SELECT lo_get(%s, %s, %s)", (oid, offset, LO_CHUNK),
                                          binary=True).fetchone()[0]  # type: ignore[index]
                    if chunk:
                        conn.execute("SELECT lo_put(%s, %s, %b)", (oid, offset, chunk))
                        offset += len(chunk)
                    more = len(chunk) == LO_CHUNK
                total += offset
            conn.commit()
            self.reporter.on_progress("large objects", len(batch))
        self.reporter.on_done("large objects")
        # Comments on large objects are data-section entries of pg_dump; copy them too.
        comments = coord.execute(
            "SELECT objoid, description FROM pg_description WHERE classoid = 'pg_largeobject'::regclass"
        ).fetchall()
        for oid, text in comments:
            conn.execute(sql.SQL("COMMENT ON LARGE OBJECT {} IS {}").format(sql.Literal(oid), sql.Literal(text)))
        conn.commit()
        return PhaseResult("large objects", 0.0, 1, items=len(oids), bytes=total)

    def copy_sequences(self) -> PhaseResult:
        coord = self._coordinator
        assert coord is not None
        conn = self._target()
        seqs = self.detail.source.sequences
        # A few hundred sequences per round trip each way (a database may have thousands).
        for i in range(0, len(seqs), SEQUENCES_PER_QUERY):
            rels = [qualified(schema, name) for schema, name in seqs[i:i + SEQUENCES_PER_QUERY]]
            values = coord.execute(" UNION ALL ".join(
                f"(SELECT {n}, last_value, is_called FROM {rel})" for n, rel in enumerate(rels))).fetchall()
            values.sort()
            conn.execute(
                "SELECT pg_catalog.setval(u.rel::regclass, u.v, u.called)"
                " FROM unnest(%s::text[], %s::bigint[], %s::boolean[]) AS u(rel, v, called)",
                (rels, [v[1] for v in values], [v[2] for v in values]))
        conn.commit()
        return PhaseResult("sequences", 0.0, 1, items=len(seqs))

    def analyze_table(self, rel: str, label: str) -> None:
        """ANALYZE one table (`rel`, quoted) in the data phase: its data and indexes are in."""
        self._target_job(f"analyze {label}", "analyze", f"analyzing {label}",
                         lambda conn: conn.execute(f"ANALYZE {rel}"))
        with self._count_lock:
            self.analyzed.add(rel)

    def analyze(self) -> PhaseResult:
        """ANALYZE what the data phase did not: partitioned parents, materialized views, and tables
        whose statistics depend on post-data objects (see inv.analyze_after_post_data)."""
        with connect(self.cfg.db.target, "target") as conn:
            # A partitioned parent's ANALYZE samples its whole tree: sized by its partitions (12+).
            size = "pg_catalog.pg_relation_size(c.oid)"
            if conn.info.server_version >= 120000:
                tree = "(SELECT sum(pg_catalog.pg_relation_size(relid)) FROM pg_catalog.pg_partition_tree(c.oid))"
                size = f"CASE WHEN c.relkind = 'p' THEN {tree} ELSE {size} END"
            sized = [
                (qualified(s, n), int(b or 0))
                for s, n, b in conn.execute(
                    f"SELECT n.nspname, c.relname, {size} FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    f" WHERE c.relkind IN ('r', 'p', 'm') AND {inv.USER_SCHEMA} ORDER BY 3 DESC, 1, 2"
                ).fetchall()
                if qualified(s, n) not in self.analyzed
            ]
            # A parent's ANALYZE samples its foreign partitions (or children) through their wrapper: it
            # reads the remote server, from the target, with a user mapping the target may not have
            # (postgres_fdw: "password is required"), and the copy failed at its very end. Left out.
            remote = {qualified(s, n) for s, n in conn.execute(
                "WITH RECURSIVE up(oid) AS ("
                "  SELECT i.inhparent FROM pg_inherits i JOIN pg_class f ON f.oid = i.inhrelid WHERE f.relkind = 'f'"
                "  UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid)"
                " SELECT n.nspname, c.relname FROM up JOIN pg_class c ON c.oid = up.oid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1, 2").fetchall()}
            for rel in sorted(remote):
                self.report.warnings.append(
                    f"{rel} not analyzed: its statistics sample its foreign tables, read from their server;"
                    f" run ANALYZE {rel} on the target once that server is reachable from it")
            sized = [(rel, b) for rel, b in sized if rel not in remote]
            many = ANALYZE_BATCH if conn.info.server_version >= 110000 else 1  # ANALYZE a, b: PostgreSQL 11+
        tables = [rel for rel, _ in sized]
        # Biggest first, one statement per big table; small ones many to a statement (ANALYZE a, b, c:
        # each in a transaction of its own), so thousands of tables are not thousands of round trips.
        batches: list[list[str]] = [[rel] for rel, b in sized if b >= ANALYZE_ALONE_BYTES]
        small = [rel for rel, b in sized if b < ANALYZE_ALONE_BYTES]
        batches += [small[i:i + many] for i in range(0, len(small), many)]

        def one(rels: list[str]) -> None:
            conn = self._target()
            conn.autocommit = True
            try:
                conn.execute(f"ANALYZE {', '.join(rels)}")
            finally:
                conn.autocommit = False

        pool = cf.ThreadPoolExecutor(max_workers=self.cfg.db.jobs, thread_name_prefix="analyze")
        try:
            for fut in [pool.submit(one, b) for b in batches]:
                fut.result()
        except BaseException:
            # Ctrl-C / SIGTERM: drop the queued batches and cancel the running ones now.
            pool.shutdown(wait=False, cancel_futures=True)
            self.abort()
            raise
        pool.shutdown(wait=True)
        early = f"; {len(self.analyzed)} analyzed as they landed" if self.analyzed else ""
        return PhaseResult("analyze", 0.0, self.cfg.db.jobs, items=len(tables),
                           note=f"{counted(len(tables), 'table')}{early}")

    # ---- stream mode ---------------------------------------------------------------------
    def stream_copy(self) -> PhaseResult:
        self.create_extensions(create_schemas=False)  # the stream's own CREATE SCHEMA would fail on them
        dump_tool, restore_tool = self.detail.tools["pg_dump"], self.detail.tools["pg_restore"]
        src, tgt = self.cfg.db.source, self.cfg.db.target
        dump = self.children.popen(
            [dump_tool.path, "-Fc", "-Z0", *self._dump_args(), "--dbname", libpq_target(src)],
            env=tool_env(src), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        # A name of its own, so that its progress can be found on the target (see _RestoreWatch).
        app = RESTORE_APP
        restore = self.children.popen(
            [restore_tool.path, *RESTORE_ARGS, "--dbname", libpq_target(tgt)],
            env=self._restore_env(), stdin=dump.stdout, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert dump.stdout is not None
        dump.stdout.close()  # the restore process holds the pipe now
        dump_err = _collect(dump.stderr)
        restore_err = _collect(restore.stderr)
        watch = _RestoreWatch(tgt, app, self.detail.source.tables, self.reporter, STREAM_POLL_SECONDS)
        with contextlib.closing(watch):
            restore_rc = restore.wait()  # interrupted: both stay known, so abort() ends them (and their queries)
            dump_rc = dump.wait()
            self.children.forget(dump)
            self.children.forget(restore)
            if self.children.cancelled.is_set():
                raise KeyboardInterrupt
            if dump_rc != 0:
                raise ToolError(f"pg_dump failed: {_last_error(dump_err())}")
            res = subprocess.CompletedProcess(["pg_restore"], restore_rc, b"", restore_err())
            self._classify_restore(res, "dump | restore")  # raises on a fatal error; harmless ones are warnings
            watch.complete = True
        with connect(tgt, "target") as conn:
            rows = conn.execute(
                "SELECT coalesce(sum(n_live_tup), 0)::bigint FROM pg_stat_user_tables"
            ).fetchone()[0]  # type: ignore[index]
        return PhaseResult("dump | restore", 0.0, 1, items=len(self.detail.source.tables), rows=int(rows))


class _SourceFailed(Exception):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


class _BinaryUnsupported(Exception):
    pass


def server_percent(kind: str, phase: str, blocks_total: int, blocks_done: int,
                   tuples_total: int, tuples_done: int) -> float:
    """How far an index build or ANALYZE is, in percent, from its pg_stat_progress_* row. Phases
    without a counter (a b-tree's sort) hold the percentage where the counted ones leave it."""
    def part(done: int, total: int) -> float:
        return min(done / total, 1.0) if total > 0 else 0.0

    if kind == "analyze":
        if phase.startswith("acquiring"):
            return 90 * part(blocks_done, blocks_total)
        return {"computing statistics": 90.0, "computing extended statistics": 95.0,
                "finalizing analyze": 99.0}.get(phase, 0.0)
    if phase == "building index: scanning table":  # b-tree: scan, sort, then load the leaves
        return 40 * part(blocks_done, blocks_total)
    if phase.startswith("building index: sorting"):
        return 40.0
    if phase == "building index: loading tuples in tree":
        return 60 + 40 * part(tuples_done, tuples_total)
    if phase == "building index":  # GIN, GiST, hash, BRIN: the scan is the build, then a final flush
        return 95 * part(blocks_done, blocks_total)
    return 0.0


class _BuildWatch:
    """What the target is doing for us, read once a second: percentages of index builds and ANALYZEs
    (pg_stat_progress_create_index, PostgreSQL 12+; pg_stat_progress_analyze, 13+) for the backends
    running the data phase's jobs (`watch`); and, given `app`, every statement of the sessions with
    that application name (pg_restore's post-data) as a task of its own while it runs. Read-only; a
    failure to watch only means less is shown."""

    def __init__(self, target: DatabaseURL, reporter: Reporter, interval: float, app: str | None = None) -> None:
        self._target = target
        self._reporter = reporter
        self._interval = interval
        self._app = app
        self._tasks: dict[int, tuple[str, str, float]] = {}  # backend pid -> (task, kind, percent shown)
        self._statements: dict[int, tuple[object, str]] = {}  # app session pid -> (query_start, task)
        self._lock = threading.Lock()
        self._following = threading.Lock()  # _follow (watcher thread) and close() never overlap
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="build-progress", daemon=True)
        self._thread.start()

    def watch(self, pid: int, task: str, kind: str) -> None:
        with self._lock:
            self._tasks[pid] = (task, kind, 0.0)

    def forget(self, pid: int) -> float:
        """Stop watching; the percentage shown so far. No progress for it is reported after this."""
        with self._lock:
            entry = self._tasks.pop(pid, None)
        return entry[2] if entry else 0.0

    def _run(self) -> None:
        try:
            if self._stop.wait(self._interval):
                return
            with connect(self._target, "target", autocommit=True) as conn:
                version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
                views = []
                if version >= 120000:
                    views.append("SELECT pid, 'index', phase, blocks_total, blocks_done, tuples_total, tuples_done"
                                 " FROM pg_catalog.pg_stat_progress_create_index")
                if version >= 130000:
                    views.append("SELECT pid, 'analyze', phase, sample_blks_total, sample_blks_scanned, 0, 0"
                                 " FROM pg_catalog.pg_stat_progress_analyze")
                query = f"SELECT * FROM ({' UNION ALL '.join(views)}) AS p WHERE pid = ANY(%s)" if views else ""
                while not self._stop.is_set():  # (connecting may outlast close(): then nothing more is shown)
                    if self._app is not None:
                        self._follow(conn.execute(
                            "SELECT pid, query_start, query FROM pg_catalog.pg_stat_activity WHERE state = 'active'"
                            " AND datname = current_database() AND application_name = %s", (self._app,)).fetchall())
                    with self._lock:
                        pids = list(self._tasks)
                    if pids and query:
                        self._show(conn.execute(query, (pids,)).fetchall())
                    if self._stop.wait(self._interval):
                        break
        except (psycopg.Error, MigrateError) as exc:
            log.debug("server-side progress unavailable: %s", exc)

    def _follow(self, rows: list[tuple[object, ...]]) -> None:
        """The app's sessions: a statement that ended is done, a new one starts a task."""
        with self._following:
            if not self._closed:
                self._follow_rows(rows)

    def _follow_rows(self, rows: list[tuple[object, ...]]) -> None:
        now = {int(pid): (started, _statement(str(query))) for pid, started, query in rows}  # type: ignore[call-overload]
        for pid, (started, task) in list(self._statements.items()):
            if now.get(pid, (None, ""))[0] != started:
                del self._statements[pid]
                self._end(pid, task, ok=True)
        for pid, (started, task) in now.items():
            if pid not in self._statements and task not in {t for _, t in self._statements.values()}:
                self._statements[pid] = (started, task)
                index = task.startswith("CREATE INDEX") or task.startswith("CREATE UNIQUE INDEX")
                self._reporter.on_start(task, total=100 if index else None, unit="%" if index else "")
                if index:
                    self.watch(pid, task, "index")

    def _show(self, rows: list[tuple[object, ...]]) -> None:
        for pid, kind, phase, bt, bd, tt, td in rows:
            pct = server_percent(str(kind), str(phase), int(bt or 0), int(bd or 0), int(tt or 0), int(td or 0))  # type: ignore[call-overload]
            with self._lock:  # held while reporting: forget() then means no more progress for the task
                entry = self._tasks.get(int(pid))  # type: ignore[call-overload]
                if entry is None or entry[1] != kind or pct <= entry[2]:
                    continue
                self._tasks[int(pid)] = (entry[0], entry[1], pct)  # type: ignore[call-overload]
                self._reporter.on_progress(entry[0], pct - entry[2])

    def _end(self, pid: int, task: str, ok: bool) -> None:
        """A statement of the app ended (its errors, if any, are pg_restore's to report)."""
        with self._lock:
            entry = self._tasks.pop(pid, None)
        if entry is not None and ok and entry[2] < 100:  # an index build: it ends full
            self._reporter.on_progress(task, 100 - entry[2])
        self._reporter.on_done(task, ok=ok)

    def close(self, ok: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._following:
            self._closed = True
            for pid, (_, task) in self._statements.items():  # still running when the restore ended (or failed)
                self._end(pid, task, ok)
            self._statements.clear()


def _statement(query: str) -> str:
    """A statement as a task name: its first words, without comments and extra whitespace."""
    lines = [ln for ln in query.splitlines() if not ln.lstrip().startswith("--")]
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= 72 else text[:71] + "…"


class _RestoreWatch:
    """Progress of a stream copy, read from the target: pg_restore's COPY (pg_stat_progress_copy,
    PostgreSQL 14+) per table and overall, against the source's table sizes. Read-only; a failure
    to watch only means no progress is shown."""

    def __init__(self, target: DatabaseURL, app: str, tables: list[inv.TableInfo], reporter: Reporter,
                 interval: float) -> None:
        self._target = target
        self._app = app
        self._sizes = {(t.schema, t.name): t.bytes for t in tables}
        self._reporter = reporter
        self._interval = interval
        self._total = max(sum(self._sizes.values()), 1)
        self._shown = 0  # bytes advanced on the overall task
        self.complete = False  # set when the restore succeeded: the bars then end full
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-progress", daemon=True)
        self._reporter.on_start("dump | restore", total=self._total, unit="bytes")
        self._thread.start()

    def _run(self) -> None:
        current: tuple[str, str] | None = None
        seen = estimate = 0
        # Connect after the first interval, not before pg_restore (a role's connection limit).
        if self._stop.wait(self._interval):
            return
        try:
            with connect(self._target, "target", autocommit=True) as conn:
                if int(conn.execute("SHOW server_version_num").fetchone()[0]) < 140000:  # type: ignore[index]
                    self._reporter.note("dump | restore: no progress to show (the target is older than"
                                        " PostgreSQL 14, which has no pg_stat_progress_copy)")
                    return
                while True:
                    row = conn.execute(
                        "SELECT n.nspname, c.relname, p.bytes_processed FROM pg_stat_progress_copy p"
                        " JOIN pg_stat_activity a USING (pid) JOIN pg_class c ON c.oid = p.relid"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE a.datname = current_database() AND a.application_name = %s", (self._app,)
                    ).fetchone()
                    table = (str(row[0]), str(row[1])) if row else None
                    if table != current:
                        if current is not None:
                            self._finish(current, seen, estimate, ok=True)  # pg_restore moved on: it landed
                        current, seen = table, 0
                        if table is not None:
                            estimate = max(self._sizes.get(table, 0), 1)
                            self._reporter.on_start(self._task(table), total=estimate, unit="bytes")
                    if row is not None and current is not None:
                        now = int(row[2] or 0)
                        if now > estimate:
                            grown = now + now // 4
                            self._grow(grown - estimate)
                            estimate = grown
                            self._reporter.on_total(self._task(current), estimate)
                        if now > seen:
                            self._reporter.on_progress(self._task(current), now - seen)
                            self._advance(now - seen)
                            seen = now
                    if self._stop.wait(self._interval):
                        break
        except (psycopg.Error, MigrateError) as exc:
            log.debug("stream copy progress unavailable: %s", exc)
        finally:
            if current is not None:
                self._finish(current, seen, estimate, ok=self.complete)

    @staticmethod
    def _task(table: tuple[str, str]) -> str:
        return f"copy {table[0]}.{table[1]}"

    def _advance(self, n: int) -> None:
        n = min(n, self._total - self._shown)
        if n > 0:
            self._shown += n
            self._reporter.on_progress("dump | restore", n)

    def _grow(self, delta: int) -> None:
        self._total += delta
        self._reporter.on_total("dump | restore", self._total)

    def _finish(self, table: tuple[str, str], seen: int, estimate: int, *, ok: bool) -> None:
        if ok:  # polled, so its last bytes may not have been seen: the table's estimate counts as done
            self._reporter.on_progress(self._task(table), max(estimate - seen, 0))
            self._advance(max(estimate - seen, 0))
        self._reporter.on_done(self._task(table), ok=ok)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)  # a daemon: never holds up an interrupt for long
        if self.complete:  # tables too quick to be seen by a poll, and the index builds after the data
            self._advance(self._total - self._shown)
        self._reporter.on_done("dump | restore", ok=self.complete)


def _lock_target(cfg: DbCopyConfig) -> psycopg.Connection:
    """A session holding the target database's copy lock (closing it releases the lock)."""
    conn = connect(cfg.db.target, "target", autocommit=True)
    try:
        if resume.try_lock(conn):
            return conn
        holder = resume.lock_holder(conn)
    except BaseException:
        conn.close()
        raise
    conn.close()
    who = f" (session pid {holder})" if holder else ""
    raise CopyFailed(
        f"another session holds this target database's copy lock{who}: another paas-migrate copy is writing"
        " into it; nothing was written",
        hint="wait for it to end or stop it; a session left by a stopped task can be ended with"
             " pg_terminate_backend(pid). Connect to the database directly, not through a transaction pooler",
    )


def _blocks(fd: int) -> Iterator[bytes]:
    """Read a pipe in blocks of up to BLOCK bytes, joining small reads (never splitting semantics)."""
    buf = bytearray()
    while True:
        chunk = os.read(fd, BLOCK)
        if not chunk:
            break
        if not buf and len(chunk) >= BLOCK // 2:
            yield chunk
            continue
        buf += chunk
        if len(buf) >= BLOCK // 2:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def _reloptions_statements(rel: str, options: list[str]) -> list[str]:
    """ALTER TABLE statements that set `rel`'s storage options to `options` (the source's, in its
    order: SET appends, and the order is part of the definition pg_dump and verify compare)."""
    pairs = [o.split("=", 1) for o in options]
    names = ", ".join(["autovacuum_enabled", *(quote_ident(k) for k, _ in pairs if k != "autovacuum_enabled")])
    stmts = [f"ALTER TABLE ONLY {rel} RESET ({names})"]
    if pairs:
        values = ", ".join(f"{quote_ident(k)} = {sql.Literal(v).as_string(None)}" for k, v in pairs)
        stmts.append(f"ALTER TABLE ONLY {rel} SET ({values})")
    return stmts


def _collect(stream) -> Callable[[], bytes]:
    """Drain a pipe in a thread (so a chatty child never blocks); call the result for the bytes."""
    chunks: list[bytes] = []

    def reader() -> None:
        if stream is None:
            return
        for line in iter(lambda: stream.read(65536), b""):
            chunks.append(line)

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def result() -> bytes:
        t.join(timeout=30)
        return b"".join(chunks)

    return result


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in redact(text).splitlines() if ln.strip()]
    return lines[0] if lines else "unknown error"


def _last_error(stderr: bytes) -> str:
    lines = [ln.strip() for ln in redact(stderr.decode("utf-8", "replace")).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()]
    return (errors or lines or ["no message"])[0]


def _pk_ranges(coord: psycopg.Connection, table: inv.TableInfo, parts: int, *, ctid_ranges: bool) -> list[CopyUnit]:
    """Ranges of the integer primary key before PostgreSQL 14; page (ctid) ranges where the server has
    them, which read the table more cheaply (inv.key_ranges)."""
    how, bounds = inv.key_ranges(coord, table, parts, ctid_ranges=ctid_ranges)
    if how == "pages":
        return _ctid_ranges(coord, table, parts)
    if how == "whole":
        return [CopyUnit(table)]
    col = sql.Identifier(table.pk_int_column or "").as_string(None)
    preds: list[str] = []
    prev: int | None = None
    for b in bounds:
        preds.append(f"{col} < {b}" if prev is None else f"{col} >= {prev} AND {col} < {b}")
        prev = b
    preds.append(f"{col} >= {prev}" if prev is not None else "true")
    return [CopyUnit(table, p, i, len(preds)) for i, p in enumerate(preds)]


def _ctid_ranges(coord: psycopg.Connection, table: inv.TableInfo, parts: int) -> list[CopyUnit]:
    rel = qualified(table.schema, table.name)
    pages = layout.relation_pages(coord, rel)
    if not pages:
        return [CopyUnit(table)]
    step = max(1, math.ceil(pages / parts))
    bounds = [i * step for i in range(1, parts) if i * step < pages]
    preds: list[str] = []
    prev: int | None = None
    for b in bounds:
        lo = "" if prev is None else f"ctid >= '({prev},0)'::tid AND "
        preds.append(f"{lo}ctid < '({b},0)'::tid")
        prev = b
    # The last range is open-ended: rows the snapshot sees may sit in pages added since.
    preds.append(f"ctid >= '({prev},0)'::tid" if prev is not None else "true")
    return [CopyUnit(table, p, i, len(preds)) for i, p in enumerate(preds)]
