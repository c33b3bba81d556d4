"""Pure logic of `ecs`: durations, secret detection, exit-code ranking, the log reader's paging."""

from __future__ import annotations

from typing import Any

import pytest

from migrate.ecs.logs import LogFollower
from migrate.ecs.taskdef import TaskDefinitionSpec, build_task_definition, looks_secret, parse_pairs
from migrate.ecs.tasks import RunResult, TaskState, format_duration, parse_duration
from migrate.errors import ConfigError


@pytest.mark.parametrize(("text", "seconds"), [
    ("300s", 300), ("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("45", 45), ("1.5h", 5400), ("1d", 86400),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "abc", "10x", "5 minutes", "m", "10m5"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 59.6, 66, 3725)] == ["0s", "1m00s", "1m06s", "1h02m05s"]


@pytest.mark.parametrize(("name", "value", "why"), [
    ("MIGRATE_SOURCE_DATABASE_URL", "postgresql://u:pw1234@h/db", "URL with a password"),
    ("X", "https://user:tok@example.com/x", "URL with a password"),
    ("MIGRATE_TARGET_PASSWORD", "anything", "PASSWORD"),
    ("GITHUB_TOKEN", "x", "TOKEN"),
    ("my_secret_thing", "x", "SECRET"),
    ("KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS secret access key"),
    ("MIGRATE_SOURCE_AWS_ACCESS_KEY_ID", "anything", "access key id"),
    ("ID", "AKIA" + "IOSFODNN7EXAMPLE", "access key id"),  # AWS's documented example, split for scanners
])
def test_looks_secret(name: str, value: str, why: str) -> None:
    reason = looks_secret(name, value)
    assert reason is not None and why in reason
    assert value not in reason


@pytest.mark.parametrize(("name", "value"), [
    ("MIGRATE_SOURCE_DATABASE_URL", "postgresql://app@db.internal:5432/app"),  # no password: IAM auth
    ("MIGRATE_SOURCE_S3_URL", "s3://bucket/prefix"),
    ("GIT_SHA", "3f786850e387550fdab836ed7e6dc881de23001b"),  # 40 hex characters, not a key
    ("MIGRATE_S3_WORKERS", "64"),
])
def test_not_secret(name: str, value: str) -> None:
    assert looks_secret(name, value) is None


def test_parse_pairs_never_echoes_a_malformed_item() -> None:
    with pytest.raises(ConfigError) as err:
        parse_pairs(["postgresql://u:leaky-pw@h/db"], option="--env")
    assert "leaky-pw" not in str(err.value)
    with pytest.raises(ConfigError, match="given twice"):
        parse_pairs(["A=1", "A=2"], option="--env")
    assert parse_pairs(["A=1=2", "B="], option="--env") == {"A": "1=2", "B": ""}


def test_task_definition_refuses_a_lone_key_id_and_duplicates() -> None:
    base = dict(image="s3-migration", image_uri="repo/x:1", execution_role="arn:aws:iam::123456789012:role/e",
                task_role="arn:aws:iam::123456789012:role/t", log_group="g", region="eu-west-2")
    arn = "arn:aws:ssm:eu-west-2:123456789012:parameter/k"
    with pytest.raises(ConfigError, match="without its partner"):
        build_task_definition(TaskDefinitionSpec(**base, secrets={"MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": arn}))
    with pytest.raises(ConfigError, match="both as --env and as --secret"):
        build_task_definition(
            TaskDefinitionSpec(**base, secrets={"MIGRATE_S3_MODE": arn}, env={"MIGRATE_S3_MODE": "x"})
        )
    with pytest.raises(ConfigError, match="not an IAM role ARN"):
        build_task_definition(TaskDefinitionSpec(**{**base, "task_role": "admin"}))


def _task(code: int | None, reason: str = "") -> TaskState:
    return TaskState(arn="arn:aws:ecs:r:1:task/c/abc", container="s3-migration", status="STOPPED",
                     exit_code=code, stopped_reason=reason)


@pytest.mark.parametrize(("codes", "expected"), [
    ([0, 0], 0), ([0, 3], 3), ([3, 1, 0], 1), ([0, 137], 1), ([0, None], 1), ([3, 3], 3),
])
def test_shards_worst_exit_code(codes: list[int | None], expected: int) -> None:
    assert RunResult([_task(c, "stopped") for c in codes], sharded=True).exit_code() == expected


def test_single_task_exit_code_is_its_own_and_interrupt_wins() -> None:
    assert RunResult([_task(3)]).exit_code() == 3
    assert RunResult([_task(137)]).exit_code() == 137
    assert RunResult([_task(None, "Task stopped by user")]).exit_code() == 1
    assert RunResult([_task(0), _task(3)], sharded=True, interrupted=True).exit_code() == 130


class FakeLogs:
    """A Logs API whose pages are scripted: (events, token) answered in order."""

    def __init__(self, pages: list[tuple[list[str], str]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def get_log_events(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        events, token = self.pages.pop(0) if self.pages else ([], kwargs.get("nextToken", "end"))
        return {"events": [{"message": m + "\n"} for m in events], "nextForwardToken": token}


def test_follower_reads_past_empty_pages_until_the_token_repeats() -> None:
    # CloudWatch may answer an empty page with a new token; only a repeated token means caught up.
    logs = FakeLogs([(["a"], "t1"), ([], "t2"), (["b", "c"], "t3"), ([], "t3")])
    follower = LogFollower(logs, "g", "s")
    assert follower.poll() == (["a", "b", "c"], True)
    assert [c.get("nextToken") for c in logs.calls] == [None, "t1", "t2", "t3"]
    assert all(c["startFromHead"] is True for c in logs.calls)
    assert follower.poll() == ([], True)
    assert logs.calls[-1]["nextToken"] == "t3"


def test_aws_errors_without_an_answer_are_one_clear_line() -> None:
    """No credentials, an unknown profile or an unreachable endpoint never surface as 'unexpected'."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ProfileNotFound

    from migrate.ecs.aws import api_error
    from migrate.ecs.tasks import resolve_container
    from migrate.errors import ConfigError, ConnectionFailed

    class NoCredentials:
        def describe_task_definition(self, **_: object) -> None:
            raise NoCredentialsError()

    with pytest.raises(ConfigError, match="no AWS credentials found"):
        resolve_container(NoCredentials(), "db-migration", None, "db-migration")
    assert isinstance(api_error("x", ProfileNotFound(profile="nope")), ConfigError)
    err = api_error("x", EndpointConnectionError(endpoint_url="https://ecs.eu-west-2.amazonaws.com"))
    assert isinstance(err, ConnectionFailed) and "cannot reach the AWS endpoint" in str(err)
