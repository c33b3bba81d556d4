"""Shared pieces of the Click layer: the context object, common options, rendering."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from migrate.config import redact
from migrate.errors import ConfigError, MigrateError
from migrate.logs import setup_logging
from migrate.model import Plan, Report, Status
from migrate.progress import Reporter, choose_reporter, human_bytes, plain_text

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


@dataclass
class AppContext:
    verbose: int = 0
    json: bool = False


def app(ctx: click.Context) -> AppContext:
    obj = ctx.find_object(AppContext)
    if obj is None:
        obj = ctx.ensure_object(AppContext)
    return obj


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        app(ctx).json = True
    return value


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    if value:
        a = app(ctx)
        a.verbose = max(a.verbose, value)
        setup_logging(a.verbose)
    return value


def output_options(func: F) -> F:
    """--json and -v also after the subcommand (`paas-migrate db plan --json`)."""
    func = click.option(
        "--json", "as_json", is_flag=True, expose_value=False, callback=_set_json,
        help="Machine-readable JSON on stdout.",
    )(func)
    func = click.option(
        "-v", "--verbose", count=True, expose_value=False, callback=_set_verbose,
        help="More detail on stderr; tracebacks on errors.",
    )(func)
    return func


def reporter_for(ctx: click.Context) -> Reporter:
    return choose_reporter(quiet=os.environ.get("MIGRATE_NO_PROGRESS") == "1")


def run_job(ctx: click.Context, job: Callable[[Reporter], Report]) -> Report:
    """Run an engine with the reporter this invocation wants; the reporter is closed whatever happens."""
    reporter = reporter_for(ctx)
    try:
        return job(reporter)
    finally:
        reporter.close()


def run_reported(ctx: click.Context, job: Callable[[Reporter], Report], *, kind: str, source: str, target: str,
                 writers: list[Callable[[Report], None]]) -> Report:
    """run_job, and if the job fails or is interrupted, the report files are still written (and with
    --json the report is printed): with what it completed (if the engine said), its status and the
    error. Never a stale report of an earlier run. The error itself is then said by the CLI's boundary."""
    try:
        return run_job(ctx, job)
    except BaseException as exc:
        want_json = app(ctx).json
        if writers or want_json:
            report = Report.stopped_by(exc, kind=kind, source=source, target=target)
            if want_json:
                echo_json(report.to_dict())
            for write in writers:
                try:
                    write(report)
                except MigrateError as write_error:  # the job's own error is the one to show
                    log.error("%s", write_error)
        raise


def finish_job(ctx: click.Context, job: Callable[[Reporter], Report], *, kind: str, source: str, target: str,
               writers: list[Callable[[Report], None]]) -> int:
    """A command's job from start to exit code: run it (the report files are written whether it
    succeeds, fails or is interrupted), show its report, say why on stderr if it did not succeed."""
    report = run_reported(ctx, job, kind=kind, source=source, target=target, writers=writers)
    for write in writers:
        write(report)
    render_report(ctx, report)
    say_outcome(report)
    return int(report.status.exit_code())


_json_printed = False  # whether this invocation has printed its JSON object (see cli.main)


def echo_json(data: Any) -> None:
    global _json_printed
    _json_printed = True
    click.echo(redact(json.dumps(data, indent=2, sort_keys=False, default=str)))


def json_printed(reset: bool = False) -> bool:
    """Whether echo_json has printed this invocation's object; `reset` starts a new invocation."""
    global _json_printed
    printed = _json_printed
    if reset:
        _json_printed = False
    return printed


def clear_reports(*paths: str | None) -> None:
    """Before a job: check that its report files can be written (not found out after the work), and
    remove them, so that if it stops before writing them no earlier run's report passes for this one's."""
    for path in paths:
        if path:
            p = Path(path)
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("")
                p.unlink()
            except OSError as exc:
                raise ConfigError(f"cannot write the report to {path}: {exc.strerror}") from None


def write_report(report: Report, path: str | None) -> None:
    if not path:
        return
    try:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(redact(json.dumps(report.to_dict(), indent=2, default=str)) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror}") from None
    log.info("report written to %s", path)


