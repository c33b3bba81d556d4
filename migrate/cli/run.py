"""`paas-migrate run`: the whole migration of one environment from a plan file."""

from __future__ import annotations

import click

from migrate.errors import ConfigError


@click.command(name="run")
@click.option("--plan", "plan_file", required=True, type=click.Path(dir_okay=False), help="Plan file (TOML).")
@click.option("--env", "env_name", required=True, help="Environment in the plan file, e.g. production.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
def command(plan_file: str, env_name: str, dry_run: bool) -> int:
    """Run the database and bucket migrations of one environment, then verify everything."""
    raise ConfigError("`run` is not implemented yet")
