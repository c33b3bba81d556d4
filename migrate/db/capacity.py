"""How many connections a copy opens on each side at once, and how many each side lets it open.

A copy that needs more than a role's CONNECTION LIMIT, the database's, or the server's free slots
fails part-way ("too many connections for role"), after writing; the plan says so first, with the
largest --jobs that fits.

Counted from migrate.db.copier (parallel mode), at the busiest moment of each side:
  source  the data phase: the coordinator holding the snapshot + one reader per job (a worker's own
          session or its psql's; pg_dump of the schema runs before, beside the coordinator alone);
          the verification after it: its coordinator + one per job (the copy's are closed by then).
  target  the data phase: the copy lock's session + the main thread's (the resume record, large
          objects, sequences) + one per job + the progress watcher; post-data is the same with
          pg_restore -j's sessions in place of the jobs' (its leader disconnects meanwhile); the
          verification: lock + main + its coordinator + one per job.
Stream mode: pg_dump on the source, pg_restore + the progress watcher + the lock on the target;
then ANALYZE (lock + one per job) and the verification (lock + its coordinator + one per job).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


def needed(mode: str, jobs: int, verify: bool) -> tuple[int, int]:
    """(source, target): the most connections the copy holds at once on each side."""
    if mode == "stream":
        source = jobs + 1 if verify else 1
        target = max(3, jobs + 2 if verify else jobs + 1)
        return source, target
    return jobs + 1, jobs + 3


def largest_jobs(mode: str, verify: bool, source_free: int, target_free: int) -> int:
    """The largest --jobs whose connections fit both sides' free slots; 0 if none does."""
    best = 0
    for jobs in range(1, 1025):
        source, target = needed(mode, jobs, verify)
        if source > source_free or target > target_free:
            break
        best = jobs
    return best


@dataclass
class Limits:
    """One side's connection limits for the login role, and what other sessions use of them now."""

    role: str
    superuser: bool
    role_limit: int  # rolconnlimit: -1 for none
    role_in_use: int
    database: str
    database_limit: int  # datconnlimit: -1 for none
    database_in_use: int
    max_connections: int
    reserved: int  # slots this role may not use (superuser_reserved_connections, and others')
    in_use: int  # client connections to the server

    def free(self) -> tuple[int, str]:
        """How many more connections this role may open, and the tightest limit, which says so."""
        limits: list[tuple[int, str]] = []
        if not self.superuser and self.role_limit >= 0:
            limits.append((self.role_limit - self.role_in_use,
                           f"role {self.role} has CONNECTION LIMIT {self.role_limit}"
                           f" ({self.role_in_use} in use by other sessions)"))
        if not self.superuser and self.database_limit >= 0:
            limits.append((self.database_limit - self.database_in_use,
                           f"database {self.database} has CONNECTION LIMIT {self.database_limit}"
                           f" ({self.database_in_use} in use by other sessions)"))
        reserved = f", {self.reserved} reserved for more privileged roles" if self.reserved else ""
        limits.append((self.max_connections - self.reserved - self.in_use,
                       f"the server has max_connections {self.max_connections}"
                       f" ({self.in_use} in use by other sessions{reserved})"))
        free, why = min(limits, key=lambda x: x[0])
        return max(free, 0), why


def read_limits(conn: psycopg.Connection, lock_key: int) -> Limits:
    """The connection limits of the session's login role and database, and how much of them other
    sessions use. Not counted as others: this session (the plan's: it is closed before the copy
    opens any), and the session holding the copy lock `lock_key` (the copy's own, or another copy,
    which the copy waits for). Read-only.

    Sessions of other roles show no backend type to a role without pg_read_all_stats: those with a
    database and a user are counted as client connections."""
    row = conn.execute(
        """
        SELECT r.rolname, r.rolsuper, r.rolconnlimit, d.datname, d.datconnlimit,
               current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
               coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int,
               EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = 'pg_use_reserved_connections'
                       AND pg_catalog.pg_has_role(session_user, g.oid, 'USAGE')),
               coalesce(nullif(current_setting('rds.rds_superuser_reserved_connections', true), ''), '0')::int,
               EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = 'rds_superuser'
                       AND pg_catalog.pg_has_role(session_user, g.oid, 'USAGE'))
        FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
        WHERE r.rolname = session_user AND d.datname = current_database()
        """
    ).fetchone()
    assert row is not None
    role, su, role_limit, database, db_limit, max_conn, su_reserved, reserved, may_use_reserved, rds_reserved, \
        rds_member = row
    counts = conn.execute(
        """
        WITH ours AS (
            SELECT pg_catalog.pg_backend_pid() AS pid
            UNION ALL
            SELECT l.pid FROM pg_catalog.pg_locks l
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
              AND ((l.classid::bigint << 32) | l.objid::bigint) = %(key)s::bigint
        ), client AS (
            SELECT a.usesysid, a.datid FROM pg_catalog.pg_stat_activity a
            WHERE a.pid NOT IN (SELECT pid FROM ours)
              AND (a.backend_type = 'client backend'
                   OR a.backend_type IS NULL AND a.datid IS NOT NULL AND a.usesysid IS NOT NULL)
        )
        SELECT count(*),
               count(*) FILTER (WHERE usesysid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user)),
               count(*) FILTER (WHERE datid = (SELECT oid FROM pg_catalog.pg_database
                                               WHERE datname = current_database()))
        FROM client
        """,
        {"key": lock_key},
    ).fetchone()
    assert counts is not None
    blocked = 0
    if not su:
        blocked = (int(su_reserved) + (0 if may_use_reserved else int(reserved))
                   + (0 if rds_member else int(rds_reserved)))
    return Limits(str(role), bool(su), int(role_limit), int(counts[1]), str(database), int(db_limit), int(counts[2]),
                  int(max_conn), blocked, int(counts[0]))


def check(mode: str, jobs: int, verify: bool, source: Limits, target: Limits) -> tuple[dict[str, str], list[str]]:
    """(facts, blockers): the connections the copy needs on each side against what each allows."""
    need = needed(mode, jobs, verify)
    frees = (source.free(), target.free())
    facts = {f"{side} connections": f"up to {n} at once; {free} may be opened ({why})"
             for side, n, (free, why) in zip(("source", "target"), need, frees, strict=True)}
    blockers = []
    fits = largest_jobs(mode, verify, frees[0][0], frees[1][0])
    for side, n, (free, why) in zip(("source", "target"), need, frees, strict=True):
        if n > free:
            fix = (f"use --jobs {fits} or fewer" if fits else
                   "even --jobs 1 does not fit: end other sessions, or raise the limit")
            blockers.append(
                f"the copy would open up to {n} connections to the {side} at once (--jobs {jobs}), but only {free}"
                f" may be opened: {why}; nothing was written — {fix}")
    return facts, blockers
