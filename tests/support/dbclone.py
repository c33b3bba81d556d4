"""Clone a source database into a target with the stock tools, independently of our own copier:
`pg_dump --no-owner --no-acl SOURCE | psql -v ON_ERROR_STOP=1 TARGET`.

Tests of `db verify` use it to make a known-identical copy. Passwords travel in PGPASSWORD (each
process its own), never in argv.
"""

from __future__ import annotations

import subprocess

from migrate.config import DatabaseURL, redact
from migrate.db.pgtools import find_tool, libpq_target, tool_env


def clone_database(source_url: str, target_url: str, *, timeout: float = 300) -> None:
    """Dump the source (no owners, no privileges) and restore it into the (empty) target.

    Raises RuntimeError with both tools' stderr (redacted) when either fails.
    """
    src, tgt = DatabaseURL(source_url), DatabaseURL(target_url)
    dump = subprocess.Popen(
        [find_tool("pg_dump").path, "--no-owner", "--no-acl", "--dbname", libpq_target(src)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tool_env(src),
    )
    assert dump.stdout is not None
    restore = subprocess.run(
        [find_tool("psql").path, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", libpq_target(tgt)],
        stdin=dump.stdout,
        capture_output=True,
        env=tool_env(tgt),
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