def _console():
    from rich.console import Console

    # Off a terminal (an ECS task's log, a file), a line of text stays one line: a log event each.
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, soft_wrap=not tty, width=None if tty else 120)


FACT_ROWS_SHOWN = 25


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    return plain_text(value)


def _fact_table(con, key: str, value: object) -> None:
    """A list of records (e.g. the tables with their sizes) or a mapping of records (e.g. extensions)
    as a table; "bytes" columns in human units; the first FACT_ROWS_SHOWN rows only."""
    from rich.table import Table

    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        rows = [{"name": k, **v} for k, v in value.items()]
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = list(value)
    else:
        return
    columns = list(dict.fromkeys(c for r in rows for c in r))
    table = Table(title=key, show_lines=False)
    for col in columns:
        table.add_column(col)
    for r in rows[:FACT_ROWS_SHOWN]:
        table.add_row(*(human_bytes(r[c]) if "bytes" in c and isinstance(r.get(c), int) else _cell(r.get(c, ""))
                        for c in columns))
    con.print(table)
    if len(rows) > FACT_ROWS_SHOWN:
        con.print(f"  … and {len(rows) - FACT_ROWS_SHOWN:,} more (all of them with --json)")


def plan_and_render(ctx: click.Context, kind: str, make_plan: Callable[[], Plan]) -> int:
    """Make a plan and show it: exit 0 when nothing blocks the copy, else 1. A plan that cannot be
    made (a side unreachable, say) still gives --json a JSON object on stdout, as a failed job's
    report does; the error's one line goes to stderr from the CLI's boundary."""
    try:
        plan = make_plan()
    except MigrateError as exc:
        if app(ctx).json:
            echo_json({"kind": kind, "status": "failed", "errors": [redact(exc)], "exit_code": int(exc.exit_code)})
        raise
    render_plan(ctx, plan)
    return 0 if plan.ok else 1


def render_plan(ctx: click.Context, plan: Plan) -> None:
    if app(ctx).json:
        echo_json(plan.to_dict())
        return
    from rich.table import Table

    con = _console()
    con.print(f"[bold]{plan.kind} plan[/bold]: {plain_text(plan.source)} → {plain_text(plan.target)}")
    for key, value in plan.facts.items():
        if isinstance(value, list | dict):
            continue
        con.print(f"  {key}: {plain_text(value)}")
    for key, value in plan.facts.items():
        _fact_table(con, key, value)
    table = Table(title="phases", show_lines=False)
    for col in ("#", "phase", "concurrency", "items", "size", "what"):
        table.add_column(col)
    for i, step in enumerate(plan.steps, 1):
        table.add_row(
            str(i),
            step.name,
            str(step.concurrency),
            "" if step.items is None else f"{step.items:,}",
            "" if step.bytes is None else human_bytes(step.bytes),
            plain_text(step.description),
        )
    con.print(table)
    for w in plan.warnings:
        con.print(f"[yellow]warning[/yellow]: {plain_text(w)}")
    for b in plan.blockers:
        con.print(f"[red]blocker[/red]: {plain_text(b)}")


def render_report(ctx: click.Context, report: Report, *, max_diffs: int = 50) -> None:
    if app(ctx).json:
        echo_json(report.to_dict())
        return
    from rich.table import Table

    con = _console()
    _render_report_rich(con, report, max_diffs=max_diffs, table_cls=Table, verbose=app(ctx).verbose > 0)


