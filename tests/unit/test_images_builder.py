"""Builder auto-detection (with stand-in programs on a private PATH), the exact commands a build
and a push run, and the one-line errors. The real build and push are in
tests/integration/test_images_registry.py."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from migrate.errors import ConfigError, ToolError
from migrate.images.build import (
    Builder,
    build_command,
    default_tags,
    detect_builder,
    expand_targets,
    image_spec,
    last_error_line,
    parse_build_args,
)
from migrate.images.push import PASSWORD_ON_STDIN, RegistryTarget, plan_push


def _fake(bindir: Path, name: str, exit_code: int = 0, output: str = "") -> None:
    path = bindir / name
    path.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\nexit {exit_code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _detect(bindir: Path, choice: str = "auto") -> Builder:
    return detect_builder(choice, which=lambda name: shutil.which(name, path=str(bindir)))


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def test_docker_with_a_daemon_wins(bindir: Path) -> None:
    _fake(bindir, "docker", 0, "27.1.0")
    _fake(bindir, "podman")
    _fake(bindir, "buildah")
    b = _detect(bindir)
    assert b.kind == "docker" and b.executable == str(bindir / "docker")


def test_docker_without_a_daemon_falls_back_to_podman_then_buildah(bindir: Path) -> None:
    _fake(bindir, "docker", 1)
    _fake(bindir, "podman")
    _fake(bindir, "buildah")
    assert _detect(bindir).kind == "podman"
    (bindir / "podman").unlink()
    assert _detect(bindir).kind == "buildah"


def test_docker_without_daemon_and_nothing_else_says_so(bindir: Path) -> None:
    _fake(bindir, "docker", 1)
    with pytest.raises(ToolError, match="Docker daemon is not running") as exc:
        _detect(bindir)
    assert "buildah" in str(exc.value)
    with pytest.raises(ToolError, match="Docker daemon is not running"):
        _detect(bindir, "docker")


def test_no_builder_at_all_says_what_to_install(bindir: Path) -> None:
    with pytest.raises(ToolError, match="no container builder found") as exc:
        _detect(bindir)
    assert "apt-get install buildah" in str(exc.value)
    with pytest.raises(ToolError, match="podman is not installed"):
        _detect(bindir, "podman")
    with pytest.raises(ConfigError):
        _detect(bindir, "kaniko")


def test_build_command_for_buildah_and_docker(tmp_path: Path) -> None:
    spec = image_spec("s3-migration", tags=["1.0", "abc"], build_args={"PG_MAJOR": "16"}, platform="linux/amd64")
    iid = tmp_path / "iid"
    buildah = Builder("buildah", "/usr/bin/buildah", storage_driver="vfs", storage_root=tmp_path, isolation="chroot")
    argv = build_command(buildah, spec, iid)
    assert argv[:7] == ["/usr/bin/buildah", "--root", str(tmp_path / "storage"), "--runroot", str(tmp_path / "run"),
                        "--storage-driver", "vfs"]
    assert argv[7] == "build" and argv[-1] == str(spec.context)
    assert argv[argv.index("-t"):argv.index("-t") + 2] == ["-t", "localhost/s3-migration:1.0"]
    assert "localhost/s3-migration:abc" in argv
    assert argv[argv.index("--isolation") + 1] == "chroot"
    assert argv[argv.index("--platform") + 1] == "linux/amd64"
    assert "PG_MAJOR=16" in argv
    assert argv[argv.index("-f") + 1].endswith("docker/s3-migration/Dockerfile")
    docker = build_command(Builder("docker", "docker", storage_driver="vfs", isolation="chroot"), spec, iid)
    assert docker[:2] == ["docker", "build"]
    assert "--isolation" not in docker and "--storage-driver" not in docker


def test_push_plan_for_docker_reads_repo_digests() -> None:
    reg = RegistryTarget.build(registry="127.0.0.1:5000", account_id=None, region=None, tls_verify=False)
    plan = plan_push(Builder("docker", "docker"), reg, ["db-migration"], ["1.0"])
    cmds = [c.argv for c in plan.commands()]
    assert cmds == [
        ("docker", "image", "inspect", "--format", "{{.Id}}", "localhost/db-migration:1.0"),
        ("docker", "tag", "localhost/db-migration:1.0", "127.0.0.1:5000/db-migration:1.0"),
        ("docker", "push", "127.0.0.1:5000/db-migration:1.0"),
        ("docker", "image", "inspect", "--format", "{{json .RepoDigests}}", "127.0.0.1:5000/db-migration:1.0"),
    ]


def test_push_plan_login_uses_stdin_for_a_registry_user() -> None:
    reg = RegistryTarget.build(registry="https://reg.example:443/", account_id=None, region=None,
                               username="ci", password="s3cret-registry-pw")
    assert reg.host == "reg.example:443"
    plan = plan_push(Builder("podman", "podman"), reg, ["s3-migration"], ["1.0"])
    login = next(c for c in plan.commands() if "login" in c.argv)
    assert login.stdin == PASSWORD_ON_STDIN
    assert "--password-stdin" in login.argv
    assert not any("s3cret-registry-pw" in c.display() for c in plan.commands())


def test_registry_target_errors() -> None:
    with pytest.raises(ConfigError, match="no registry given"):
        RegistryTarget.build(registry=None, account_id=None, region=None)
    with pytest.raises(ConfigError, match="not both"):
        RegistryTarget.build(registry="h:5000", account_id="123456789012", region="eu-west-2")
    with pytest.raises(ConfigError, match="12-digit"):
        RegistryTarget.build(registry=None, account_id="12345", region="eu-west-2")
    with pytest.raises(ConfigError, match="MIGRATE_REGISTRY_PASSWORD"):
        RegistryTarget.build(registry="h:5000", account_id=None, region=None, username="ci")
    ecr = RegistryTarget.build(registry=None, account_id="123456789012", region="eu-west-2")
    assert ecr.host == "123456789012.dkr.ecr.eu-west-2.amazonaws.com"
    with pytest.raises(ConfigError, match="only applies to ECR"):
        plan_push(Builder("docker", "docker"), RegistryTarget("h:5000"), ["db-migration"], ["1"],
                  create_repository=True)


def test_small_helpers() -> None:
    assert expand_targets("all") == ["db-migration", "s3-migration"]
    with pytest.raises(ConfigError):
        expand_targets("web")
    assert parse_build_args(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ConfigError):
        parse_build_args(["NOVALUE"])
    with pytest.raises(ConfigError, match="invalid image tag"):
        image_spec("s3-migration", tags=["bad tag"])
    from migrate import __version__

    assert default_tags()[0] == __version__
    out = "STEP 1/2: FROM scratch\nError: building at STEP \"COPY x /x\": no such file\ntrailing noise\n"
    assert last_error_line(out) == 'Error: building at STEP "COPY x /x": no such file'
    assert last_error_line("") == "(no output)"
    pip_failure = "\n".join([
        "STEP 7/9: RUN build-venv.sh",
        "  ERROR: No matching distribution found for setuptools>=68",
        "  error: subprocess-exited-with-error",
        "note: This error originates from a subprocess, and is likely not a problem with pip.",
        'Error: building at STEP "RUN build-venv.sh": exit status 1',
    ])
    line = last_error_line(pip_failure)
    assert line.startswith("ERROR: No matching distribution found for setuptools>=68")
    assert "RUN build-venv.sh" in line


def test_a_secret_looking_build_argument_is_refused_without_showing_it() -> None:
    from migrate.config import redact
    from migrate.errors import ConfigError
    from migrate.images.build import parse_build_args

    assert parse_build_args(["PG_MAJOR=16"]) == {"PG_MAJOR": "16"}
    for pair in ("AWS_SECRET_ACCESS_KEY=abcdEFGHijklMNOPqrstUVWXyz0123456789abcd", "DB=postgresql://u:pw1234@h/db"):
        key, value = pair.split("=", 1)
        with pytest.raises(ConfigError, match=f"^--build-arg {key} looks like a secret") as info:
            parse_build_args([pair])
        # The raw message, not a redacted one: parse_build_args registers the value as a secret, so
        # redact() would hide it even if the message quoted it.
        raw = str(info.value)
        assert value not in raw and "pw1234" not in raw
        # ...and the value is registered, so any later log line that quotes it is masked.
        assert value not in redact(f"later: {value}")
