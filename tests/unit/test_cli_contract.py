"""The command contract: help everywhere, exit codes, one error boundary, Ctrl-C gives 130."""

from __future__ import annotations

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
    ("exc", "code"),
    [
        (MigrateError("it broke"), 1),
        (ConfigError("bad option"), 2),
        (KeyboardInterrupt(), 130),
        (Interrupted("stopped"), 130),
        (RuntimeError("surprise"), 1),
    ],
)
def test_error_boundary_maps_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: BaseException, code: int
) -> None:
    _install_fake(monkeypatch, exc)
    assert main(["boom"]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_traceback_only_with_verbose(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _install_fake(monkeypatch, MigrateError("it broke"))
    assert main(["-v", "boom"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_sigterm_handler_raises_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt):
        cli_mod._sigterm(15, None)
