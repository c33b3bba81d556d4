"""Fault injection for tests: a real copy against real servers, with one step made to fail."""

from __future__ import annotations

from typing import Any


def fail_copy_of(monkeypatch: Any, table: str) -> None:
    """Make the parallel copy's COPY of `table` fail (every other table is copied for real)."""
    from migrate.db import copier
    from migrate.errors import CopyFailed

    real = copier._Copier._copy_unit

    def failing(self: Any, unit: Any, fmt: str, *inline: Any) -> None:
        if unit.table.name == table:
            raise CopyFailed("injected failure")
        real(self, unit, fmt, *inline)

    monkeypatch.setattr(copier._Copier, "_copy_unit", failing)
