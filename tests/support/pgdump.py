"""An oracle independent of our own verify: pg_dump's view of a database."""

from __future__ import annotations

import re
import subprocess

from migrate.config import DatabaseURL
from migrate.db.pgtools import find_tool, libpq_target, tool_env


def dump(url: str, *args: str) -> str:
    u = DatabaseURL.parse(url)
    tool = find_tool("pg_dump")
    res = subprocess.run(
        [tool.path, "--no-owner", "--no-acl", *args, "--dbname", libpq_target(u)],
        env=tool_env(u), capture_output=True, text=True, check=True,
    )
    # Session-dependent header lines differ between servers; the rest must not.
    lines = [ln for ln in res.stdout.splitlines() if not ln.startswith("-- Dumped")]
    text = "\n".join(lines)
    return re.sub(r"\\restrict \S+|\\unrestrict \S+", "", text)


def schema(url: str) -> str:
    text = dump(url, "--schema-only")
    # COMMENT ON EXTENSION is skipped on purpose (it needs the extension's owner on RDS), and the
    # target's public schema belongs to the RDS-like user, which pg_dump notes in a comment.
    skip = ("COMMENT ON EXTENSION", "-- Name: public; Type: SCHEMA", "-- *not* creating schema")
    lines = [ln for ln in text.splitlines() if not ln.startswith(skip)]
    return "\n".join(ln for ln in lines if ln.strip() not in ("", "--"))


def sorted_data(url: str) -> list[str]:
    """Data-only dump with each COPY block's rows sorted (row order is not part of the data)."""
    text = dump(url, "--data-only", "--inserts", "--rows-per-insert=1")
    return sorted(
        ln for ln in text.splitlines()
        if ln.startswith(("INSERT", "SELECT pg_catalog.")) and "set_config" not in ln
    )
