"""The command contract: help everywhere, exit codes, one error boundary, Ctrl-C gives 130."""

from __future__ import annotations

import json

import click
import pytest

import migrate.cli as cli_mod
from migrate.cli import cli, main
from migrate.errors import ConfigError, ConnectionFailed, ExitCode, Interrupted, MigrateError
from migrate.model import Diff, Outcome, Report, Status
from tests.support.cli import run_cli


def _walk(cmd: click.Command, path: str = "paas-migrate"):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_every_command_and_group_has_help_text() -> None:
    seen = list(_walk(cli))
    assert len(seen) >= 7
    for path, cmd in seen:
        assert (cmd.help or "").strip(), f"{path} has no help text"
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert (param.help or "").strip(), f"{path} option {param.opts} has no help text"


def test_required_groups_registered() -> None:
    assert {"db", "s3", "images", "ecs", "run", "demo"} <= set(cli.commands)


def test_version_help_and_module_entry_point() -> None:
    from migrate import __version__

    res = run_cli("--version")
    assert res.code == 0 and __version__ in res.out
    res = run_cli("--help")
    assert res.code == 0 and "Usage:" in res.out and "db" in res.out


def test_unknown_command_is_usage_error() -> None:
    res = run_cli("frobnicate")
    assert res.code == ExitCode.USAGE
    assert "Traceback" not in res.err


def test_exit_code_values_are_the_contract() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130]
    assert Status.SUCCESS.exit_code() == 0
    assert Status.FAILED.exit_code() == 1
    assert Status.PARTIAL.exit_code() == 1
    assert Status.DIFFERS.exit_code() == 3
    assert ConfigError("x").exit_code == 2
    assert ConnectionFailed("x").exit_code == 1
    assert Interrupted("x").exit_code == 130
    assert Status.INTERRUPTED.exit_code() == 130
    r = Report(kind="t", status=Status.INTERRUPTED, children=[Report(kind="c", status=Status.FAILED)])
    assert r.settle().status is Status.INTERRUPTED  # the worst: stopped part-way


