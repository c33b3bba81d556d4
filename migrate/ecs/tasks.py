"""Running a migration image as ECS Fargate tasks: start them, wait, follow their logs, exit codes.

One task behaves like a local command: its log lines arrive as they are written and its exit
code is ours. Several tasks (shards) are followed together; the worst result wins.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from migrate.config import redact
from migrate.ecs.aws import api_error, describe_error, error_code, is_aws_error
from migrate.ecs.logs import LogFollower, LogSource, check_log_group
from migrate.errors import ConfigError, ExitCode, MigrateError, PreflightError

log = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 3.0


class TaskStartFailed(MigrateError):
    """ECS refused to start a task (the run_task answer's `failures`, or an API error)."""


class TaskFailed(MigrateError):
    """A task stopped without an exit code from its container (image pull, secrets, capacity...)."""


class TaskTimeout(MigrateError):
    """A task did not stop within --timeout (it was then stopped, or left running)."""


_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<u>[smhd]?)")


def parse_duration(text: str) -> float:
    """'90m', '2h', '300s', '1h30m' or a number of seconds -> seconds (ConfigError otherwise)."""
    value = (text or "").strip().lower()
    pos, total = 0, 0.0
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    while pos < len(value):
        m = _DURATION.match(value, pos)
        if not m or (m.group("u") == "" and (pos > 0 or m.end() != len(value))):  # a bare number: seconds
            raise ConfigError(f"--timeout {text!r} is not a duration", hint="e.g. 300s, 90m, 2h or 1h30m")
        total += float(m.group("n")) * scale[m.group("u")]
        pos = m.end()
    if not value or total <= 0:
        raise ConfigError(f"--timeout {text!r} is not a positive duration", hint="e.g. 300s, 90m, 2h or 1h30m")
    return total


def format_duration(seconds: float) -> str:
    secs = max(0, round(seconds))
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


@dataclass(frozen=True)
class Network:
    """awsvpc placement of a Fargate task."""

    subnets: tuple[str, ...]
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False

    def to_api(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "subnets": list(self.subnets),
            "assignPublicIp": "ENABLED" if self.assign_public_ip else "DISABLED",
        }
        if self.security_groups:
            cfg["securityGroups"] = list(self.security_groups)
        return {"awsvpcConfiguration": cfg}


@dataclass(frozen=True)
class Container:
    """The container of a task definition we run: its name and where its logs go."""

    name: str
    log: LogSource | None
    task_definition_arn: str


@dataclass(frozen=True)
class TaskRequest:
    """One run_task call: which definition, where, and the container overrides."""

    cluster: str
    task_definition: str
    container: str
    network: Network
    env: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    label: str | None = None  # "shard 2/4"
    started_by: str = "paas-migrate"

    def to_api(self) -> dict[str, Any]:
        override: dict[str, Any] = {"name": self.container}
        if self.env:
            override["environment"] = [{"name": k, "value": v} for k, v in self.env.items()]
        if self.command is not None:
            override["command"] = list(self.command)
        return {
            "cluster": self.cluster,
            "taskDefinition": self.task_definition,
            "launchType": "FARGATE",
            "count": 1,
            "startedBy": self.started_by,
            "networkConfiguration": self.network.to_api(),
            "overrides": {"containerOverrides": [override]},
        }


