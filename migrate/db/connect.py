"""Connections to the source and target databases: one place that turns libpq's failures into one
clear line, pins session settings, and shares a snapshot between connections."""

from __future__ import annotations

import functools
import logging

import psycopg
from psycopg import sql

from migrate import __version__
from migrate.config import DatabaseURL, redact
from migrate.errors import ConfigError, ConnectionFailed

log = logging.getLogger(__name__)

# A row's text form depends on these; both sides of a comparison pin the same values.
PINNED_SETTINGS: dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
}

def describe_connect_error(exc: BaseException, url: DatabaseURL, role: str) -> ConnectionFailed:
    """Map a libpq connection failure to a one-line ConnectionFailed naming the side and the fix."""
    text = str(exc)
    where = f"{url.host}:{url.port}"
    env = f"the {role} database URL"
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return ConnectionFailed(
            f"the {role} database at {where} rejected the password for user {url.user!r}",
            hint=f"check the credentials in {env}",
        )
    if "does not exist" in low and "database" in low:
        return ConnectionFailed(
            f"the {role} database {url.dbname!r} does not exist on {where}", hint=f"check the database name in {env}"
        )
    if "could not translate host name" in low or "name or service not known" in low or "nodename" in low:
        return ConnectionFailed(
            f"cannot resolve the {role} database host {url.host!r}", hint=f"check the host in {env} and DNS"
        )
    if "timeout" in low or "timed out" in low:
        return ConnectionFailed(
            f"timed out connecting to the {role} database at {where}",
            hint="check the network path (security groups, VPC routes) and that the server is up",
        )
    if "connection refused" in low:
        return ConnectionFailed(
            f"the {role} database at {where} refused the connection",
            hint="check the host and port, and that the server is running",
        )
    if "ssl" in low or "certificate" in low:
        return ConnectionFailed(
            f"TLS failed connecting to the {role} database at {where}: {first_line(text)}",
            hint="check sslmode/sslrootcert in the URL (RDS: sslmode=verify-full with the RDS CA bundle)",
        )
    return ConnectionFailed(f"cannot connect to the {role} database at {where}: {first_line(text)}")


def database_identity(conn: psycopg.Connection) -> tuple[str, int, str]:
    """Which database a session is in, whatever URL reached it (host aliases, ports, proxies): the
    server's start time, and the database's oid and name. Read-only."""
    # Microseconds since the epoch, not the timestamp's text (that depends on the session's TimeZone).
    row = conn.execute(
        "SELECT (extract(epoch FROM pg_catalog.pg_postmaster_start_time()) * 1000000)::bigint::text, oid::bigint,"
        " datname FROM pg_catalog.pg_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), str(row[2])


def refuse_same_database(source: tuple[str, int, str], target: tuple[str, int, str]) -> None:
    """Source and target must be two databases: a copy into its own source would drop (--clean) or
    write over the data it is about to copy, and a verification of a database against itself proves nothing."""
    if source == target:
        raise ConfigError(f"the source and the target are the same database ({source[2]} on one server);"
                          " nothing was done", hint="check --source and --target")


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in redact(text).splitlines() if ln.strip()]
    return lines[0] if lines else "unknown error"


def connect(
    url: DatabaseURL,
    role: str,
    *,
    autocommit: bool = False,
    pin: bool = False,
    connect_timeout: int = 15,
) -> psycopg.Connection:
    """Open a connection to one side ('source' or 'target'); failures raise ConnectionFailed."""
    try:
        conn = psycopg.connect(
            url.url,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            application_name=f"paas-migrate {__version__} ({role})",
        )
    except psycopg.OperationalError as exc:
        raise describe_connect_error(exc, url, role) from None
    end_work_when_client_goes(conn)
    no_timeouts(conn)
    if pin:
        pin_session(conn)
    return conn


# Role or database defaults an application may have set (a 30 s statement_timeout is common) that
# would cut a long COPY, an index build or a hash, or end the idle snapshot-holding transaction or
# the session holding the copy lock. pg_dump and pg_restore clear the same ones for their sessions.
NO_TIMEOUTS = {"statement_timeout": "0", "idle_in_transaction_session_timeout": "0", "lock_timeout": "0"}


def no_timeouts(conn: psycopg.Connection) -> None:
    """Clear the session's timeouts (NO_TIMEOUTS, and idle_session_timeout on PostgreSQL 14+)."""
    settings = dict(NO_TIMEOUTS)
    if conn.info.server_version >= 140000:
        settings["idle_session_timeout"] = "0"
    calls = ", ".join("pg_catalog.set_config(%s, %s, false)" for _ in settings)
    conn.execute(f"SELECT {calls}", [x for item in settings.items() for x in item])
    if not conn.autocommit:
        conn.commit()


def psql_no_timeouts() -> list[str]:
    """The same, as psql -c arguments (before its transaction)."""
    return [arg for name, value in NO_TIMEOUTS.items() for arg in ("-c", f"SET {name} = {value}")]


def pin_session(conn: psycopg.Connection) -> None:
    """Set the session settings a row's text form depends on (see PINNED_SETTINGS)."""
    for name, value in PINNED_SETTINGS.items():
        conn.execute(sql.SQL("SELECT set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value)))
    if not conn.autocommit:
        conn.commit()


# How often (ms) a backend running one of our statements (an index build, ANALYZE, a hash, DROP
# OWNED) checks that we are still connected (PostgreSQL 14+ on Linux, RDS included). Without it a
# process killed with SIGKILL leaves its statement running to the end (on the target, a rerun would
# have to wait for it: resume.leftover_sessions refuses meanwhile). Set by SQL, not as a startup
# option: RDS Proxy and poolers refuse startup options. pg_restore needs none: on the SIGTERM the
# kernel sends it when we die (pgtools.death_signal_prefix) it cancels its own statement.
CLIENT_CHECK_MS = 1000


def end_work_when_client_goes(conn: psycopg.Connection) -> None:
    """Have the server cancel this session's statement soon after our process dies. Best effort:
    before PostgreSQL 14, or on a server platform without the check (Windows), nothing is set."""
    try:
        with conn.transaction():
            conn.execute(
                "SELECT pg_catalog.set_config('client_connection_check_interval', %s, false)"
                " WHERE pg_catalog.current_setting('server_version_num')::int >= 140000",
                (str(CLIENT_CHECK_MS),),
            )
    except psycopg.Error as exc:  # the block is its own transaction either way: nothing is left open
        log.debug("client_connection_check_interval not set: %s", exc)


def begin_snapshot_reader(conn: psycopg.Connection, snapshot: str | None) -> None:
    """Start a read-only REPEATABLE READ transaction, adopting `snapshot` when given.

    Does not commit: the caller keeps the transaction open for as long as it reads.
    """
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if snapshot:
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))


@functools.lru_cache(maxsize=65536)
def quote_ident(name: str) -> str:
    """`name` quoted as an identifier where needed. Cached: a copy quotes the same names many times per
    table (py-spy: 6% of the Python time of a 1000-table copy)."""
    return sql.Identifier(name).as_string(None)


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"
