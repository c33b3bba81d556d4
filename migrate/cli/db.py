"""`paas-migrate db plan|copy|verify`."""

from __future__ import annotations

import logging
import sys

import click

from migrate.cli.common import (
    clear_reports,
    finish_job,
    output_options,
    plan_and_render,
    write_report,
)
from migrate.config import DatabaseURL, DbCopyConfig, DbJobConfig
from migrate.errors import ConfigError, PreflightError

log = logging.getLogger(__name__)


def _warn_argv_password(value: str | None, env: str) -> None:
    if value:
        try:
            if DatabaseURL.parse(value).password:
                log.warning("a password on the command line is visible to other users of this machine; "
                            "prefer %s", env)
        except ConfigError:
            pass


def confirm_clean(target: str) -> None:
    """--clean without --yes: ask on a terminal (no answer is no); elsewhere --yes is required."""
    if not sys.stdin.isatty():
        raise ConfigError("--clean drops the target's existing objects", hint="add --yes to confirm")
    if not click.confirm(f"Drop every user object in {target} before copying?", default=False, err=True):
        raise PreflightError("not confirmed: nothing was dropped or written")


def db_options(func):
    func = click.option(
        "--jobs", "-j", type=int, default=None, envvar="MIGRATE_DB_JOBS", show_envvar=True,
        help="Parallel connections (default: CPU count).",
    )(func)
    func = click.option(
        "--target", metavar="URL", help="Target database URL [env var: MIGRATE_TARGET_DATABASE_URL]."
    )(func)
    func = click.option(
        "--source", metavar="URL", help="Source database URL [env var: MIGRATE_SOURCE_DATABASE_URL]."
    )(func)
    return output_options(func)


def _job_config(source: str | None, target: str | None, jobs: int | None) -> DbJobConfig:
    _warn_argv_password(source, "MIGRATE_SOURCE_DATABASE_URL")
    _warn_argv_password(target, "MIGRATE_TARGET_DATABASE_URL")
    return DbJobConfig.build(source, target, jobs=jobs)


@click.group(name="db")
def command() -> None:
    """Copy a PostgreSQL database into RDS on one consistent snapshot, and verify it."""


@command.command(name="plan")
@db_options
@click.option("--mode", type=click.Choice(["parallel", "stream"]), default="parallel", envvar="MIGRATE_DB_MODE",
              help="How `db copy` would copy.")
@click.pass_context
def plan_cmd(ctx: click.Context, source: str | None, target: str | None, jobs: int | None, mode: str) -> int:
    """Inventory both databases and print what a copy would do. Read-only."""
    from migrate.db.planner import plan_database

    cfg = DbCopyConfig(db=_job_config(source, target, jobs), mode=mode)
    return plan_and_render(ctx, "db", lambda: plan_database(cfg))


@command.command(name="copy")
@db_options
@click.option("--mode", type=click.Choice(["parallel", "stream"]), default="parallel", envvar="MIGRATE_DB_MODE",
              show_envvar=True, help="parallel: snapshot + parallel COPY; stream: pg_dump | pg_restore.")
@click.option("--clean", is_flag=True, envvar="MIGRATE_DB_CLEAN", help="Drop the target's existing user objects first.")
@click.option("--yes", "-y", is_flag=True, envvar="MIGRATE_YES", help="Do not ask for confirmation (with --clean).")
@click.option("--resume", is_flag=True, envvar="MIGRATE_DB_RESUME",
              help="Continue a failed or interrupted parallel copy: keep what it committed, copy the rest. "
                   "The source must not have changed since.")
@click.option("--no-verify", is_flag=True, envvar="MIGRATE_DB_NO_VERIFY", help="Skip the verification at the end.")
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing.")
@click.option("--report", "report_path", metavar="PATH", envvar="MIGRATE_REPORT",
              help="Write the report as JSON to PATH.")
@click.pass_context
def copy_cmd(
    ctx: click.Context, source: str | None, target: str | None, jobs: int | None, mode: str, clean: bool,
    yes: bool, resume: bool, no_verify: bool, dry_run: bool, report_path: str | None,
) -> int:
    """Copy schema, data, indexes, constraints, sequences and large objects into the target."""
    from migrate.db.copier import copy_database
    from migrate.db.planner import plan_database

    if not dry_run:
        clear_reports(report_path)

    cfg = DbCopyConfig(db=_job_config(source, target, jobs), mode=mode, clean=clean, resume=resume,
                       verify=not no_verify)
    if dry_run:
        return plan_and_render(ctx, "db", lambda: plan_database(cfg))
    if clean and not yes:
        confirm_clean(cfg.db.target.display())
    return finish_job(ctx, lambda reporter: copy_database(cfg, reporter), kind="db-copy",
                      source=cfg.db.source.display(), target=cfg.db.target.display(),
                      writers=[lambda r: write_report(r, report_path)] if report_path else [])


@command.command(name="verify")
@db_options
@click.option("--report", "report_path", metavar="PATH", help="Write the report as JSON to PATH.")
@click.pass_context
def verify_cmd(
    ctx: click.Context, source: str | None, target: str | None, jobs: int | None, report_path: str | None
) -> int:
    """Compare schema, rows, sequences and large objects of both databases. Read-only."""
    from migrate.db.verify import verify_databases

    clear_reports(report_path)

    cfg = _job_config(source, target, jobs)
    return finish_job(ctx, lambda reporter: verify_databases(cfg, reporter), kind="db-verify",
                      source=cfg.source.display(), target=cfg.target.display(),
                      writers=[lambda r: write_report(r, report_path)] if report_path else [])
