"""`paas-migrate s3 plan|copy|verify`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from migrate.cli.common import (
    clear_reports,
    finish_job,
    output_options,
    plan_and_render,
    write_report,
)
from migrate.config import S3CopyConfig, S3Side, env_value, redact
from migrate.errors import ConfigError
from migrate.model import Report
from migrate.s3.shard import parse_shard

log = logging.getLogger(__name__)


def side_options(func):
    """--source/--target and each side's endpoint, region and profile (shared by plan, copy, verify)."""
    opts = [
        click.option("--target-profile", metavar="P", help="AWS profile for the target side (else "
                     "MIGRATE_TARGET_AWS_* keys or the default chain, e.g. an ECS task role)."),
        click.option("--source-profile", metavar="P", help="AWS profile for the source side (else "
                     "MIGRATE_SOURCE_AWS_* keys or the default chain)."),
        click.option("--target-region", metavar="R", help="Target region [env var: MIGRATE_TARGET_AWS_REGION]."),
        click.option("--source-region", metavar="R", help="Source region [env var: MIGRATE_SOURCE_AWS_REGION]."),
        click.option("--target-endpoint-url", metavar="U",
                     help="Target S3 endpoint URL [env var: MIGRATE_TARGET_S3_ENDPOINT_URL]."),
        click.option("--source-endpoint-url", metavar="U",
                     help="Source S3 endpoint URL [env var: MIGRATE_SOURCE_S3_ENDPOINT_URL]."),
        click.option("--target", metavar="s3://B[/P]", envvar="MIGRATE_TARGET_S3_URL",
                     help="Target bucket and optional prefix [env var: MIGRATE_TARGET_S3_URL]."),
        click.option("--source", metavar="s3://B[/P]", envvar="MIGRATE_SOURCE_S3_URL",
                     help="Source bucket and optional prefix [env var: MIGRATE_SOURCE_S3_URL]."),
    ]
    for opt in opts:
        func = opt(func)
    return output_options(func)


def _workers_option(func):
    return click.option("--workers", type=int, default=None, envvar="MIGRATE_S3_WORKERS", show_envvar=True,
                        help="Objects copied or compared at once (default 32).")(func)


def _state_dir_option(func):
    return click.option("--state-dir", metavar="DIR", envvar="MIGRATE_STATE_DIR", show_envvar=True,
                        help="Where the resumable manifest lives (default ./.migrate-state).")(func)


def _shard_option(func):
    return click.option("--shard", metavar="I/N", envvar="MIGRATE_S3_SHARD", show_envvar=True,
                        help="Only the keys of shard I of N (1-based; a stable hash of the key). "
                             "Each shard keeps its own manifest.")(func)


def _journal_option(func):
    return click.option("--target-journal/--no-target-journal", default=True, envvar="MIGRATE_S3_TARGET_JOURNAL",
                        show_envvar=True,
                        help="Keep a journal of verified objects in the target (folder _paas-migrate/ under the "
                             "target prefix), so that a rerun with a fresh --state-dir (a new ECS task) skips "
                             "them; kept when the copy completes, deleted by `s3 verify --drop-journal`. "
                             "On by default; off, nothing is read, written or deleted there.")(func)


def build_config(
    source: str | None, target: str | None, *, source_endpoint_url: str | None = None,
    target_endpoint_url: str | None = None, source_region: str | None = None, target_region: str | None = None,
    source_profile: str | None = None, target_profile: str | None = None, workers: int | None = None,
    mode: str | None = None, state_dir: str | None = None, sse: str | None = None,
    sse_kms_key_id: str | None = None, shard: str | None = None, target_journal: bool = True,
) -> S3CopyConfig:
    if not source:
        raise ConfigError("no source bucket", hint="give --source s3://BUCKET[/PREFIX] or set MIGRATE_SOURCE_S3_URL")
    if not target:
        raise ConfigError("no target bucket", hint="give --target s3://BUCKET[/PREFIX] or set MIGRATE_TARGET_S3_URL")
    src = S3Side.build("source", source, endpoint_url=source_endpoint_url, region=source_region,
                       profile=source_profile)
    tgt = S3Side.build("target", target, endpoint_url=target_endpoint_url, region=target_region,
                       profile=target_profile)
    return S3CopyConfig(
        source=src, target=tgt, workers=32 if workers is None else workers, mode=mode or "auto",
        state_dir=Path(state_dir or env_value("MIGRATE_STATE_DIR") or ".migrate-state"),
        sse=sse or None, sse_kms_key_id=sse_kms_key_id or None, shard=parse_shard(shard),
        target_journal=target_journal,
    )


def write_key_report(report: Report, path: str | None) -> None:
    """--report PATH for a copy: one JSON line per key (from the manifest), then a line with the totals."""
    if not path:
        return
    from migrate.s3.manifest import Manifest

    manifest_file = report.totals.get("manifest")
    try:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", encoding="utf-8") as out:
            if manifest_file and Path(manifest_file).exists():
                m = Manifest(manifest_file, create=False)
                try:
                    for row in m.rows():
                        out.write(redact(json.dumps(row, ensure_ascii=False)) + "\n")
                finally:
                    m.close()
            out.write(redact(json.dumps({"report": report.to_dict()}, default=str)) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror}") from None


@click.group(name="s3")
def command() -> None:
    """Copy S3 buckets between accounts with every object checksum-verified, resumably."""


