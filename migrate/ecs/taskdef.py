"""The migration images' environment contract, and Fargate task definitions that honour it.

Secrets travel in a container definition's `secrets` (references to Secrets Manager or SSM
Parameter Store, resolved by ECS with the execution role) and never in `environment`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from migrate.config import register_secret
from migrate.errors import ConfigError

log = logging.getLogger(__name__)

IMAGES = ("db-migration", "s3-migration")
STREAM_PREFIX = "paas-migrate"
SHARD_ENV = "MIGRATE_S3_SHARD"


@dataclass(frozen=True)
class EnvVar:
    """One variable an image reads. `secret` ones belong in the task definition's `secrets`."""

    name: str
    secret: bool
    required: bool
    description: str


CONTRACT: dict[str, tuple[EnvVar, ...]] = {
    "db-migration": (
        EnvVar("MIGRATE_SOURCE_DATABASE_URL", True, True, "the PaaS database URL (with its password)"),
        EnvVar("MIGRATE_TARGET_DATABASE_URL", True, True, "the RDS database URL (with its password)"),
        EnvVar("MIGRATE_DB_JOBS", False, False, "parallel connections"),
        EnvVar("MIGRATE_DB_MODE", False, False, "parallel | stream"),
    ),
    "s3-migration": (
        EnvVar("MIGRATE_SOURCE_S3_URL", False, True, "s3://BUCKET[/PREFIX] on the PaaS"),
        EnvVar("MIGRATE_TARGET_S3_URL", False, True, "s3://BUCKET[/PREFIX] in AWS"),
        EnvVar("MIGRATE_SOURCE_AWS_ACCESS_KEY_ID", True, True, "the PaaS service key's access key id"),
        EnvVar("MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY", True, True, "the PaaS service key's secret key"),
        EnvVar("MIGRATE_S3_WORKERS", False, False, "parallel copies"),
        EnvVar("MIGRATE_S3_MODE", False, False, "auto | server-side | stream"),
        EnvVar("MIGRATE_S3_TARGET_JOURNAL", False, False, "0: keep no journal of verified objects in the target"),
        EnvVar("MIGRATE_S3_DROP_JOURNAL", False, False,
               "1 (command s3 verify): delete the copy journal from the target once everything matches"),
        EnvVar(SHARD_ENV, False, False, "I/N: copy only shard I of N (set by `ecs run --shards`)"),
    ),
}

# Fargate's valid task sizes: CPU units -> allowed memory (MiB).
_FARGATE_SIZES: dict[int, range] = {
    256: range(512, 2048 + 1, 512),
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
    8192: range(16384, 61440 + 1, 4096),
    16384: range(32768, 122880 + 1, 8192),
}
# 256 CPU allows 512, 1024 and 2048 only.
_FARGATE_256 = (512, 1024, 2048)

# (cpu, memory MiB, ephemeral storage GiB or None for Fargate's default 20)
DEFAULT_SIZES: dict[str, tuple[int, int, int | None]] = {
    # No dump on disk (the copy streams), so Fargate's default disk; CPU for the psql/pg_restore children.
    "db-migration": (2048, 4096, None),
    "s3-migration": (1024, 2048, None),
}

_SECRET_ARN = re.compile(
    r"^arn:aws[a-z-]*:(?:secretsmanager:[a-z0-9-]+:\d{12}:secret:\S+|ssm:[a-z0-9-]+:\d{12}:parameter/\S+)$"
)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AWS_SECRET_KEY = re.compile(r"^[A-Za-z0-9/+=]{40}$")
_AWS_KEY_ID = re.compile(r"^(?:AKIA|ASIA)[A-Z0-9]{16}$")
_SECRET_NAME = re.compile(r"(?i)PASSWORD|PASSWD|SECRET|TOKEN")


