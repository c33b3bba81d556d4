"""The PostgreSQL client programs running on this machine, read from /proc (for tests that check
that a command leaves none behind)."""

from __future__ import annotations

from pathlib import Path

CLIENT_PROGRAMS = ("pg_dump", "pg_restore", "psql")


def client_programs() -> list[tuple[int, str, str]]:
    """(pid, program name, command line) of every running pg_dump, pg_restore and psql, whoever started it
    (an orphan is no longer our child). Their arguments may name our temporary directory or a port."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = Path(argv[0].decode(errors="replace")).name if argv else ""
        if name in CLIENT_PROGRAMS:
            found.append((int(entry.name), name, b" ".join(argv).decode(errors="replace")))
    return found


def client_command_lines() -> list[str]:
    return [cmd for _, _, cmd in client_programs()]
