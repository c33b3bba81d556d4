"""`paas-migrate run`: the whole migration of one environment from a plan file."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from migrate.cli.common import (
    app,
    clear_reports,
    echo_json,
    finish_job,
    output_options,
    render_plan,
    write_report,
)
from migrate.config import redact
from migrate.errors import ConfigError

if TYPE_CHECKING:
    from migrate.model import Report
    from migrate.orchestrate import EnvConfig

log = logging.getLogger(__name__)


def write_markdown(report: Report, path: str | None, *, title: str) -> None:
    """Write the change-ticket Markdown (redacted) to `path`, if given."""
    if not path:
        return
    from migrate.reportmd import render_markdown

    try:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render_markdown(report, title=title))
    except OSError as exc:
        raise ConfigError(f"cannot write the Markdown report to {path}: {exc.strerror}") from None
    log.info("Markdown report written to %s", path)


def print_dry_run(ctx: click.Context, env: EnvConfig) -> int:
    """Preflight every job and print the plans. Read-only: writes nothing on either side."""
    from migrate.orchestrate import preflight

    pre = preflight(env)
    if app(ctx).json:
        echo_json(pre.plan.to_dict())
    else:
        for _label, child in pre.children():
            render_plan(ctx, child)
            click.echo("")
        n = len(pre.plan.blockers)
        click.echo(redact(f"run plan for environment {env.name}: {len(pre.children())} job(s) planned, "
                          f"{n} blocker{'s' if n != 1 else ''}; dry run, nothing was written"))
        for b in pre.plan.blockers:
            click.echo(redact(f"blocker: {b}"))
    return 0 if pre.plan.ok else 1


def execute(
    ctx: click.Context,
    env: EnvConfig,
    *,
    dry_run: bool = False,
    report_path: str | None = None,
    markdown_path: str | None = None,
    title: str | None = None,
    drop_journals: bool = False,
) -> int:
    """The `run` code path after the plan file is resolved (shared with `demo`): dry run, or
    preflight + copy + verify with live progress, then the reports. Returns the exit code."""
    from migrate.orchestrate import run_migration

    if dry_run:
        return print_dry_run(ctx, env)
    heading = title or f"paas-migrate run: {env.name}"
    writers: list[Callable[[Report], None]] = []
    if report_path:
        writers.append(lambda r: write_report(r, report_path))
    if markdown_path:
        writers.append(lambda r: write_markdown(r, markdown_path, title=heading))
    return finish_job(ctx, lambda reporter: run_migration(env, reporter, drop_journals=drop_journals), kind="run",
                      source=env.describe_source(), target=env.describe_target(), writers=writers)


@click.command(name="run")
@click.option("--plan", "plan_file", required=True, type=click.Path(dir_okay=False), envvar="MIGRATE_PLAN",
              help="Plan file (TOML; see examples/plan.toml).")
@click.option("--env", "env_name", required=True, envvar="MIGRATE_ENV",
              help="Environment in the plan file, e.g. production.")
@click.option("--dry-run", is_flag=True, help="Preflight and print the combined plan; write nothing.")
@click.option("--only", "only_given", type=click.Choice(["db", "s3"]), multiple=True,
              help="Migrate only the database (db) or only the buckets (s3).")
@click.option("--report", "report_path", metavar="PATH", envvar="MIGRATE_REPORT",
              help="Write the final report as JSON to PATH.")
@click.option("--markdown", "markdown_path", metavar="PATH",
              help="Write the final report as Markdown (for a change ticket) to PATH.")
@click.option("--state-dir", metavar="DIR", envvar="MIGRATE_STATE_DIR",
              help="Where bucket copies keep their resumable manifests (default .migrate-state).")
@click.option("--resume", is_flag=True, envvar="MIGRATE_DB_RESUME",
              help="Continue an interrupted database copy (as `db copy --resume`); bucket copies always resume.")
@click.option("--clean", is_flag=True, envvar="MIGRATE_DB_CLEAN",
              help="Drop the target database's existing user objects first (as `db copy --clean`).")
@click.option("--yes", "-y", is_flag=True, envvar="MIGRATE_YES", help="Do not ask for confirmation (with --clean).")
@click.option("--drop-journal", is_flag=True, envvar="MIGRATE_S3_DROP_JOURNAL", show_envvar=True,
              help="The final run of the cutover: once everything is verified, delete the bucket copies'"
                   " journals from their targets (a rerun in a new task would copy again what they record).")
@output_options
@click.pass_context
def command(
    ctx: click.Context, plan_file: str, env_name: str, dry_run: bool, only_given: tuple[str, ...],
    report_path: str | None, markdown_path: str | None, state_dir: str | None, resume: bool, clean: bool,
    yes: bool, drop_journal: bool,
) -> int:
    """Run the database and bucket migrations of one environment, then verify everything.

    Preflights every job first (connectivity, credentials, versions, extensions, target
    emptiness, bucket access) and stops before writing anything if one has a blocker. Secret
    references in the plan file (env:, secretsmanager:, ssm:, vcap:) are resolved now and
    never printed.
    """
    from migrate.planfile import load_environment

    if not dry_run:
        clear_reports(report_path, markdown_path)
    if len(set(only_given)) > 1:
        raise ConfigError("--only takes one of db or s3", hint="leave it out to migrate both")
    only = only_given[0] if only_given else None

    environ: dict[str, Any] = dict(os.environ)
    env = load_environment(plan_file, env_name, environ=environ, state_dir=state_dir, only=only, resume=resume,
                           clean=clean)
    if clean and not yes and not dry_run and env.db is not None:
        from migrate.cli.db import confirm_clean

        confirm_clean(env.db.db.target.display())
    return execute(ctx, env, dry_run=dry_run, report_path=report_path, markdown_path=markdown_path,
                   title=f"paas-migrate run: {env_name}", drop_journals=drop_journal)
