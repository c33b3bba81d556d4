"""The PostgreSQL client programs we drive (pg_dump, pg_restore, psql): finding them, running them
with the password in the environment (never argv), killing them on interrupt, and classifying
pg_restore's errors as harmless or fatal."""

from __future__ import annotations

import contextlib
import functools
import glob
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from migrate.config import DatabaseURL, redact
from migrate.errors import ToolError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PgTool:
    name: str
    path: str
    version: str  # e.g. "16.4"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def _version_of(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    return f"{m.group(1)}.{m.group(2) or 0}" if m else None


def find_tool(name: str, *, min_major: int = 0) -> PgTool:
    """The newest `name` among $MIGRATE_PG_BINDIR, /usr/lib/postgresql/*/bin and PATH.

    Raises ToolError when none exists, or when the newest is older than `min_major`
    (pg_dump must not be older than the source server)."""
    candidates: list[str] = []
    if os.environ.get("MIGRATE_PG_BINDIR"):
        candidates.append(os.path.join(os.environ["MIGRATE_PG_BINDIR"], name))
    candidates += glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates += glob.glob(f"/usr/pgsql-*/bin/{name}")
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    found: list[PgTool] = []
    for c in dict.fromkeys(candidates):
        if os.access(c, os.X_OK):
            v = _version_of(c)
            if v:
                found.append(PgTool(name, c, v))
    if not found:
        raise ToolError(
            f"{name} not found",
            hint="install the PostgreSQL client tools (apt-get install postgresql-client) or set MIGRATE_PG_BINDIR",
        )
    best = max(found, key=lambda t: tuple(int(x) for x in t.version.split(".")))
    check_major(best, min_major)
    return best


def check_major(tool: PgTool, min_major: int) -> None:
    """Raises ToolError when `tool` is older than `min_major` (pg_dump must not be older than the source server)."""
    if tool.major < min_major:
        raise ToolError(
            f"{tool.name} {tool.version} is older than the source server ({min_major})",
            hint=f"install postgresql-client-{min_major} or newer, or set MIGRATE_PG_BINDIR to its bin directory",
        )


def libpq_target(url: DatabaseURL) -> str:
    """The connection string to hand a libpq program: the URL without any password in it."""
    clean = url.without_password()
    parts = urlsplit(clean)
    if parts.query:
        # The query as given, minus password=: libpq decodes %XX but not '+', so nothing is re-encoded.
        query = "&".join(t for t in parts.query.split("&") if _query_key(t) != "password")
        clean = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return clean


def _query_key(token: str) -> str:
    return unquote(token.split("=", 1)[0]).lower()


def tool_env(url: DatabaseURL) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_") and k != "PGPASSWORD"}
    env.update(url.libpq_env())
    if url.password is None:
        # A password in the URL's query (?password=) must still reach libpq, by the environment.
        for token in urlsplit(url.url).query.split("&"):
            if _query_key(token) == "password" and "=" in token:
                env["PGPASSWORD"] = unquote(token.split("=", 1)[1])  # as libpq reads it: '+' is a '+'
    env.setdefault("PGCONNECT_TIMEOUT", "15")
    return env


@functools.cache
def death_signal_prefix() -> tuple[str, ...]:
    """A command prefix that has the kernel send the child SIGTERM when the thread that started it
    ends (Linux PR_SET_PDEATHSIG, kept across exec): util-linux's setpriv. Empty where there is none.

    Every child is started and waited for by one thread, which outlives it; so the signal comes only
    when this process dies without ending its children itself (ChildProcesses.terminate_all).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    prefix = (setpriv, "--pdeathsig", "TERM", "--")
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return prefix if ok else ()


class ChildProcesses:
    """Every client program we start, so that an interrupt can end them all (no orphans)."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self.cancelled = threading.Event()

    def popen(self, argv: list[str], *, env: dict[str, str], **kw) -> subprocess.Popen[bytes]:
        if self.cancelled.is_set():
            raise KeyboardInterrupt
        log.debug("running %s", redact(" ".join(argv)))
        # Own session: a terminal's Ctrl-C reaches us, and we decide how children end. Should we be
        # killed outright (SIGKILL, the OOM killer), the kernel sends each child SIGTERM.
        proc = subprocess.Popen([*death_signal_prefix(), *argv], env=env, start_new_session=True, **kw)
        with self._lock:
            self._procs.add(proc)
        return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def terminate_all(self, grace: float = 5.0) -> None:
        self.cancelled.set()
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        with self._lock:
            self._procs.clear()


# Errors a non-superuser restore on RDS produces that do not affect the copied data or schema.
HARMLESS_PATTERNS: list[tuple[str, str]] = [
    (r"must be owner of extension", "extension comments/ownership need the extension's owner (RDS: rdsadmin)"),
    (r"COMMENT ON EXTENSION", "comment on an extension: needs the extension's owner"),
    (r'schema "public" already exists', "the target already has the public schema"),
    (r"extension \"plpgsql\" already exists", "plpgsql is installed in every database"),
    (r"must be owner of schema public", "the public schema belongs to another role on the target"),
    (r"permission denied to (?:set parameter|change default privileges)", "a setting reserved to superusers"),
    # A user mapping names a role (and holds its remote password): like an ACL it is role-specific, and
    # the target (RDS) has other roles. Stopping the copy for it left no way on but creating the source's
    # roles on the target. The foreign server and tables are still copied (`db verify` lists the mapping).
    (r'(?s)role "[^"]*" does not exist.*\nCREATE USER MAPPING ',
     "a user mapping for a role the target does not have: create it for the target's role, with its password"),
]


@dataclass
class RestoreError:
    message: str
    command: str
    harmless: bool
    reason: str = ""


def parse_restore_errors(stderr: str) -> list[RestoreError]:
    """Split pg_restore's stderr into errors (each with the SQL that failed) and classify them."""
    errors: list[RestoreError] = []
    current: RestoreError | None = None
    for raw in stderr.splitlines():
        line = raw.rstrip()
        m = re.match(r"pg_restore: error: (.*)", line)
        if m and "errors ignored on restore" not in line:
            if current:
                errors.append(current)
            current = RestoreError(message=m.group(1), command="", harmless=False)
            continue
        if current is None:
            continue
        cm = re.match(r"Command was: (.*)", line)
        if cm:
            current.command = cm.group(1)
        elif line.startswith("pg_restore:"):
            errors.append(current)
            current = None
        elif current.command:
            current.command += "\n" + line
        else:
            current.message += " " + line.strip()
    if current:
        errors.append(current)
    for err in errors:
        text = f"{err.message}\n{err.command}"
        for pattern, reason in HARMLESS_PATTERNS:
            if re.search(pattern, text):
                err.harmless, err.reason = True, reason
                break
    return errors


def summarize(err: RestoreError) -> str:
    msg = re.sub(r"^could not execute query: ", "", err.message)
    cmd = err.command.splitlines()[0] if err.command else ""
    return redact(f"{msg.strip()}" + (f" [{cmd[:120]}]" if cmd else ""))