def _aws_call(what: str, func: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return func(**kwargs)
    except Exception as exc:
        if is_aws_error(exc):
            raise api_error(what, exc) from None
        raise


def resolve_container(ecs: Any, task_definition: str, container: str | None, image: str) -> Container:
    """Find the container to override and follow in `task_definition`. Read-only."""
    try:
        answer = ecs.describe_task_definition(taskDefinition=task_definition)
    except Exception as exc:
        if error_code(exc) in ("ClientException", "InvalidParameterException"):
            raise ConfigError(
                f"task definition {task_definition} was not found ({describe_error(exc)})",
                hint=f"register it with `paas-migrate ecs task-definition {image} ... --register`, "
                "or check --task-definition and --region",
            ) from None
        if is_aws_error(exc):
            raise api_error(f"describing task definition {task_definition}", exc) from None
        raise
    td = answer["taskDefinition"]
    defs = td.get("containerDefinitions", [])
    names = [c.get("name", "") for c in defs]
    if container:
        chosen = next((c for c in defs if c.get("name") == container), None)
        if chosen is None:
            raise ConfigError(f"task definition {task_definition} has no container {container!r}",
                              hint="its containers: " + ", ".join(names))
    elif len(defs) == 1:
        chosen = defs[0]
    else:
        chosen = next((c for c in defs if c.get("name") == image), None)
        if chosen is None:
            raise ConfigError(f"task definition {task_definition} has several containers",
                              hint="give --container (one of " + ", ".join(names) + ")")
    compat = td.get("requiresCompatibilities") or td.get("compatibilities") or []
    if "FARGATE" not in compat or td.get("networkMode") != "awsvpc":
        raise ConfigError(f"task definition {task_definition} is not a Fargate (awsvpc) definition",
                          hint=f"create one with `paas-migrate ecs task-definition {image} ...`")
    return Container(chosen["name"], _log_source(chosen), str(td.get("taskDefinitionArn", task_definition)))


def _log_source(container: Mapping[str, Any]) -> LogSource | None:
    cfg = container.get("logConfiguration") or {}
    opts = cfg.get("options") or {}
    if cfg.get("logDriver") != "awslogs" or not opts.get("awslogs-group"):
        log.warning("container %s does not log to CloudWatch (awslogs); its output cannot be followed",
                    container.get("name"))
        return None
    if not opts.get("awslogs-stream-prefix"):
        log.warning("container %s has no awslogs-stream-prefix; its log stream cannot be found",
                    container.get("name"))
        return None
    return LogSource(
        group=opts["awslogs-group"],
        region=opts.get("awslogs-region"),
        stream_prefix=opts["awslogs-stream-prefix"],
        create_group=str(opts.get("awslogs-create-group", "")).lower() == "true",
    )


def preflight_logs(logs: Any, source: LogSource) -> None:
    """PreflightError if the log group is missing (a Fargate task then fails to start). Read-only."""
    if source.create_group or check_log_group(logs, source):
        return
    region = source.region or "the default region"
    raise PreflightError(
        f"log group {source.group} does not exist in {region}; the task could not write its logs",
        hint=f"create it (aws logs create-log-group --log-group-name {source.group}"
        f"{' --region ' + source.region if source.region else ''}) or fix awslogs-group in the task definition",
    )


def start_task(ecs: Any, request: TaskRequest) -> str:
    """run_task once; return the task ARN. TaskStartFailed on `failures` or an API error."""
    what = f" ({request.label})" if request.label else ""
    try:
        answer = ecs.run_task(**request.to_api())
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        if not hasattr(exc, "response"):  # no answer from ECS: credentials, endpoint
            raise api_error(f"starting the task{what}", exc) from None
        hint = None
        if error_code(exc) == "ClusterNotFoundException":
            hint = "check --cluster and --region"
        raise TaskStartFailed(f"ECS refused to start the task{what}: {describe_error(exc)}", hint=hint) from None
    failures = answer.get("failures") or []
    tasks = answer.get("tasks") or []
    if failures or not tasks:
        reasons = "; ".join(
            " ".join(str(f.get(k)) for k in ("reason", "detail") if f.get(k)) for f in failures
        ) or "no task and no reason in the answer"
        raise TaskStartFailed(
            f"ECS did not start the task{what}: {redact(reasons)}",
            hint="RESOURCE:* means no capacity (retry later); MISSING means a wrong cluster or task definition",
        )
    arn = str(tasks[0]["taskArn"])
    log.info("started %s%s", arn, what)
    return arn


def stop_task(ecs: Any, cluster: str, arn: str, reason: str) -> bool:
    """stop_task, logging (not raising) a failure: it is called on the way out."""
    try:
        ecs.stop_task(cluster=cluster, task=arn, reason=reason[:255])
        log.warning("stopped task %s: %s", arn.rsplit("/", 1)[-1], reason)
        return True
    except Exception as exc:
        log.error("could not stop task %s: %s", arn, describe_error(exc))
        return False


@dataclass
class TaskState:
    """What we know about one started task. Updated by `wait_for_tasks`."""

    arn: str
    container: str
    label: str | None = None
    follower: LogFollower | None = None
    started: float = 0.0
    status: str = "PROVISIONING"
    exit_code: int | None = None
    stopped_reason: str = ""
    stop_code: str = ""
    container_reason: str = ""
    aws_seconds: float | None = None
    stopped_seen_at: float | None = None
    finished: float | None = None
    done: bool = False
    timed_out: bool = False
    left_running: bool = False
    stopped_by_us: bool = False
    lost: str = ""  # describe_tasks reported a failure for it
    timeout: float | None = None
    quiet: int = 0

    @property
    def task_id(self) -> str:
        return self.arn.rsplit("/", 1)[-1]

    @property
    def seconds(self) -> float:
        if self.aws_seconds is not None:
            return self.aws_seconds
        end = self.finished if self.finished is not None else self.started
        return max(0.0, end - self.started)

    def failure(self) -> MigrateError | None:
        """Why this task has no exit code of its own (None when it has one)."""
        tid = self.task_id
        if self.timed_out:
            limit = format_duration(self.timeout or 0)
            if self.left_running:
                return TaskTimeout(f"task {tid} did not stop within {limit}; it was left running (--on-timeout leave)",
                                   hint=f"watch it with: aws ecs describe-tasks --tasks {self.arn}")
            return TaskTimeout(f"task {tid} did not stop within {limit}; it was stopped",
                               hint="give a longer --timeout, or --on-timeout leave")
        if self.exit_code is not None:
            return None
        if self.lost:
            return TaskFailed(f"ECS lost track of task {tid}: {self.lost}")
        reason = " — ".join(r for r in (self.container_reason, self.stopped_reason) if r)
        if "CannotPullContainerError" in reason:
            return TaskFailed(
                f"task {tid} could not pull its image: {reason}",
                hint="check the image URI, that the execution role may pull from ECR, and that the subnets reach "
                "ECR (NAT gateway, VPC endpoints, or --assign-public-ip in a public subnet)",
            )
        if "ResourceInitializationError" in reason:
            return TaskFailed(
                f"task {tid} could not be set up: {reason}",
                hint="the execution role must read the task definition's secrets and write its log group, "
                "and the subnets must reach Secrets Manager/SSM and CloudWatch Logs",
            )
        code = f"{self.stop_code}: " if self.stop_code else ""
        return TaskFailed(f"task {tid} stopped without an exit code: {code}{reason or 'no reason given'}")

    def result_code(self) -> int:
        """The container's exit code as is (3 stays 3); 1 when it has none."""
        if self.failure() is not None or self.exit_code is None:
            return int(ExitCode.FAILURE)
        return int(self.exit_code)


class TaskListener(Protocol):
    def on_log(self, task: TaskState, message: str) -> None: ...

    def on_stopped(self, task: TaskState) -> None: ...


class NullListener:
    def on_log(self, task: TaskState, message: str) -> None:
        pass

    def on_stopped(self, task: TaskState) -> None:
        pass


@dataclass
class WaitOptions:
    """How to wait. `sleep` and `clock` are injectable so tests need not wait."""

    interval: float = DEFAULT_POLL_SECONDS
    timeout: float | None = None
    on_timeout: str = "stop"  # stop | leave
    stop_on_interrupt: bool = True
    quiet_polls: int = 2  # caught-up log polls after STOPPED before we call the stream drained
    drain_limit: float = 120.0  # never read a stopped task's logs for longer than this
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


@dataclass
class RunResult:
    tasks: list[TaskState]
    sharded: bool = False
    interrupted: bool = False
    timed_out: bool = False

    def exit_code(self) -> int:
        """One task: its exit code. Shards: the worst — 130 if interrupted, then 1 over 3 over 0."""
        if self.interrupted:
            return int(ExitCode.INTERRUPTED)
        codes = [t.result_code() for t in self.tasks]
        if not self.sharded and len(codes) == 1:
            return codes[0]
        if any(c not in (0, 3) for c in codes):
            return int(ExitCode.FAILURE)
        return 3 if 3 in codes else 0


def start_tasks(ecs: Any, requests: Sequence[TaskRequest], *, on_started: Callable[[TaskRequest, str], None]
                | None = None) -> list[str]:
    """Start every request in order. If one cannot start, stop the ones already started and raise:
    a partial set of shards would never cover the whole bucket."""
    arns: list[str] = []
    try:
        for req in requests:
            arn = start_task(ecs, req)
            arns.append(arn)
            if on_started is not None:
                on_started(req, arn)
    except BaseException:
        for req, arn in zip(requests, arns, strict=False):
            stop_task(ecs, req.cluster, arn, "paas-migrate: another task of this run could not start")
        raise
    return arns


def _describe(ecs: Any, cluster: str, states: Sequence[TaskState]) -> None:
    by_arn = {t.arn: t for t in states}
    arns = list(by_arn)
    for i in range(0, len(arns), 100):  # describe_tasks takes at most 100 tasks
        answer = _aws_call("describing tasks", ecs.describe_tasks, cluster=cluster, tasks=arns[i : i + 100])
        for task in answer.get("tasks", []):
            t = by_arn.get(task.get("taskArn", ""))
            if t is None:
                continue
            t.status = str(task.get("lastStatus") or t.status)
            if t.status != "STOPPED":
                continue
            t.stopped_reason = str(task.get("stoppedReason") or "")
            t.stop_code = str(task.get("stopCode") or "")
            containers = task.get("containers") or []
            c = next((x for x in containers if x.get("name") == t.container), None)
            if c is None and len(containers) == 1:
                c = containers[0]
            if c is not None:
                t.exit_code = c.get("exitCode")
                t.container_reason = str(c.get("reason") or "")
            created, stopped = task.get("createdAt") or task.get("startedAt"), task.get("stoppedAt")
            if created is not None and stopped is not None and hasattr(stopped, "timestamp"):
                t.aws_seconds = max(0.0, stopped.timestamp() - created.timestamp())
        for f in answer.get("failures", []):
            t = by_arn.get(f.get("arn", ""))
            if t is not None:
                t.status, t.lost = "STOPPED", " ".join(str(f.get(k)) for k in ("reason", "detail") if f.get(k))


def _read_logs(t: TaskState, listener: TaskListener) -> tuple[int, bool]:
    if t.follower is None:
        return 0, True
    messages, caught_up = t.follower.poll()
    for m in messages:
        listener.on_log(t, m)
    return len(messages), caught_up


def wait_for_tasks(
    ecs: Any, cluster: str, tasks: Sequence[TaskState], options: WaitOptions,
    listener: TaskListener | None = None, *, sharded: bool = False,
) -> RunResult:
    """Poll until every task has STOPPED and its log stream is drained, printing nothing.

    Log lines go to `listener.on_log` in the stream's order, each once. On timeout the tasks still
    running are stopped or left (options.on_timeout); on Ctrl-C/SIGTERM they are stopped when
    options.stop_on_interrupt. Never raises for a task's own failure: see TaskState.failure().
    """
    listener = listener or NullListener()
    clock = options.clock
    result = RunResult(list(tasks), sharded=sharded)
    start = clock()
    for t in tasks:
        t.started = t.started or start
        t.timeout = options.timeout
    try:
        while True:
            running = [t for t in tasks if t.status != "STOPPED"]
            if running:
                _describe(ecs, cluster, running)
            now = clock()
            for t in tasks:
                if t.done:
                    continue
                count, caught_up = _read_logs(t, listener)
                if t.status != "STOPPED":
                    continue
                if t.stopped_seen_at is None:
                    t.stopped_seen_at = now
                    t.finished = now
                # Events can still arrive after STOPPED (the log driver flushes late): read until
                # the stream has been caught up and silent for `quiet_polls` polls in a row.
                t.quiet = t.quiet + 1 if (count == 0 and caught_up) else 0
                drained = t.quiet >= options.quiet_polls or now - t.stopped_seen_at > options.drain_limit
                if t.follower is None or drained:
                    t.done = True
                    listener.on_stopped(t)
            if all(t.done for t in tasks):
                break
            if options.timeout is not None and clock() - start >= options.timeout:
                _time_out(ecs, cluster, tasks, options, listener)
                result.timed_out = True
                break
            delay = options.interval
            if options.timeout is not None:
                delay = max(0.0, min(delay, options.timeout - (clock() - start)))
            options.sleep(delay)
    except KeyboardInterrupt:
        result.interrupted = True
        left = [t for t in tasks if t.status != "STOPPED"]
        for t in left:
            t.finished = clock()
            if options.stop_on_interrupt:
                t.stopped_by_us = stop_task(ecs, cluster, t.arn, "paas-migrate was interrupted (Ctrl-C or SIGTERM)")
            else:
                t.left_running = True
    return result


def _time_out(ecs: Any, cluster: str, tasks: Sequence[TaskState], options: WaitOptions,
              listener: TaskListener) -> None:
    now = options.clock()
    limit = format_duration(options.timeout or 0)
    for t in tasks:
        if t.done:
            continue
        if t.status == "STOPPED":  # stopped in time; only its log tail was still being read
            t.done = True
            listener.on_stopped(t)
            continue
        t.timed_out, t.finished = True, now
        if options.on_timeout == "stop":
            t.stopped_by_us = stop_task(ecs, cluster, t.arn, f"paas-migrate --timeout {limit} reached")
        else:
            t.left_running = True
            log.warning("task %s is still running after %s; left running as asked", t.task_id, limit)
        _read_logs(t, listener)  # whatever arrived since the last poll
        t.done = True
        listener.on_stopped(t)
