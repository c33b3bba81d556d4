"""`paas-migrate ecs run|task-definition`: the migration images as ECS Fargate tasks."""

from __future__ import annotations

import json
import logging
import shlex
import threading
import time
from collections.abc import Iterable
from typing import Any

import click

from migrate.cli.common import app, echo_json, output_options
from migrate.config import redact, register_secret
from migrate.ecs.aws import EcsClients
from migrate.ecs.logs import LogFollower
from migrate.ecs.taskdef import (
    IMAGES,
    SHARD_ENV,
    TaskDefinitionSpec,
    build_task_definition,
    looks_secret,
    parse_pairs,
    parse_secrets,
    register_task_definition,
)
from migrate.ecs.tasks import (
    DEFAULT_POLL_SECONDS,
    Network,
    RunResult,
    TaskRequest,
    TaskState,
    WaitOptions,
    format_duration,
    parse_duration,
    preflight_logs,
    resolve_container,
    start_tasks,
    wait_for_tasks,
)
from migrate.errors import ConfigError, ConnectionFailed, Interrupted

log = logging.getLogger(__name__)

IMAGE_CHOICE = click.Choice(list(IMAGES))
MAX_SHARDS = 100


def make_clients(region: str | None, endpoint_url: str | None) -> EcsClients:
    """The AWS clients a command uses (tests replace this to stub ECS)."""
    return EcsClients(region=region, endpoint_url=endpoint_url)


def poll_sleep(seconds: float) -> None:
    """The pause between polls (tests replace it to act between two polls)."""
    time.sleep(seconds)


def poll_clock() -> float:
    """The clock timeouts are measured with (tests replace it along with poll_sleep)."""
    return time.monotonic()


def _split_list(values: Iterable[str]) -> tuple[str, ...]:
    # Repeated options, and MIGRATE_ECS_SUBNETS="subnet-a,subnet-b" or space-separated, all work.
    out: list[str] = []
    for v in values:
        out.extend(x for x in v.replace(",", " ").split() if x)
    return tuple(dict.fromkeys(out))


def _default_region(region: str | None) -> str:
    if region:
        return region
    import boto3

    found = boto3.session.Session().region_name
    if not found:
        raise ConfigError("no AWS region", hint="give --region or set MIGRATE_ECS_REGION or AWS_REGION")
    return str(found)


def _aws_options(func):
    func = click.option(
        "--endpoint-url", metavar="URL", envvar="MIGRATE_ECS_ENDPOINT_URL", show_envvar=True,
        help="ECS and CloudWatch Logs endpoint (a local AWS API such as moto; default: AWS).",
    )(func)
    func = click.option(
        "--region", metavar="REGION", envvar="MIGRATE_ECS_REGION", show_envvar=True,
        help="AWS region (default: AWS_REGION / the AWS profile's region).",
    )(func)
    return func


@click.group(name="ecs")
def command() -> None:
    """Run the migration images as ECS tasks, follow their logs, return their exit code."""


# ---------------------------------------------------------------------------------------------- run


class _Printer:
    """Prints task log lines as they arrive (stdout; stderr when stdout carries JSON)."""

    def __init__(self, *, to_stderr: bool, prefixed: bool) -> None:
        self.to_stderr = to_stderr
        self.prefixed = prefixed
        self._lock = threading.Lock()

    def on_log(self, task: TaskState, message: str) -> None:
        prefix = f"[{task.label}] " if self.prefixed and task.label else ""
        with self._lock:
            click.echo(redact(prefix + message), err=self.to_stderr)

    def on_stopped(self, task: TaskState) -> None:
        failure = task.failure()
        what = f"exit code {task.exit_code}" if failure is None else "failed"
        log.info("task %s stopped: %s", task.task_id, what)


def _secret_env_warnings(env: dict[str, str]) -> list[str]:
    warnings = []
    for name, value in env.items():
        why = looks_secret(name, value)
        if why:
            register_secret(value)  # from here on, every output path masks it
            warnings.append(
                f"--env {name} looks like a secret ({why}): task overrides are visible to anyone who can describe "
                f"the task; put it in the task definition's secrets (ecs task-definition --secret {name}=ARN)"
            )
    return warnings


