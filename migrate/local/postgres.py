"""Throwaway PostgreSQL clusters started from the local server binaries.

Used by `paas-migrate demo`, the test suite and the benchmarks. When this process runs as root,
initdb/pg_ctl run as the `postgres` OS user (initdb refuses root) on directories it owns.
Clusters listen on a free 127.0.0.1 port with password (scram) authentication and fast, unsafe
settings (fsync off): they are for throwaway data only.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from migrate.errors import ToolError

log = logging.getLogger(__name__)

SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """Directory holding initdb/pg_ctl/postgres: $MIGRATE_PG_BINDIR, pg_config --bindir, PATH, or
    the newest /usr/lib/postgresql/N/bin."""
    candidates: list[Path] = []
    if os.environ.get("MIGRATE_PG_BINDIR"):
        candidates.append(Path(os.environ["MIGRATE_PG_BINDIR"]))
    for pattern in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        candidates.append(Path(pattern))
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists() and (c / "postgres").exists():
            return c
    return None


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demote_to(user: str):
    pw = pwd.getpwnam(user)

    def _preexec() -> None:
        os.setgid(pw.pw_gid)
        os.initgroups(user, pw.pw_gid)
        os.setuid(pw.pw_uid)

    return _preexec, pw


class LocalPostgres:
    """One throwaway cluster. `start()` it, connect with `url()`, `stop()` it (or use `with`)."""

    def __init__(
        self,
        name: str,
        *,
        base_dir: str | Path | None = None,
        bindir: Path | None = None,
        password: str = "local-superuser-pw",
        port: int | None = None,
        durable: bool = False,
    ) -> None:
        self.name = name
        self.durable = durable  # fsync, synchronous commits and full-page writes on, as on a real server
        found = bindir or find_bindir()
        if found is None:
            raise ToolError(
                "no PostgreSQL server binaries found (initdb, pg_ctl, postgres)",
                hint="install them, e.g. apt-get install postgresql, or set MIGRATE_PG_BINDIR",
            )
        self.bindir: Path = found
        self.password = password
        self.port = port or free_port()
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=f"paas-migrate-{name}-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "postgres.log"
        self._preexec = None
        self._owner_uid: int | None = None
        if os.geteuid() == 0:
            try:
                self._preexec, pw = _demote_to("postgres")
            except KeyError:
                raise ToolError(
                    "running as root but there is no 'postgres' OS user to run the server as",
                    hint="create one (useradd postgres) or run as a normal user",
                ) from None
            self._owner_uid, self._owner_gid = pw.pw_uid, pw.pw_gid
        self.started = False

    @property
    def version(self) -> str:
        out = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, preexec_fn=self._preexec, capture_output=True, text=True, **kw)

    def start(self) -> LocalPostgres:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._owner_uid is not None:
            os.chmod(self.base_dir, 0o755)
            for p in (self.base_dir, self.socket_dir):
                os.chown(p, self._owner_uid, self._owner_gid)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._owner_uid is not None:
            os.chown(pwfile, self._owner_uid, self._owner_gid)
        os.chmod(pwfile, 0o600)
        if not (self.data_dir / "PG_VERSION").exists():
            res = self._run(
                [
                    str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                    "--pwfile", str(pwfile), "--auth-host=scram-sha-256", "--auth-local=trust",
                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
                ]
            )
            if res.returncode != 0:
                res = self._run(
                    [
                        str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                        "--pwfile", str(pwfile), "--auth-host=scram-sha-256", "--auth-local=trust",
                        "-E", "UTF8", "--locale=C", "--no-sync",
                    ]
                )
            if res.returncode != 0:
                raise ToolError(f"initdb failed for the {self.name} cluster: {res.stderr.strip()[-500:]}")
        pwfile.unlink(missing_ok=True)
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir}"
            + ("" if self.durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            + " -c max_connections=200"
            " -c shared_buffers=128MB -c max_wal_size=2GB -c checkpoint_timeout=30min"
            " -c maintenance_work_mem=256MB -c log_min_messages=warning"
        )
        res = self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
             "-o", opts, "-w", "-t", "60", "start"]
        )
        if res.returncode != 0:
            tail = self.log_file.read_text()[-800:] if self.log_file.exists() else res.stderr
            raise ToolError(f"the {self.name} PostgreSQL cluster did not start: {tail.strip()}")
        self.started = True
        self._wait_ready()
        log.info("started %s cluster on 127.0.0.1:%s (%s)", self.name, self.port, self.data_dir)
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=3):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, *, remove: bool = True) -> None:
        if self.started:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"])
            self.started = False
        if remove and self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        pw = self.password if password is None and user == SUPERUSER else password
        auth = f"{user}:{pw}@" if pw else f"{user}@"
        return f"postgresql://{auth}127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_role(self, name: str, password: str, *, createdb: bool = False) -> None:
        """A login role without superuser, like the master user of an RDS instance."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {} NOSUPERUSER" + (" CREATEDB" if createdb else "")).format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )

    def create_database(self, name: str, *, owner: str | None = None, template: str | None = None) -> str:
        import psycopg
        from psycopg import sql

        q = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            q += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        if template:
            q += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(q)
            if owner:
                # PG 15 revoked CREATE on public from PUBLIC; an RDS master user owns its schema.
                pass
        if owner:
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)))
        return name

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def local_clusters(*names: str) -> Iterator[list[LocalPostgres]]:
    """Start several clusters; stop them all on exit, even after a failure."""
    started: list[LocalPostgres] = []
    try:
        for n in names:
            started.append(LocalPostgres(n).start())
        yield started
    finally:
        for c in started:
            c.stop()
