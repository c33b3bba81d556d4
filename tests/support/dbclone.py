"""Clone a source database into a target with the stock tools, independently of our own copier:
`pg_dump --no-owner --no-acl SOURCE | psql -v ON_ERROR_STOP=1 TARGET`.

Tests of `db verify` use it to make a known-identical copy. Passwords travel in PGPASSWORD (each
process its own), never in argv.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from migrate.config import DatabaseURL, redact
from migrate.local.postgres import find_bindir


def pg_tool(name: str) -> str:
    """Path of pg_dump/psql: next to the local server binaries, else on PATH."""
    bindir = find_bindir()
    if bindir is not None and (bindir / name).exists():
        return str(bindir / name)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found (install postgresql-client)")


def _env(url: DatabaseURL) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(url.libpq_env())
    return env


def clone_database(source_url: str, target_url: str, *, timeout: float = 300) -> None:
    """Dump the source (no owners, no privileges) and restore it into the (empty) target.

    Raises RuntimeError with both tools' stderr (redacted) when either fails.
    """
    src, tgt = DatabaseURL(source_url), DatabaseURL(target_url)
    dump = subprocess.Popen(
        [pg_tool("pg_dump"), "--no-owner", "--no-acl", "--dbname", src.without_password()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(src),
    )
    assert dump.stdout is not None
    restore = subprocess.run(
        [pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", tgt.without_password()],
        stdin=dump.stdout,
        capture_output=True,
        env=_env(tgt),
        timeout=timeout,
    )
    dump.stdout.close()
    dump_err = dump.stderr.read() if dump.stderr else b""
    dump_rc = dump.wait(timeout=timeout)
    if dump_rc != 0 or restore.returncode != 0:
        raise RuntimeError(
            redact(
                f"clone failed: pg_dump exit {dump_rc}: {dump_err.decode(errors='replace')[-1500:]}\n"
                f"psql exit {restore.returncode}: {restore.stderr.decode(errors='replace')[-1500:]}"
            )
        )