def _render_report_rich(con: Any, report: Report, *, max_diffs: int, table_cls: Any, verbose: bool = False,
                        top: bool = True) -> None:
    # The parts first, then this report's own summary: the last screen is the whole job's result.
    for c in report.children:
        con.print(f"[bold]{c.kind}[/bold]: {c.status.value}")
        _render_report_rich(con, c, max_diffs=max_diffs, table_cls=table_cls, verbose=verbose, top=False)
    if report.phases:
        table = table_cls(title=f"{report.kind}: summary")
        for col in ("phase", "seconds", "concurrency", "items", "rows", "bytes", "note"):
            table.add_column(col)
        for p in report.phases:
            table.add_row(
                p.name,
                f"{p.seconds:.2f}",
                str(p.concurrency),
                "" if p.items is None else f"{p.items:,}",
                "" if p.rows is None else f"{p.rows:,}",
                "" if p.bytes is None else human_bytes(p.bytes),
                plain_text(p.note),
            )
        con.print(table)
    if report.diffs or report.outcome_tally is not None:
        counts = report.outcome_counts()
        con.print("verification: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        shown = report.differences()[:max_diffs]
        if shown:
            table = table_cls(title="differences")
            for col in ("kind", "name", "outcome", "detail"):
                table.add_column(col)
            for d in shown:
                table.add_row(d.kind, plain_text(d.name), d.outcome.value, plain_text(d.detail))
            con.print(table)
            # counted, not listed: a report may list only some of its differences (s3 verify's cap)
            hidden = max(len(report.differences()), sum(v for k, v in counts.items() if k != "match")) - len(shown)
            if hidden > 0:
                con.print(f"… and {hidden} more (see --json or --report)")
        info = [d for d in report.diffs if d.info_only]
        # Notes on data (a materialized view refreshed on the target) are few and worth reading: always
        # listed. The others (owners and privileges, expected on RDS and many; extension versions the
        # target does not offer; the target's own database settings) are counted unless -v.
        listed = info if verbose else [d for d in info if d.kind.endswith(" data")]
        for d in listed:
            con.print(f"[dim]info[/dim]: {d.kind} {plain_text(d.name)}: {plain_text(d.detail)}")
        if len(info) > len(listed):
            con.print(f"[dim]info: {len(info) - len(listed)} differences that do not count (owners and privileges,"
                      " expected on RDS; extension versions the target does not offer; the target's own database"
                      " settings; listed with -v or in --json)[/dim]")
    for n in report.notes:
        con.print(f"note: {plain_text(n)}")
    for w in report.warnings:
        con.print(f"[yellow]warning[/yellow]: {plain_text(w)}")
    for e in report.errors:
        con.print(f"[red]error[/red]: {plain_text(e)}")
    if top:
        verdict = verification_verdict(report)
        if verdict:
            con.print(verdict)
    style = {"success": "green", "differs": "yellow"}.get(report.status.value, "red")
    con.print(f"[bold {style}]{report.kind}: {report.status.value}[/bold {style}] in {report.seconds:.1f}s")


def say_outcome(report: Report) -> None:
    """A job that returned a report but did not succeed says why in one line on stderr (the contract's
    one clear line), whatever was printed on stdout (tables, JSON)."""
    if report.status is Status.SUCCESS:
        return
    if report.status is Status.DIFFERS:
        n = sum(v for k, v in report.outcome_totals().items() if k != "match")
        line = f"verification found {n:,} difference{'' if n == 1 else 's'} (listed in the output and the report)"
    else:
        errors = report.error_lines()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        line = f"{errors[0]}{more}" if errors else f"{report.kind}: {report.status.value}"
    click.echo(redact(f"error: {line}"), err=True)


def verification_verdict(report: Report) -> str:
    """One line on what the verification proved, counted over the whole job (all its parts)."""
    counts = report.outcome_totals()
    compared = sum(counts.values())
    if not compared:
        return ""
    match = counts.get("match", 0)
    if match == compared and report.status is Status.SUCCESS:
        return (f"verified: all {compared:,} compared items (schema objects, tables or ranges, sequences,"
                " objects) match the source: nothing is missing or different")
    if match == compared:  # what was compared matches, but a part failed or stopped before its check
        return (f"verified so far: the {compared:,} compared items match the source, but not everything was"
                f" compared ({report.status.value}: see above)")
    others = ", ".join(f"{v:,} {k}" for k, v in counts.items() if k != "match" and v)
    return f"verified: {match:,} of {compared:,} compared items match the source; {others}"