@command.command(name="plan")
@side_options
@_workers_option
@_state_dir_option
@_shard_option
@_journal_option
@click.pass_context
def plan_cmd(ctx: click.Context, source: str | None, target: str | None, source_endpoint_url: str | None,
             target_endpoint_url: str | None, source_region: str | None, target_region: str | None,
             source_profile: str | None, target_profile: str | None, workers: int | None,
             state_dir: str | None, shard: str | None, target_journal: bool) -> int:
    """List both buckets and print what a copy would do: missing on target, differ, match. Read-only."""
    from migrate.s3.planner import plan_copy

    cfg = build_config(source, target, source_endpoint_url=source_endpoint_url,
                       target_endpoint_url=target_endpoint_url, source_region=source_region,
                       target_region=target_region, source_profile=source_profile, target_profile=target_profile,
                       workers=workers, state_dir=state_dir, shard=shard, target_journal=target_journal)
    return plan_and_render(ctx, "s3", lambda: plan_copy(cfg))


@command.command(name="copy")
@side_options
@_workers_option
@click.option("--mode", type=click.Choice(["auto", "server-side", "stream"]), default=None, envvar="MIGRATE_S3_MODE",
              show_envvar=True, help="server-side: CopyObject with the target credential; stream: GET with the "
                                     "source credential, PUT with the target's; auto: server-side when possible.")
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing.")
@click.option("--report", "report_path", metavar="PATH", envvar="MIGRATE_REPORT", show_envvar=True,
              help="Write per-key results as JSON lines to PATH, then a line with the totals.")
@_state_dir_option
@click.option("--sse", type=click.Choice(["AES256", "aws:kms"]), default=None, envvar="MIGRATE_S3_SSE",
              show_envvar=True, help="Server-side encryption of the target objects.")
@click.option("--sse-kms-key-id", metavar="KEY", envvar="MIGRATE_S3_SSE_KMS_KEY_ID", show_envvar=True,
              help="KMS key for --sse aws:kms (default: the bucket's or AWS-managed key).")
@_shard_option
@_journal_option
@click.pass_context
def copy_cmd(ctx: click.Context, source: str | None, target: str | None, source_endpoint_url: str | None,
             target_endpoint_url: str | None, source_region: str | None, target_region: str | None,
             source_profile: str | None, target_profile: str | None, workers: int | None, mode: str | None,
             dry_run: bool, report_path: str | None, state_dir: str | None, sse: str | None,
             sse_kms_key_id: str | None, shard: str | None, target_journal: bool) -> int:
    """Copy every object not yet verified on the target, checksum-checked; rerun to resume."""
    if not dry_run:
        clear_reports(report_path)
    cfg = build_config(source, target, source_endpoint_url=source_endpoint_url,
                       target_endpoint_url=target_endpoint_url, source_region=source_region,
                       target_region=target_region, source_profile=source_profile, target_profile=target_profile,
                       workers=workers, mode=mode, state_dir=state_dir, sse=sse, sse_kms_key_id=sse_kms_key_id,
                       shard=shard, target_journal=target_journal)
    if dry_run:
        from migrate.s3.planner import plan_copy

        return plan_and_render(ctx, "s3", lambda: plan_copy(cfg))
    from migrate.s3.copier import copy_bucket

    return finish_job(ctx, lambda reporter: copy_bucket(cfg, reporter), kind="s3",
                      source=str(cfg.source.location), target=str(cfg.target.location),
                      writers=[lambda r: write_key_report(r, report_path)] if report_path else [])


@command.command(name="verify")
@side_options
@_workers_option
@_shard_option
@click.option("--report", "report_path", metavar="PATH", envvar="MIGRATE_REPORT", show_envvar=True,
              help="Write the report as JSON to PATH.")
@click.option("--drop-journal", is_flag=True, envvar="MIGRATE_S3_DROP_JOURNAL", show_envvar=True,
              help="When everything matches (exit 0), delete the copy journal of this source and target from "
                   "the target (with --shard, that shard's); otherwise delete nothing.")
@_journal_option
@click.pass_context
def verify_cmd(ctx: click.Context, source: str | None, target: str | None, source_endpoint_url: str | None,
               target_endpoint_url: str | None, source_region: str | None, target_region: str | None,
               source_profile: str | None, target_profile: str | None, workers: int | None, shard: str | None,
               report_path: str | None, drop_journal: bool, target_journal: bool) -> int:
    """Re-list both buckets and compare keys, sizes, metadata and checksums. Read-only (but --drop-journal);
    exit 3 on differences."""
    if drop_journal and not target_journal:
        raise ConfigError("--drop-journal with --no-target-journal (or MIGRATE_S3_TARGET_JOURNAL=0): the journal "
                          "is turned off, nothing would be deleted", hint="leave out one of them")
    clear_reports(report_path)
    from migrate.s3.verify import verify_buckets

    cfg = build_config(source, target, source_endpoint_url=source_endpoint_url,
                       target_endpoint_url=target_endpoint_url, source_region=source_region,
                       target_region=target_region, source_profile=source_profile, target_profile=target_profile,
                       workers=workers, shard=shard, target_journal=target_journal)
    return finish_job(ctx, lambda reporter: verify_buckets(cfg, reporter, drop_journal=drop_journal), kind="s3",
                      source=str(cfg.source.location), target=str(cfg.target.location),
                      writers=[lambda r: write_report(r, report_path)] if report_path else [])
