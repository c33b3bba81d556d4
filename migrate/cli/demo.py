"""`paas-migrate demo`: the whole migration on embedded local services."""

from __future__ import annotations

import click

from migrate.errors import ConfigError


@click.command(name="demo")
@click.option("--keep", is_flag=True, help="Leave the local services running and print how to connect.")
def command(keep: bool) -> int:
    """Run a complete migration against embedded local PostgreSQL and S3 servers."""
    raise ConfigError("`demo` is not implemented yet")
