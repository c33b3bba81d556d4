"""The thin Click layer. `main()` is the ONE error boundary: it turns MigrateError, usage errors,
Ctrl-C and SIGTERM into one line on stderr and the contract's exit code."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import traceback
from collections.abc import Sequence

import click

from migrate import __version__
from migrate.cli.common import AppContext, echo_json, json_printed
from migrate.config import redact
from migrate.errors import ExitCode, MigrateError
from migrate.logs import setup_logging
from migrate.model import Status

log = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="paas-migrate", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="More detail on stderr; -v also shows tracebacks.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, as_json: bool) -> None:
    """Move a PaaS application's PostgreSQL database and S3 buckets into AWS, and prove it.

    Every job has three steps: plan (read-only), copy, verify. Exit codes: 0 success, 1 failure,
    2 usage or configuration error, 3 verification found differences, 130 interrupted.
    """
    ctx.obj = AppContext(verbose=verbose, json=as_json)
    setup_logging(verbose)


def _register() -> None:
    from migrate.cli import db, demo, ecs, images, run, s3

    for module in (db, s3, images, ecs, run, demo):
        cli.add_command(module.command)


_register()


def _sigterm(signum: int, frame: object) -> None:
    # An ECS stop sends SIGTERM: treat it like Ctrl-C so every `finally` cleans up.
    raise KeyboardInterrupt


def _wants_traceback(argv: Sequence[str]) -> bool:
    for arg in argv:
        if arg == "--":
            break
        if arg == "--verbose" or (arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) == {"v"}):
            return True
    return False


def _err(line: str) -> None:
    click.echo(redact(line), err=True)


# The kind a command's own JSON (its plan or report) carries: an error object says the same.
_KINDS = {"db plan": "db", "db copy": "db-copy", "db verify": "db-verify", "s3 plan": "s3", "s3 copy": "s3",
          "s3 verify": "s3", "run": "run"}


def _wants_json(argv: Sequence[str]) -> str | None:
    """With --json (global, or the command's own, anywhere before "--"): the command's kind, for an
    error object ("db-copy"), else None."""
    if "--json" not in argv[: argv.index("--") if "--" in argv else len(argv)]:
        return None
    words: list[str] = []
    for arg in argv:
        if arg == "--" or (arg.startswith("-") and words):
            break
        if not arg.startswith("-"):
            words.append(arg)
            if len(words) == 2 or arg == "run":
                break
    command = " ".join(words)
    return _KINDS.get(command, command.replace(" ", "-") or "paas-migrate")


def _json_error(kind: str | None, message: str, code: int) -> None:
    """With --json, a command that stopped on an error before printing its JSON object prints one
    (as a failed job's report: status, errors, exit code), so stdout is always one JSON object."""
    if kind is None or json_printed():
        return
    status = Status.INTERRUPTED if code == ExitCode.INTERRUPTED else Status.FAILED
    echo_json({"kind": kind, "status": status.value, "errors": [redact(message)], "exit_code": int(code)})


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point. Returns the exit code (never raises, never prints a secret)."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = _wants_traceback(args)
    json_kind = _wants_json(args)
    json_printed(reset=True)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread (e.g. called from a test thread)
        previous = None
    try:
        result = cli.main(args=args, prog_name="paas-migrate", standalone_mode=False)
        if isinstance(result, int):
            return result
        return ExitCode.SUCCESS
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # a group without its command: its help, exit 2
        commands = sorted(exc.ctx.command.commands) if isinstance(exc.ctx.command, click.Group) else []
        _json_error(json_kind, f"missing command: one of {', '.join(commands)}", ExitCode.USAGE)
        click.echo(exc.format_message(), err=True)
        return ExitCode.USAGE
    except click.ClickException as exc:  # usage errors, bad parameters
        code = ExitCode.USAGE if isinstance(exc, click.UsageError) else ExitCode.FAILURE
        _json_error(json_kind, exc.format_message(), code)
        _err(f"error: {exc.format_message()}")
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            _err(f"(see '{exc.ctx.command_path} --help')")
        return code
    except (KeyboardInterrupt, click.exceptions.Abort):
        _json_error(json_kind, "interrupted", ExitCode.INTERRUPTED)
        _err("interrupted: stopped before finishing; nothing unfinished was reported as done")
        return ExitCode.INTERRUPTED
    except MigrateError as exc:
        _json_error(json_kind, str(exc), exc.exit_code)
        if verbose:
            _err(traceback.format_exc().rstrip())
        _err(f"error: {exc}")
        return exc.exit_code
    except Exception as exc:
        _json_error(json_kind, f"unexpected {type(exc).__name__}: {exc}", ExitCode.FAILURE)
        if verbose:
            _err(traceback.format_exc().rstrip())
        hint = "" if verbose else " (run with -v for the traceback)"
        _err(f"error: unexpected {type(exc).__name__}: {exc}{hint}")
        return ExitCode.FAILURE
    finally:
        if previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)
