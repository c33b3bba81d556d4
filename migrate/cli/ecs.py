"""`paas-migrate ecs ...`."""

from __future__ import annotations

import click


@click.group(name="ecs")
def command() -> None:
    """Run the migration images as ECS tasks, follow their logs, return their exit code."""