@pytest.mark.parametrize(
    ("args", "env", "text"),
    [
        (["db", "plan"], {"MIGRATE_SOURCE_DATABASE_URL": "postgresql://u:pw-s3cret@h/db?sslmod=require"},
         "unknown parameter 'sslmod'"),
        (["db", "plan"], {"MIGRATE_SOURCE_DATABASE_URL": "postgresql://app:p%40ss:w@rd-s3cret@127.0.0.1:1/db"},
         "percent-encode"),
        (["db", "plan"], {"MIGRATE_SOURCE_DATABASE_URL": "postgresql://app:100%Sure-s3cret@h/app?sslmode=disable"},
         "libpq cannot parse it"),
        (["s3", "plan", "--source", "s3://bucket-a", "--target", "s3://bucket-b",
          "--source-endpoint-url", "notaurl"], {}, "is not an http(s) URL"),
        (["s3", "plan", "--source", "s3://bucket-a", "--target", "s3://bucket-b", "--workers", "0"], {},
         "--workers must be"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(args: list[str], env: dict[str, str], text: str) -> None:
    env = {"MIGRATE_TARGET_DATABASE_URL": "postgresql://u@127.0.0.1:1/t", **env}
    res = run_cli(*args, env=env)
    assert res.code == 2, res.output
    assert text in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert "s3cret" not in res.output and "Traceback" not in res.output
    assert res.out == ""
    # With --json, stdout is one JSON object saying the same, for scripts that parse it.
    # The command's own --json (after it) too; the kind is the one the command's plan carries.
    for argv in (["--json", *args], [*args[:2], "--json", *args[2:]]):
        res = run_cli(*argv, env=env)
        assert res.code == 2 and text in res.err and len(res.err.strip().splitlines()) == 1, res.err
        obj = json.loads(res.out)
        assert obj["kind"] == args[0] and obj["status"] == "failed" and obj["exit_code"] == 2, obj
        assert len(obj["errors"]) == 1 and text in obj["errors"][0] and "s3cret" not in res.out


def test_a_group_without_its_command_shows_its_help_and_exits_2() -> None:
    res = run_cli("db")
    assert res.code == 2 and res.out == "" and "Commands:" in res.err and "error:" not in res.err, res.output
    res = run_cli("--json", "db")
    assert res.code == 2 and json.loads(res.out) == {
        "kind": "db", "status": "failed", "errors": ["missing command: one of copy, plan, verify"], "exit_code": 2}


def test_the_verdict_never_claims_more_than_was_compared() -> None:
    from migrate.cli.common import verification_verdict

    verified = Report(kind="db-verify", diffs=[Diff("table", "a", Outcome.MATCH), Diff("table", "b", Outcome.MATCH)])
    run = Report(kind="run", children=[verified]).settle()
    assert verification_verdict(run).startswith("verified: all 2 compared items") and "nothing is missing" in \
        verification_verdict(run)
    run.children.append(Report(kind="bucket csv: copy", status=Status.FAILED))
    text = verification_verdict(run.settle())
    assert "not everything was compared" in text and "nothing is missing" not in text, text
    verified.diffs.append(Diff("table", "c", Outcome.MISSING_ON_TARGET))
    assert "2 of 3 compared items match" in verification_verdict(run) and "1 missing on target" in \
        verification_verdict(run)
    assert verification_verdict(Report(kind="s3")) == ""


def test_a_job_that_did_not_succeed_says_why_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from migrate.cli.common import say_outcome

    say_outcome(Report(kind="run", children=[Report(kind="db-verify")]).settle())
    assert capsys.readouterr().err == ""
    failed = Report(kind="run", errors=["database: copy: restoring the post-data schema failed: role x", "b"])
    say_outcome(failed.settle())
    assert capsys.readouterr().err == "error: database: copy: restoring the post-data schema failed: role x" \
        " (and 1 more)\n"
    # A copy whose verification could not compare a table: the first such table and why, on one line.
    verify = Report(kind="db-verify", diffs=[
        Diff("table data", "public.a", Outcome.MATCH),
        Diff("table data", "public.t", Outcome.ERROR, "permission denied for table t\nDETAIL:  x"),
        Diff("sequence value", "public.t_id_seq", Outcome.ERROR, "permission denied for table t")]).settle()
    say_outcome(Report(kind="db-copy", children=[verify]).settle())
    assert capsys.readouterr().err == "error: verify: public.t: permission denied for table t DETAIL: x" \
        " (and 1 more)\n"
    differs = Report(kind="run", children=[Report(kind="v", diffs=[Diff("table", "a", Outcome.DIFFER),
                                                                   Diff("table", "b", Outcome.MATCH)]).settle()])
    say_outcome(differs.settle())
    assert capsys.readouterr().err.startswith("error: verification found 1 difference (listed")


def test_declining_the_clean_prompt_is_not_an_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from migrate.cli.db import confirm_clean
    from migrate.errors import PreflightError

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    with pytest.raises(PreflightError, match="not confirmed: nothing was dropped or written"):
        confirm_clean("postgresql://u@h/db")
    monkeypatch.setattr("sys.stdin", Terminal("\n"))  # no answer is no
    with pytest.raises(PreflightError):
        confirm_clean("postgresql://u@h/db")
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    confirm_clean("postgresql://u@h/db")


def test_report_settles_worst_status() -> None:
    r = Report(kind="t")
    r.diffs.append(Diff("table", "a", Outcome.MATCH))
    assert r.settle().status is Status.SUCCESS
    r.diffs.append(Diff("table", "b", Outcome.DIFFER))
    assert r.settle().status is Status.DIFFERS
    r.diffs.append(Diff("table", "c", Outcome.ERROR))
    assert r.settle().status is Status.FAILED
    info = Report(kind="t", diffs=[Diff("owner", "x", Outcome.DIFFER, info_only=True)])
    assert info.settle().status is Status.SUCCESS


def _install_fake(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    @click.command(name="boom", help="Raise for the test.")
    def boom() -> None:
        raise exc

    monkeypatch.setitem(cli.commands, "boom", boom)


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (MigrateError("it broke"), 1, "error: it broke"),
        (MigrateError("it broke", hint="try again"), 1, "error: it broke (try again)"),
        (ConfigError("bad option"), 2, "error: bad option"),
        (KeyboardInterrupt(), 130, "interrupted: stopped before finishing; nothing unfinished was reported as done"),
        (Interrupted("stopped"), 130, "error: stopped"),
        (RuntimeError("surprise"), 1, "error: unexpected RuntimeError: surprise (run with -v for the traceback)"),
    ],
)
def test_error_boundary_maps_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: BaseException, code: int, line: str
) -> None:
    _install_fake(monkeypatch, exc)
    assert main(["boom"]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [line], err


@pytest.mark.parametrize(
    ("exc", "code", "status"),
    [(ConfigError("bad URL postgresql://u:s3cret@h/db"), 2, "failed"), (KeyboardInterrupt(), 130, "interrupted"),
     (RuntimeError("surprise"), 1, "failed")],
)
def test_with_json_every_error_is_one_json_object_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: BaseException, code: int, status: str
) -> None:
    _install_fake(monkeypatch, exc)
    assert main(["--json", "boom"]) == code
    out = capsys.readouterr().out
    obj = json.loads(out)
    assert (obj["kind"], obj["status"], obj["exit_code"]) == ("boom", status, code), obj
    assert "s3cret" not in out
    assert main(["boom"]) == code and capsys.readouterr().out == ""  # without --json, nothing on stdout


def test_with_json_a_command_that_printed_its_report_prints_nothing_more(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from migrate.cli.common import echo_json

    @click.command(name="boom", help="Print a report, then fail.")
    def boom() -> None:
        echo_json({"kind": "boom", "status": "failed"})
        raise MigrateError("it broke")

    monkeypatch.setitem(cli.commands, "boom", boom)
    for _ in range(2):  # and the next invocation in this process prints its own object again
        assert main(["--json", "boom"]) == 1
        assert json.loads(capsys.readouterr().out) == {"kind": "boom", "status": "failed"}


def test_traceback_only_with_verbose(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _install_fake(monkeypatch, MigrateError("it broke"))
    assert main(["-v", "boom"]) == 1
    assert "Traceback" in capsys.readouterr().err
    _install_fake(monkeypatch, RuntimeError("surprise"))
    assert main(["-v", "boom"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "run with -v" not in err  # it was given


def test_sigterm_handler_raises_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt):
        cli_mod._sigterm(15, None)
