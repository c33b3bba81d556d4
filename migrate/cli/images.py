"""`paas-migrate images ...`."""

from __future__ import annotations

import click


@click.group(name="images")
def command() -> None:
    """Build the db-migration and s3-migration images and push them to ECR."""
