"""Secret references against a real Secrets Manager and SSM API over HTTP (moto in server mode)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from migrate import planfile
from migrate.config import redact
from migrate.errors import ConfigError, ConnectionFailed
from migrate.local.s3server import REGION, SOURCE_KEYS
from migrate.secretref import Resolver

pytestmark = pytest.mark.s3


def _environ(server: Any) -> dict[str, str]:
    return {
        "MIGRATE_AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": SOURCE_KEYS["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": SOURCE_KEYS["secret_access_key"],
        "AWS_REGION": REGION,
    }


@pytest.fixture
def aws(s3_server: Any) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    sm = s3_server.client("secretsmanager")
    ssm = s3_server.client("ssm")
    url = f"postgresql://master:sm-db-password-{suffix}@rds.example:5432/core"
    plain = sm.create_secret(Name=f"core/{suffix}/db-url", SecretString=url)
    rds = sm.create_secret(Name=f"core/{suffix}/rds", SecretString=json.dumps({
        "engine": "postgres", "host": "rds.example", "port": 5432, "dbname": "core",
        "username": "master", "password": f"rds-json-pw-{suffix}",
    }))
    keys = sm.create_secret(Name=f"core/{suffix}/paas-key", SecretString=json.dumps({
        "aws_access_key_id": "AKIASMEXAMPLE", "aws_secret_access_key": f"sm-s3-secret-{suffix}",
    }))
    ssm.put_parameter(Name=f"/core/{suffix}/database-url", Type="SecureString",
                      Value=f"postgresql://app:ssm-db-pw-{suffix}@paas.example:5432/app")
    ssm.put_parameter(Name=f"/core/{suffix}/region", Type="String", Value="eu-west-2")
    return {"suffix": suffix, "url": url, "plain_arn": plain["ARN"], "rds_arn": rds["ARN"], "keys_arn": keys["ARN"]}


def test_secretsmanager_whole_secret_by_name_and_arn(s3_server: Any, aws: dict[str, Any]) -> None:
    r = Resolver(_environ(s3_server))
    s = aws["suffix"]
    assert r.resolve(f"secretsmanager:core/{s}/db-url", where="w").reveal() == aws["url"]
    assert r.resolve(f"secretsmanager:{aws['plain_arn']}", where="w").reveal() == aws["url"]
    assert redact(f"password sm-db-password-{s} here") == "password *** here"


def test_secretsmanager_json_key(s3_server: Any, aws: dict[str, Any]) -> None:
    r = Resolver(_environ(s3_server))
    s = aws["suffix"]
    value = r.resolve(f"secretsmanager:{aws['keys_arn']}#aws_secret_access_key", where="w")
    assert value.reveal() == f"sm-s3-secret-{s}"
    assert str(value) == "***" and redact(f"sm-s3-secret-{s}") == "***"
    with pytest.raises(ConfigError) as info:
        r.resolve(f"secretsmanager:{aws['keys_arn']}#password", where="plan.toml: environments.p.x")
    assert info.value.message.startswith("plan.toml: environments.p.x — secretsmanager:")
    assert "no key 'password'" in redact(str(info.value))  # as printed: no word taken for a value
    assert info.value.hint == "its keys are: aws_access_key_id, aws_secret_access_key"
    with pytest.raises(ConfigError, match="the secret is not a JSON object") as info:
        r.resolve(f"secretsmanager:core/{s}/db-url#password", where="w")
    assert f"sm-db-password-{s}" not in str(info.value)


def test_ssm_parameters_are_decrypted(s3_server: Any, aws: dict[str, Any]) -> None:
    r = Resolver(_environ(s3_server))
    s = aws["suffix"]
    assert r.resolve(f"ssm:/core/{s}/database-url", where="w").reveal() == (
        f"postgresql://app:ssm-db-pw-{s}@paas.example:5432/app"
    )
    assert r.resolve_public(f"ssm:/core/{s}/region", where="w") == "eu-west-2"
    assert redact("eu-west-2") == "eu-west-2"  # a public value is not registered as a secret


def test_missing_secret_and_parameter_name_the_key(s3_server: Any, aws: dict[str, Any]) -> None:
    r = Resolver(_environ(s3_server))
    with pytest.raises(ConfigError) as info:
        r.resolve("secretsmanager:core/none/such", where="plan.toml: environments.p.database.target")
    assert info.value.message == (
        "plan.toml: environments.p.database.target — secretsmanager:core/none/such does not exist"
    )
    with pytest.raises(ConfigError, match="ssm:/core/none/such does not exist"):
        r.resolve("ssm:/core/none/such", where="w")


def test_unreachable_endpoint_is_a_connection_failure(aws: dict[str, Any]) -> None:
    from migrate.local.postgres import free_port

    env = {"MIGRATE_AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "x" * 16,
           "AWS_SECRET_ACCESS_KEY": "y" * 16, "AWS_REGION": REGION}
    r = Resolver(env)
    r._client("ssm", None).meta.config.retries = {"max_attempts": 0}
    with pytest.raises(ConnectionFailed, match="cannot reach AWS to read ssm:/x"):
        r.resolve("ssm:/x", where="w")


def test_each_secret_is_fetched_once_per_run(s3_server: Any, aws: dict[str, Any]) -> None:
    r = Resolver(_environ(s3_server))
    calls: list[str] = []
    client = r._client("secretsmanager", REGION)
    client.meta.events.register("before-call.secrets-manager.GetSecretValue", lambda **kw: calls.append("x"))
    for key in ("aws_access_key_id", "aws_secret_access_key"):
        r.resolve(f"secretsmanager:{aws['keys_arn']}#{key}", where="w")
    assert calls == ["x"]


def test_plan_with_rds_secret_and_ssm_resolves_into_database_urls(s3_server: Any, aws: dict[str, Any]) -> None:
    s = aws["suffix"]
    text = f"""
[environments.production.database]
source = "ssm:/core/{s}/database-url"
target = "secretsmanager:{aws['rds_arn']}"
"""
    spec = planfile.loads(text).environment("production")
    env = planfile.resolve_environment(spec, resolver=Resolver(_environ(s3_server)))
    assert env.db is not None
    assert env.db.db.source.password == f"ssm-db-pw-{s}"
    assert env.db.db.target.user == "master" and env.db.db.target.host == "rds.example"
    assert env.db.db.target.password == f"rds-json-pw-{s}"
    shown = repr(env) + env.describe_source() + env.describe_target()
    for secret in (f"ssm-db-pw-{s}", f"rds-json-pw-{s}"):
        assert secret not in shown
        assert redact(secret) == "***"
