"""`paas-migrate demo`: the whole migration on embedded local services."""

from __future__ import annotations

import click

from migrate.cli.common import app, output_options, reporter_for


@click.command(name="demo")
@click.option("--keep", is_flag=True, help="Leave the local services running and print how to connect.")
@click.option("--scale", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Dataset size factor (1 = ~40k rows and ~400 objects: well under a minute on 2 cores).")
@click.option("--report", "report_path", metavar="PATH", help="Write the final report as JSON to PATH.")
@click.option("--markdown", "markdown_path", metavar="PATH", help="Write the final report as Markdown to PATH.")
@click.option("--stop", "stop_dir", metavar="DIR",
              help="Stop the services a previous `demo --keep` left running in DIR, and delete DIR.")
@output_options
@click.pass_context
def command(ctx: click.Context, keep: bool, scale: float, report_path: str | None, markdown_path: str | None,
            stop_dir: str | None) -> int:
    """Run a complete migration against embedded local PostgreSQL and S3 servers.

    Starts two PostgreSQL clusters (PaaS side and AWS side) and an S3 API server on 127.0.0.1,
    seeds a social-housing dataset and two buckets, writes a plan file and a VCAP_SERVICES file,
    and runs `paas-migrate run` on them: preflight, copy, verify, report. Everything is stopped
    and deleted at the end, also after a failure or Ctrl-C, unless --keep.
    """
    from migrate import demo as demo_lib
    from migrate.cli.run import execute
    from migrate.planfile import load_environment

    if stop_dir:
        for line in demo_lib.stop_kept(stop_dir):
            click.echo(line, err=True)
        return 0
    demo_lib.check_tools()
    demo = demo_lib.Demo(scale=scale)
    finished = ready = False
    try:
        reporter = reporter_for(ctx)
        try:
            demo.start(reporter)
            demo.seed(reporter)
            plan_path, environ = demo.write_plan()
            ready = True
            reporter.note(f"demo: plan file {plan_path} (vcap:, secretsmanager: and env: references; no secrets)")
        finally:
            reporter.close()
        if not app(ctx).json:
            click.echo(f"--- {plan_path}\n{plan_path.read_text()}---", err=True)
        env = load_environment(plan_path, demo_lib.ENV_NAME, environ=environ, state_dir=demo.workdir / "state")
        code = execute(ctx, env, report_path=report_path, markdown_path=markdown_path,
                       title="paas-migrate demo", drop_journals=True)  # the cutover's final run
        finished = True
        return code
    finally:
        if keep and ready:
            for line in demo.connection_help():
                click.echo(line, err=True)
        else:
            demo.stop()
            if finished:
                click.echo("demo: services stopped and temporary files deleted", err=True)
