"""`paas-migrate db ...`."""

from __future__ import annotations

import click


@click.group(name="db")
def command() -> None:
    """Copy a PostgreSQL database into RDS on one consistent snapshot, and verify it."""
