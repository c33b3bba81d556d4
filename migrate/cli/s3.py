"""`paas-migrate s3 ...`."""

from __future__ import annotations

import click


@click.group(name="s3")
def command() -> None:
    """Copy S3 buckets between accounts with every object checksum-verified, resumably."""