def looks_secret(name: str, value: str) -> str | None:
    """Why NAME=VALUE looks like a secret ('a URL with a password', ...), or None. Never returns the value."""
    named = _SECRET_NAME.search(name)
    if named:
        return f"its name contains {named.group(0).upper()}"
    if "://" in value:
        try:
            if urlsplit(value.strip()).password:
                return "it is a URL with a password"
        except ValueError:
            pass
    # Mixed case rules out hex digests (a commit SHA is 40 characters too).
    if _AWS_SECRET_KEY.match(value) and re.search(r"[a-z]", value) and re.search(r"[A-Z]", value):
        return "it has the shape of an AWS secret access key"
    if _AWS_KEY_ID.match(value) or name.upper().endswith("ACCESS_KEY_ID"):
        return "it is an AWS access key id (half of a key pair)"
    return None


def parse_pairs(pairs: Iterable[str], *, option: str) -> dict[str, str]:
    """['K=V', ...] -> {K: V}, refusing malformed items and repeated names (ConfigError)."""
    result: dict[str, str] = {}
    for item in pairs:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.match(name):
            # Never echo the item: a mistyped one may be a bare secret.
            shown = f" (got {name}=...)" if sep and re.fullmatch(r"[\w.-]{1,40}", name) else ""
            raise ConfigError(f"{option} needs NAME=VALUE with NAME a valid variable name{shown}",
                              hint=f"e.g. {option} MIGRATE_S3_WORKERS=32")
        if name in result:
            raise ConfigError(f"{option} {name} is given twice")
        result[name] = value
    return result


def parse_secrets(pairs: Iterable[str]) -> dict[str, str]:
    """--secret NAME=ARN items; each ARN must name a Secrets Manager secret or an SSM parameter."""
    secrets = parse_pairs(pairs, option="--secret")
    for name, arn in secrets.items():
        if not _SECRET_ARN.match(arn.strip()):
            raise ConfigError(
                f"--secret {name}: the value must be a Secrets Manager or SSM parameter ARN, not the secret itself",
                hint="arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME or arn:aws:ssm:REGION:ACCOUNT:parameter/NAME",
            )
        secrets[name] = arn.strip()
    return secrets


def refuse_secret_env(env: Mapping[str, str]) -> None:
    """ConfigError if any plain environment value looks like a secret (the value is never shown)."""
    for name, value in env.items():
        why = looks_secret(name, value)
        if why:
            register_secret(value)
            raise ConfigError(
                f"--env {name} looks like a secret ({why}); use --secret {name}=ARN instead",
                hint="store the value in Secrets Manager or SSM Parameter Store: a task definition never inlines "
                "secrets",
            )


def _check_size(cpu: int, memory: int, ephemeral: int | None) -> None:
    allowed = _FARGATE_256 if cpu == 256 else _FARGATE_SIZES.get(cpu)
    if allowed is None:
        raise ConfigError(f"--cpu {cpu} is not a Fargate size", hint="one of " + ", ".join(map(str, _FARGATE_SIZES)))
    if memory not in allowed:
        lo, hi = min(allowed), max(allowed)
        raise ConfigError(f"--memory {memory} does not fit --cpu {cpu} on Fargate",
                          hint=f"between {lo} and {hi} MiB in steps of {allowed[1] - allowed[0]}")
    if ephemeral is not None and not 21 <= ephemeral <= 200:
        raise ConfigError(f"--ephemeral-storage {ephemeral} GiB is outside Fargate's 21-200 GiB")


def _check_role(arn: str, option: str) -> None:
    if not _ROLE_ARN.match(arn or ""):
        raise ConfigError(f"{option} {arn!r} is not an IAM role ARN", hint="arn:aws:iam::ACCOUNT:role/NAME")


@dataclass(frozen=True)
class TaskDefinitionSpec:
    """Everything `ecs task-definition` needs. Building it checks nothing; `build_task_definition` does."""

    image: str  # db-migration | s3-migration
    image_uri: str
    execution_role: str
    task_role: str
    log_group: str
    region: str
    family: str | None = None
    cpu: int | None = None
    memory: int | None = None
    ephemeral_storage: int | None = None
    secrets: Mapping[str, str] | None = None
    env: Mapping[str, str] | None = None
    architecture: str = "X86_64"


