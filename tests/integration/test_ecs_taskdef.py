"""`ecs task-definition`, as the user runs it (a subprocess), registering into a real ECS API (moto
over HTTP) and described back from it."""

from __future__ import annotations

import json
import uuid

import pytest

from migrate.local.s3server import REGION, TARGET_KEYS, LocalS3Server
from tests.support.cli import run_cli

pytestmark = pytest.mark.s3

ACCOUNT = "123456789012"
SM_SOURCE = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:paas/source-db-AbCdEf"
SSM_TARGET = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/paas/target-db"


def _env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": TARGET_KEYS["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": TARGET_KEYS["secret_access_key"], "AWS_REGION": REGION}


def _base(image: str, family: str) -> list[str]:
    return ["ecs", "task-definition", image, "--image", f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{image}:1",
            "--execution-role", f"arn:aws:iam::{ACCOUNT}:role/exec", "--task-role", f"arn:aws:iam::{ACCOUNT}:role/task",
            "--log-group", "/paas-migrate/db", "--family", family]


def test_register_db_migration_secrets_are_references(s3_server: LocalS3Server) -> None:
    family = f"db-migration-{uuid.uuid4().hex[:8]}"
    res = run_cli(
        *_base("db-migration", family), "--region", REGION, "--endpoint-url", s3_server.endpoint_url,
        "--secret", f"MIGRATE_SOURCE_DATABASE_URL={SM_SOURCE}", "--secret", f"MIGRATE_TARGET_DATABASE_URL={SSM_TARGET}",
        "--env", "MIGRATE_DB_JOBS=4", "--ephemeral-storage", "100", "--register", env=_env(),
    )
    assert res.code == 0, res.err
    arn = res.out.strip()
    assert arn.startswith(f"arn:aws:ecs:{REGION}:") and f":task-definition/{family}:1" in arn

    td = s3_server.client("ecs", TARGET_KEYS).describe_task_definition(taskDefinition=family)["taskDefinition"]
    (container,) = td["containerDefinitions"]
    assert container["name"] == "db-migration"
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        "MIGRATE_SOURCE_DATABASE_URL": SM_SOURCE, "MIGRATE_TARGET_DATABASE_URL": SSM_TARGET}
    assert {e["name"]: e["value"] for e in container["environment"]} == {"MIGRATE_DB_JOBS": "4"}
    assert container["logConfiguration"] == {"logDriver": "awslogs", "options": {
        "awslogs-group": "/paas-migrate/db", "awslogs-region": REGION, "awslogs-stream-prefix": "paas-migrate"}}
    assert td["requiresCompatibilities"] == ["FARGATE"] and td["networkMode"] == "awsvpc"
    assert (td["cpu"], td["memory"], td["ephemeralStorage"]["sizeInGiB"]) == ("2048", "4096", 100)
    assert td["executionRoleArn"].endswith(":role/exec") and td["taskRoleArn"].endswith(":role/task")


def test_print_s3_migration_json_and_contract_warnings() -> None:
    res = run_cli(*_base("s3-migration", "s3-migration"), "--region", REGION, "--cpu", "512", "--memory", "4096",
                  "--env", "MIGRATE_SOURCE_S3_URL=s3://paas-bucket", "--env", "MIGRATE_S3_WORKERS=32")
    assert res.code == 0, res.err
    td = json.loads(res.out)
    (container,) = td["containerDefinitions"]
    assert container["secrets"] == []
    assert [e["name"] for e in container["environment"]] == ["MIGRATE_S3_WORKERS", "MIGRATE_SOURCE_S3_URL"]
    assert (td["cpu"], td["memory"]) == ("512", "4096") and "ephemeralStorage" not in td
    # The contract's missing pieces are named, with how to give them.
    assert "MIGRATE_TARGET_S3_URL" in res.err
    assert "--secret MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY=ARN" in res.err


@pytest.mark.parametrize(
    ("extra", "needle", "secret"),
    [
        (["--env", "MIGRATE_SOURCE_DATABASE_URL=postgresql://app:Sup3r-S3cret-pw@paas.example/app"],
         "--env MIGRATE_SOURCE_DATABASE_URL looks like a secret (it is a URL with a password)", "Sup3r-S3cret-pw"),
        (["--env", "MIGRATE_TARGET_DB_PASSWORD=plain-text-pw-9"], "use --secret", "plain-text-pw-9"),
        (["--secret", "MIGRATE_SOURCE_DATABASE_URL=postgresql://app:Sup3r-S3cret-pw@h/app"],
         "must be a Secrets Manager or SSM parameter ARN", "Sup3r-S3cret-pw"),
        (["--cpu", "1024", "--memory", "512"], "--memory 512 does not fit --cpu 1024", None),
    ],
)
def test_refusals_are_one_line_and_never_show_the_secret(extra: list[str], needle: str, secret: str | None) -> None:
    res = run_cli(*_base("db-migration", "db-migration"), "--region", REGION, *extra)
    assert res.code == 2
    assert res.out == ""
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert needle in lines[0] or needle in res.err
    if secret:
        assert secret not in res.err
