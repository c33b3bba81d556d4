"""ECR through moto's ECR API (the `s3_server` fixture is a full moto server): repository
creation with scan-on-push, the authorization token, and `images push` planning and pushing.

No local server can stand in for the ECR *registry* host (ID.dkr.ecr.REGION.amazonaws.com), so
where a push must run, the builder is a recording stand-in script on PATH; the real builder and
registry path is tested in test_images_registry.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from migrate.config import MASK, Secret
from migrate.images.push import EcrTarget, create_repository, ecr_login_password, repository_exists
from migrate.local.s3server import REGION, TARGET_KEYS, LocalS3Server
from tests.support.cli import run_cli

pytestmark = pytest.mark.s3

ACCOUNT = "123456789012"  # moto's default account
HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"

# Records every invocation (argv, and stdin for login) and acts like buildah enough for a push:
# `inspect` succeeds, `push` writes a digest to its --digestfile.
RECORDING_BUILDAH = """#!/bin/sh
log="$RECORD_DIR/calls"
printf '%s\\n' "$*" >> "$log"
case " $* " in
  *" login "*) cat > "$RECORD_DIR/login-stdin" ;;
  *" push "*)
    while [ $# -gt 0 ]; do
      if [ "$1" = --digestfile ]; then
        echo sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef > "$2"; shift
      fi
      shift
    done ;;
  *" inspect "*) echo sha256:feed ;;
esac
exit 0
"""


@pytest.fixture
def ecr(s3_server: LocalS3Server):
    return s3_server.client("ecr", TARGET_KEYS)


@pytest.fixture
def fake_builder(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "buildah"
    script.write_text(RECORDING_BUILDAH)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record"
    record.mkdir()
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "RECORD_DIR": str(record)}
    return env, record


def _env(server: LocalS3Server, extra: dict[str, str]) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": TARGET_KEYS["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": TARGET_KEYS["secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,
        "MIGRATE_ECR_ENDPOINT_URL": server.endpoint_url,
        **extra,
    }


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}/"


def test_create_repository_scans_on_push_and_token_is_a_secret(s3_server: LocalS3Server, ecr) -> None:
    target = EcrTarget(ACCOUNT, REGION, s3_server.endpoint_url)
    name = f"{_prefix()}db-migration"
    assert not repository_exists(ecr, target, name)
    create_repository(ecr, target, name)
    create_repository(ecr, target, name)  # already there: not an error
    assert repository_exists(ecr, target, name)
    (repo,) = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True
    assert repo["imageTagMutability"] == "MUTABLE"

    password = ecr_login_password(ecr, target)
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    assert base64.b64decode(token).decode() == f"AWS:{password.reveal()}"
    # The password comes back wrapped: its repr and str never show it.
    assert isinstance(password, Secret)
    assert password.reveal() not in repr(password) and password.reveal() not in str(password)
    assert repr(password) == f"Secret({MASK})" and str(password) == MASK


def test_dry_run_prints_the_commands_and_runs_none(s3_server: LocalS3Server, ecr, fake_builder) -> None:
    env, record = fake_builder
    prefix = _prefix()
    res = run_cli("images", "push", "all", "--account-id", ACCOUNT, "--region", REGION, "--create-repository",
                  "--repository-prefix", prefix, "--tag", "1.2.3", "--builder", "buildah", "--dry-run",
                  env=_env(s3_server, env))
    assert res.code == 0, res.err
    out = res.out
    for name in ("db-migration", "s3-migration"):
        assert f"would create ECR repository {prefix}{name} (scan on push)" in out
        assert f"buildah tag localhost/{name}:1.2.3 {HOST}/{prefix}{name}:1.2.3" in out
        assert f"docker://{HOST}/{prefix}{name}:1.2.3" in out
    assert f"buildah login --username AWS --password-stdin --authfile '<temporary auth file>' {HOST}" in out
    assert "< <password on stdin>" in out
    # Nothing ran, nothing was created.
    assert not (record / "calls").exists()
    assert not any(r["repositoryName"].startswith(prefix) for r in ecr.describe_repositories()["repositories"])

    as_json = run_cli("images", "push", "s3-migration", "--account-id", ACCOUNT, "--region", REGION,
                      "--create-repository", "--repository-prefix", prefix, "--tag", "1.2.3",
                      "--builder", "buildah", "--dry-run", "--json", env=_env(s3_server, env))
    assert as_json.code == 0, as_json.err
    plan = json.loads(as_json.out)
    assert plan["dry_run"] is True and plan["registry"] == HOST
    assert plan["create_repositories"] == [f"{prefix}s3-migration"]
    assert any("buildah push" in c for c in plan["commands"])
    assert not (record / "calls").exists()


def test_missing_repository_without_create_is_one_clear_line(s3_server: LocalS3Server, fake_builder) -> None:
    env, record = fake_builder
    prefix = _prefix()
    res = run_cli("images", "push", "db-migration", "--account-id", ACCOUNT, "--region", REGION,
                  "--repository-prefix", prefix, "--tag", "1.2.3", "--builder", "buildah",
                  env=_env(s3_server, env))
    assert res.code == 1
    assert res.err.strip().count("\n") == 0, res.err
    assert f"ECR repository '{prefix}db-migration' does not exist" in res.err
    assert "--create-repository" in res.err
    assert not (record / "calls").exists()


def test_push_creates_the_repository_logs_in_on_stdin_and_prints_digests(
    s3_server: LocalS3Server, ecr, fake_builder
) -> None:
    env, record = fake_builder
    prefix = _prefix()
    res = run_cli("images", "push", "s3-migration", "--account-id", ACCOUNT, "--region", REGION,
                  "--create-repository", "--repository-prefix", prefix, "--tag", "1.2.3", "--tag", "abc1234",
                  "--builder", "buildah", env=_env(s3_server, env))
    assert res.code == 0, res.err
    (repo,) = ecr.describe_repositories(repositoryNames=[f"{prefix}s3-migration"])["repositories"]
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True

    calls = (record / "calls").read_text().splitlines()
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    password = base64.b64decode(token).decode().partition(":")[2]
    # The password went to `login --password-stdin` on stdin, and never on any argv.
    assert (record / "login-stdin").read_text().strip() == password
    assert not any(password in c for c in calls)
    assert password not in res.output
    verbs = [c.split()[0] for c in calls]
    assert verbs == ["inspect", "inspect", "login", "tag", "push", "tag", "push"]
    dest = f"{HOST}/{prefix}s3-migration"
    assert f"pushed {dest}:1.2.3 sha256:0123456789abcdef" in res.out
    assert f"pushed {dest}:abc1234 sha256:0123456789abcdef" in res.out