def build_task_definition(spec: TaskDefinitionSpec) -> tuple[dict[str, Any], list[str]]:
    """The register_task_definition arguments for `spec`, and warnings about the contract.

    Raises ConfigError for anything ECS would refuse or that would inline a secret. Makes no request.
    """
    if spec.image not in CONTRACT:
        raise ConfigError(f"unknown image {spec.image!r}", hint="db-migration or s3-migration")
    if not spec.image_uri or any(c.isspace() for c in spec.image_uri):
        raise ConfigError("--image must be an image URI", hint="ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME@sha256:...")
    _check_role(spec.execution_role, "--execution-role")
    _check_role(spec.task_role, "--task-role")
    if not spec.log_group:
        raise ConfigError("--log-group is required", hint="the CloudWatch Logs group the task writes to")
    default_cpu, default_memory, default_disk = DEFAULT_SIZES[spec.image]
    cpu = spec.cpu or default_cpu
    memory = spec.memory or default_memory
    ephemeral = spec.ephemeral_storage if spec.ephemeral_storage is not None else default_disk
    _check_size(cpu, memory, ephemeral)
    env = dict(spec.env or {})
    secrets = dict(spec.secrets or {})
    refuse_secret_env(env)
    both = sorted(set(env) & set(secrets))
    if both:
        raise ConfigError(f"{both[0]} is given both as --env and as --secret", hint="give it once, as --secret")

    warnings: list[str] = []
    contract = {v.name: v for v in CONTRACT[spec.image]}
    for name in sorted(set(env) | set(secrets)):
        if name not in contract:
            warnings.append(f"{name} is not part of the {spec.image} image's contract (passed on as given)")
    for var in contract.values():
        if var.required and var.name not in env and var.name not in secrets:
            how = f"--secret {var.name}=ARN" if var.secret else f"--env {var.name}=... (or at run time)"
            warnings.append(f"{var.name} ({var.description}) is not set: give {how}")
    if spec.image == "s3-migration":
        pair = ("MIGRATE_SOURCE_AWS_ACCESS_KEY_ID", "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY")
        present = [n for n in pair if n in secrets or n in env]
        if len(present) == 1:
            raise ConfigError(f"{present[0]} is set without its partner", hint=f"give both {pair[0]} and {pair[1]}")

    container: dict[str, Any] = {
        "name": spec.image,
        "image": spec.image_uri,
        "essential": True,
        "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": spec.log_group,
                "awslogs-region": spec.region,
                "awslogs-stream-prefix": STREAM_PREFIX,
            },
        },
        # The tool cleans up on SIGTERM (ends its COPY, writes its manifest): give it Fargate's maximum.
        "stopTimeout": 120,
    }
    taskdef: dict[str, Any] = {
        "family": spec.family or spec.image,
        "taskRoleArn": spec.task_role,
        "executionRoleArn": spec.execution_role,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": str(cpu),
        "memory": str(memory),
        "runtimePlatform": {"operatingSystemFamily": "LINUX", "cpuArchitecture": spec.architecture},
        "containerDefinitions": [container],
    }
    if ephemeral is not None and ephemeral > 20:
        taskdef["ephemeralStorage"] = {"sizeInGiB": int(ephemeral)}
    for w in warnings:
        log.warning("task definition: %s", w)
    return taskdef, warnings


def register_task_definition(ecs: Any, taskdef: Mapping[str, Any]) -> str:
    """Register `taskdef` and return the new revision's ARN."""
    from migrate.ecs.aws import api_error, is_aws_error

    try:
        answer = ecs.register_task_definition(**taskdef)
    except Exception as exc:
        if is_aws_error(exc):
            raise api_error(f"registering task definition {taskdef.get('family')}", exc) from None
        raise
    arn = str(answer["taskDefinition"]["taskDefinitionArn"])
    log.info("registered %s", arn)
    return arn
