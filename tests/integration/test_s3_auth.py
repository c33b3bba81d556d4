"""Credentials checked for real: a moto server with IAM authentication switched on
(INITIAL_NO_AUTH_ACTION_COUNT), so a wrong key or secret is refused by the server, not by a stub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate.local.s3server import REGION, LocalS3Server
from tests.support.cli import run_cli
from tests.support.services import unavailable

pytestmark = pytest.mark.s3

# Requests the server answers without authentication; setup() below makes exactly this many.
SETUP_REQUESTS = 10


@pytest.fixture(scope="module")
def auth_server():
    try:
        server = LocalS3Server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}).start()
    except Exception as exc:
        unavailable(f"local S3 API server (moto) could not start: {exc}")
    try:
        yield server, setup(server)
    finally:
        server.stop()


def setup(server: LocalS3Server) -> dict[str, str]:
    """Two IAM users (source and target side), each allowed s3:*, with real access keys; a third user
    with valid keys and no policy at all (the server authenticates it, then denies it); two buckets."""
    iam = server.client("iam")
    policy = json.dumps({"Version": "2012-10-17",
                         "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
    keys = {}
    for side in ("source", "target"):
        iam.create_user(UserName=f"{side}-user")  # 1, 4
        iam.put_user_policy(UserName=f"{side}-user", PolicyName="s3", PolicyDocument=policy)  # 2, 5
        k = iam.create_access_key(UserName=f"{side}-user")["AccessKey"]  # 3, 6
        keys[f"{side}_id"], keys[f"{side}_secret"] = k["AccessKeyId"], k["SecretAccessKey"]
    iam.create_user(UserName="no-policy-user")  # 7
    k = iam.create_access_key(UserName="no-policy-user")["AccessKey"]  # 8
    keys["denied_id"], keys["denied_secret"] = k["AccessKeyId"], k["SecretAccessKey"]
    s3 = server.client("s3", {"access_key_id": keys["source_id"], "secret_access_key": keys["source_secret"]})
    s3.create_bucket(Bucket="auth-src", CreateBucketConfiguration={"LocationConstraint": REGION})  # 9
    s3.create_bucket(Bucket="auth-dst", CreateBucketConfiguration={"LocationConstraint": REGION})  # 10
    s3.put_object(Bucket="auth-src", Key="data/a.csv", Body=b"id,name\n1,a\n")  # authenticated already
    return keys


def _env(keys: dict[str, str], **override: str) -> dict[str, str]:
    env = {
        "MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": keys["source_id"],
        "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": keys["source_secret"],
        "MIGRATE_TARGET_AWS_ACCESS_KEY_ID": keys["target_id"],
        "MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": keys["target_secret"],
        "MIGRATE_SOURCE_AWS_REGION": REGION, "MIGRATE_TARGET_AWS_REGION": REGION,
    }
    env.update(override)
    return env


def _args(server: LocalS3Server, tmp: Path, command: str) -> list[str]:
    args = ["--source", "s3://auth-src", "--target", "s3://auth-dst", "--source-endpoint-url", server.endpoint_url,
            "--target-endpoint-url", server.endpoint_url]
    if command == "copy":
        args += ["--mode", "stream"]
    return args + (["--state-dir", str(tmp / "state")] if command != "verify" else [])


@pytest.mark.parametrize("side,override,code", [
    ("source", {"MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "SignatureDoesNotMatch"),
    ("target", {"MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "SignatureDoesNotMatch"),
    ("source", {"MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": "AKIDUNKNOWNKEY000000"}, "InvalidAccessKeyId"),
    ("target", {"MIGRATE_TARGET_AWS_ACCESS_KEY_ID": "AKIDUNKNOWNKEY000000"}, "InvalidAccessKeyId"),
    # valid keys of a user with no policy: authenticated, then refused (values name setup()'s keys)
    ("source", {"MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": "denied_id",
                "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": "denied_secret"}, "AccessDenied"),
    ("target", {"MIGRATE_TARGET_AWS_ACCESS_KEY_ID": "denied_id",
                "MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": "denied_secret"}, "AccessDenied"),
], ids=["source-secret", "target-secret", "source-key", "target-key", "source-denied", "target-denied"])
@pytest.mark.parametrize("command", ["plan", "copy", "verify"])
def test_refused_credentials_are_one_clear_line(auth_server, tmp_path: Path, command: str, side: str,
                                                override: dict[str, str], code: str) -> None:
    server, keys = auth_server
    env = _env(keys, **{variable: keys.get(value, value) for variable, value in override.items()})
    res = run_cli("s3", command, *_args(server, tmp_path, command), env=env)
    assert res.code == 1, res.output
    lines = res.err.strip().splitlines()
    assert lines[-1].startswith(f"error: the {side} credentials were refused for s3://auth-"), res.err
    assert f"({code})" in lines[-1] and "Traceback" not in res.err
    for secret in ("source_secret", "target_secret", "denied_secret"):
        assert keys[secret] not in res.output


def test_good_credentials_copy_and_verify(auth_server, tmp_path: Path) -> None:
    """The same server accepts the real keys: the refusals above are about the keys, nothing else."""
    server, keys = auth_server
    res = run_cli("s3", "copy", *_args(server, tmp_path, "copy"), env=_env(keys))
    assert res.code == 0, res.output
    target = server.client("s3", {"access_key_id": keys["target_id"], "secret_access_key": keys["target_secret"]})
    copied = target.get_object(Bucket="auth-dst", Key="data/a.csv")
    assert copied["Body"].read() == b"id,name\n1,a\n"
    listed = [o["Key"] for o in target.list_objects_v2(Bucket="auth-dst").get("Contents", [])]
    assert [k for k in listed if "_paas-migrate/" not in k] == ["data/a.csv"], listed  # and the copy's journal
    res = run_cli("s3", "verify", *_args(server, tmp_path, "verify"), "--drop-journal", env=_env(keys))
    assert res.code == 0, res.output
    assert "warning" not in res.output  # the target credential may delete the journal
    assert [o["Key"] for o in target.list_objects_v2(Bucket="auth-dst").get("Contents", [])] == ["data/a.csv"]