def _requests(
    image: str, cluster: str, task_definition: str, container: str, network: Network, env: dict[str, str],
    command_args: tuple[str, ...] | None, shards: int | None,
) -> list[TaskRequest]:
    if shards is None:
        return [TaskRequest(cluster, task_definition, container, network, env, command_args)]
    return [
        TaskRequest(
            cluster, task_definition, container, network, {**env, SHARD_ENV: f"{i}/{shards}"}, command_args,
            label=f"shard {i}/{shards}", started_by=f"paas-migrate-shard-{i}-of-{shards}",
        )
        for i in range(1, shards + 1)
    ]


def _task_dict(t: TaskState) -> dict[str, Any]:
    failure = t.failure()
    return {
        "arn": t.arn,
        "task_id": t.task_id,
        "shard": t.label.split(" ", 1)[1] if t.label else None,
        "status": t.status,
        "exit_code": t.exit_code,
        "seconds": round(t.seconds, 1),
        "stopped_reason": t.stopped_reason or None,
        "error": failure.message if failure is not None else None,
        "stopped_by_us": t.stopped_by_us,
        "left_running": t.left_running,
    }


def _summary_lines(result: RunResult) -> list[str]:
    rows = [("shard" if result.sharded else "task", "task id", "exit code", "duration", "note")]
    for t in result.tasks:
        failure = t.failure()
        note = failure.message if failure is not None else ("stopped by us" if t.stopped_by_us else "")
        if result.interrupted and not t.exit_code and failure is None:
            note = "stopped (interrupted)" if t.stopped_by_us else ("left running" if t.left_running else note)
        rows.append((
            (t.label or "").removeprefix("shard ") or "-",
            t.task_id,
            "-" if t.exit_code is None else str(t.exit_code),
            format_duration(t.seconds),
            note,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]


@command.command(name="run")
@click.argument("image", type=IMAGE_CHOICE)
@click.option("--cluster", required=True, envvar="MIGRATE_ECS_CLUSTER", show_envvar=True,
              help="ECS cluster name or ARN.")
@click.option("--task-definition", "task_definition", metavar="TD", envvar="MIGRATE_ECS_TASK_DEFINITION",
              show_envvar=True, help="Task definition family[:revision] or ARN (default: the image name, latest).")
@click.option("--container", metavar="NAME", help="Container to override and follow (default: the only one, "
              "or the one named after the image).")
@click.option("--subnet", "subnets", multiple=True, metavar="SUBNET", envvar="MIGRATE_ECS_SUBNETS",
              show_envvar=True, help="Subnet ID for the task (repeatable, or comma-separated).")
@click.option("--security-group", "security_groups", multiple=True, metavar="SG", envvar="MIGRATE_ECS_SECURITY_GROUPS",
              show_envvar=True, help="Security group ID (repeatable, or comma-separated; default: the VPC's).")
@click.option("--assign-public-ip", is_flag=True, envvar="MIGRATE_ECS_ASSIGN_PUBLIC_IP", show_envvar=True,
              help="Give the task a public IP (a public subnet without NAT needs it to reach ECR).")
@click.option("--env", "env_pairs", multiple=True, metavar="K=V",
              help="Environment override (repeatable). Not for secrets: those belong in the task definition.")
@click.option("--command", "command_text", metavar="'ARGS'",
              help="Command override, split like a shell would, e.g. --command 's3 copy --workers 32'.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the task to stop and exit with its exit code, or print the ARN and return.")
@click.option("--timeout", metavar="DURATION", envvar="MIGRATE_ECS_TIMEOUT", show_envvar=True,
              help="Give up waiting after this long, e.g. 300s, 90m, 2h (default: wait as long as it runs).")
@click.option("--on-timeout", type=click.Choice(["stop", "leave"]), default="stop", show_default=True,
              help="On --timeout: stop the task(s), or leave them running.")
@click.option("--stop-on-interrupt/--no-stop-on-interrupt", default=True, show_default=True,
              help="On Ctrl-C or SIGTERM while waiting: stop the task(s) (asks nothing) and exit 130.")
@click.option("--shards", type=click.IntRange(1, MAX_SHARDS), default=None,
              help=f"s3-migration only: start N tasks, task I with {SHARD_ENV}=I/N, and follow them together.")
@click.option("--poll-interval", type=click.FloatRange(0.0), default=DEFAULT_POLL_SECONDS,
              envvar="MIGRATE_ECS_POLL_INTERVAL", hidden=True,
              help="Seconds between describe_tasks / get_log_events polls.")
@_aws_options
@output_options
@click.pass_context
def run_cmd(
    ctx: click.Context, image: str, cluster: str, task_definition: str | None, container: str | None,
    subnets: tuple[str, ...], security_groups: tuple[str, ...], assign_public_ip: bool, env_pairs: tuple[str, ...],
    command_text: str | None, wait: bool, timeout: str | None, on_timeout: str, stop_on_interrupt: bool,
    shards: int | None, poll_interval: float, region: str | None, endpoint_url: str | None,
) -> int:
    """Start IMAGE as a Fargate task, follow its CloudWatch logs, and exit with its exit code.

    With --shards N (s3-migration), N tasks each copy one shard of the bucket; the exit code is the
    worst shard's (1 over 3 over 0), and a per-shard summary ends the output.
    """
    as_json = app(ctx).json
    if shards is not None and image != "s3-migration":
        raise ConfigError("--shards applies to s3-migration only")
    env = parse_pairs(env_pairs, option="--env")
    if shards is not None and SHARD_ENV in env:
        raise ConfigError(f"give either --shards or --env {SHARD_ENV}=..., not both")
    subnet_ids, group_ids = _split_list(subnets), _split_list(security_groups)
    if not subnet_ids:
        raise ConfigError("no subnet for the task", hint="give --subnet SUBNET or set MIGRATE_ECS_SUBNETS")
    try:
        command_args = tuple(shlex.split(command_text)) if command_text is not None else None
    except ValueError as exc:
        raise ConfigError(f"--command cannot be split: {exc}") from None
    timeout_s = parse_duration(timeout) if timeout else None
    warnings = _secret_env_warnings(env)
    for w in warnings:  # once, on stderr (stdout carries the task's own output, or JSON)
        click.echo(redact(f"warning: {w}"), err=True)

    clients = make_clients(region, endpoint_url)
    td = task_definition or image
    target = resolve_container(clients.ecs, td, container, image)
    if target.log is not None:
        try:
            preflight_logs(clients.logs(target.log.region), target.log)
        except ConnectionFailed as exc:
            if wait:
                raise
            log.warning("could not check the log group: %s", exc)
    network = Network(subnet_ids, group_ids, assign_public_ip)
    requests = _requests(image, cluster, td, target.name, network, env, command_args, shards)

    def started(req: TaskRequest, arn: str) -> None:
        click.echo(f"[{req.label}] {arn}" if req.label else arn, err=as_json)

    arns = start_tasks(clients.ecs, requests, on_started=started)
    states = []
    for req, arn in zip(requests, arns, strict=True):
        state = TaskState(arn=arn, container=target.name, label=req.label)
        if target.log is not None:
            state.follower = LogFollower(clients.logs(target.log.region), target.log.group,
                                         target.log.stream_for(target.name, state.task_id))
        states.append(state)
    if not wait:
        if as_json:
            echo_json({"image": image, "cluster": cluster, "task_definition": target.task_definition_arn,
                       "tasks": [{"arn": s.arn, "task_id": s.task_id, "shard": s.label} for s in states],
                       "warnings": warnings})
        return 0

    options = WaitOptions(interval=poll_interval, timeout=timeout_s, on_timeout=on_timeout,
                          stop_on_interrupt=stop_on_interrupt, sleep=lambda s: poll_sleep(s),
                          clock=lambda: poll_clock())
    printer = _Printer(to_stderr=as_json, prefixed=shards is not None)
    result = wait_for_tasks(clients.ecs, cluster, states, options, printer, sharded=shards is not None)
    code = result.exit_code()
    if as_json:
        echo_json({"image": image, "cluster": cluster, "task_definition": target.task_definition_arn,
                   "exit_code": code, "interrupted": result.interrupted, "timed_out": result.timed_out,
                   "tasks": [_task_dict(t) for t in result.tasks], "warnings": warnings})
    else:
        for line in _summary_lines(result):
            click.echo(redact(line))
    if result.interrupted:
        stopped = [t.task_id for t in result.tasks if t.stopped_by_us]
        left = [t.task_id for t in result.tasks if t.left_running]
        what = f"stopped task(s) {', '.join(stopped)}" if stopped else "no task was running any more"
        if left:
            what = f"left task(s) {', '.join(left)} running (--no-stop-on-interrupt)"
        raise Interrupted(f"interrupted while waiting; {what}")
    failures = [(t, f) for t in result.tasks if (f := t.failure()) is not None]
    if not result.sharded and failures:
        raise failures[0][1]
    for t, f in failures:
        click.echo(redact(f"error: {t.label}: {f}"), err=True)
    if result.sharded and code:
        bad = [t for t in result.tasks if t.result_code() != 0]
        click.echo(f"{len(bad)} of {len(result.tasks)} shards did not succeed", err=True)
    return code


# ---------------------------------------------------------------------------------- task-definition


@command.command(name="task-definition")
@click.argument("image", type=IMAGE_CHOICE)
@click.option("--image", "image_uri", required=True, metavar="URI", envvar="MIGRATE_ECS_IMAGE", show_envvar=True,
              help="Image URI, ideally pinned by digest (…/s3-migration@sha256:…).")
@click.option("--execution-role", required=True, metavar="ARN", envvar="MIGRATE_ECS_EXECUTION_ROLE",
              show_envvar=True, help="Role ECS uses to pull the image, read the secrets and write the logs.")
@click.option("--task-role", required=True, metavar="ARN", envvar="MIGRATE_ECS_TASK_ROLE", show_envvar=True,
              help="Role the migration runs as (e.g. write access to the target bucket).")
@click.option("--log-group", required=True, metavar="GROUP", envvar="MIGRATE_ECS_LOG_GROUP", show_envvar=True,
              help="CloudWatch Logs group for the awslogs driver (it must exist).")
@click.option("--family", metavar="NAME", help="Task definition family (default: the image name).")
@click.option("--cpu", type=int, default=None, help="Fargate CPU units (default: 2048 db, 1024 s3).")
@click.option("--memory", type=int, default=None, help="Fargate memory in MiB (default: 4096 db, 2048 s3).")
@click.option("--ephemeral-storage", type=int, default=None, metavar="GIB",
              help="Task disk in GiB, 21-200 (default: Fargate's 20; nothing is dumped to disk).")
@click.option("--architecture", type=click.Choice(["X86_64", "ARM64"]), default="X86_64", show_default=True,
              help="CPU architecture the image was built for.")
@click.option("--secret", "secret_pairs", multiple=True, metavar="NAME=ARN",
              help="Environment variable from a Secrets Manager secret or SSM parameter ARN (repeatable).")
@click.option("--env", "env_pairs", multiple=True, metavar="K=V",
              help="Plain environment variable (repeatable); secret-looking values are refused.")
@click.option("--register", is_flag=True, help="Register it with ECS and print its ARN (default: print the JSON).")
@_aws_options
@output_options
@click.pass_context
def task_definition_cmd(
    ctx: click.Context, image: str, image_uri: str, execution_role: str, task_role: str, log_group: str,
    family: str | None, cpu: int | None, memory: int | None, ephemeral_storage: int | None, architecture: str,
    secret_pairs: tuple[str, ...], env_pairs: tuple[str, ...], register: bool, region: str | None,
    endpoint_url: str | None,
) -> int:
    """Print (or --register) a Fargate task definition for IMAGE that follows its environment contract.

    db-migration reads MIGRATE_SOURCE_DATABASE_URL and MIGRATE_TARGET_DATABASE_URL (secrets),
    MIGRATE_DB_JOBS, MIGRATE_DB_MODE. s3-migration reads MIGRATE_SOURCE_S3_URL, MIGRATE_TARGET_S3_URL,
    MIGRATE_SOURCE_AWS_ACCESS_KEY_ID and MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY (secrets: the PaaS
    service key), MIGRATE_S3_WORKERS, MIGRATE_S3_MODE, MIGRATE_S3_SHARD. Secrets are references to
    Secrets Manager or SSM (--secret NAME=ARN), never values.
    """
    env = parse_pairs(env_pairs, option="--env")
    spec = TaskDefinitionSpec(
        image=image, image_uri=image_uri, execution_role=execution_role, task_role=task_role,
        log_group=log_group, region=_default_region(region), family=family, cpu=cpu, memory=memory,
        ephemeral_storage=ephemeral_storage, secrets=parse_secrets(secret_pairs), env=env,
        architecture=architecture,
    )
    taskdef, _warnings = build_task_definition(spec)
    if not register:
        # cli-input-json shape: `aws ecs register-task-definition --cli-input-json file://...` takes it.
        click.echo(redact(json.dumps(taskdef, indent=2)))
        return 0
    arn = register_task_definition(make_clients(spec.region, endpoint_url).ecs, taskdef)
    if app(ctx).json:
        echo_json({"taskDefinitionArn": arn, "taskDefinition": taskdef})
    else:
        click.echo(arn)
    return 0
