"""`ecs run` end to end in-process: the CLI-level `main()` returns the exit code.

moto cannot run Fargate tasks (no containers, no exit codes; its awsvpc run_task even fails), so
run_task / describe_tasks / stop_task go through botocore's Stubber. Everything else is real, on
the moto server over HTTP: the task definition is registered there and described back, and the
task's CloudWatch Logs stream is written there between polls, so log following meets a real API.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

import migrate.cli.ecs as cli_ecs
from migrate.cli import main
from migrate.ecs.aws import EcsClients
from migrate.ecs.taskdef import STREAM_PREFIX, TaskDefinitionSpec, build_task_definition
from migrate.local.s3server import REGION, TARGET_KEYS, LocalS3Server

pytestmark = pytest.mark.s3

ACCOUNT = "123456789012"
STUBBED = {"run_task", "describe_tasks", "stop_task"}


class HybridEcs:
    """ECS calls moto cannot serve go to the stubbed client, the rest to the real (moto) one."""

    def __init__(self, real: Any, stubbed: Any) -> None:
        self._real, self._stubbed = real, stubbed
        self.calls: list[str] = []  # every stubbed operation called, in order (whether or not it succeeded)

    def __getattr__(self, name: str) -> Any:
        if name not in STUBBED:
            return getattr(self._real, name)
        method = getattr(self._stubbed, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


class Scenario:
    def __init__(self, server: LocalS3Server, monkeypatch: pytest.MonkeyPatch, image: str = "s3-migration") -> None:
        self.image = image
        self.suffix = uuid.uuid4().hex[:8]
        self.family = f"{image}-{self.suffix}"
        self.group = f"/paas-migrate/test-{self.suffix}"
        self.cluster = f"migrations-{self.suffix}"
        self.logs = server.client("logs", TARGET_KEYS)
        self.real_ecs = server.client("ecs", TARGET_KEYS)
        stub_client = boto3.client("ecs", region_name=REGION, aws_access_key_id="stub", aws_secret_access_key="stub")
        self.stubber = Stubber(stub_client)
        self.now = 1000.0
        self.sleeps = 0
        self.between: dict[int, Callable[[], None]] = {}
        self.t0 = int(time.time() * 1000)
        self.n_events = 0
        spec = TaskDefinitionSpec(
            image=image, image_uri="123456789012.dkr.ecr.eu-west-2.amazonaws.com/x@sha256:" + "a" * 64,
            execution_role=f"arn:aws:iam::{ACCOUNT}:role/exec", task_role=f"arn:aws:iam::{ACCOUNT}:role/task",
            log_group=self.group, region=REGION, family=self.family,
        )
        taskdef, _ = build_task_definition(spec)
        self.real_ecs.register_task_definition(**taskdef)
        self.ecs = HybridEcs(self.real_ecs, stub_client)
        clients = EcsClients(region=REGION, _ecs=self.ecs,
                             _logs={REGION: self.logs, None: self.logs})
        monkeypatch.setattr(cli_ecs, "make_clients", lambda region, endpoint_url: clients)
        monkeypatch.setattr(cli_ecs, "poll_sleep", self.sleep)
        monkeypatch.setattr(cli_ecs, "poll_clock", lambda: self.now)

    def create_group(self) -> None:
        self.logs.create_log_group(logGroupName=self.group)

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        action = self.between.get(self.sleeps)
        if action is not None:
            action()

    def arn(self, n: int = 1) -> str:
        return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{self.cluster}/{self.suffix}{n:024d}"

    def stream(self, n: int = 1) -> str:
        return f"{STREAM_PREFIX}/{self.image}/{self.arn(n).rsplit('/', 1)[-1]}"

    def put(self, lines: list[str], n: int = 1) -> Callable[[], None]:
        def action() -> None:
            with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                self.logs.create_log_stream(logGroupName=self.group, logStreamName=self.stream(n))
            events = []
            for line in lines:
                self.n_events += 1  # strictly increasing timestamps: CloudWatch orders by them
                events.append({"timestamp": self.t0 + self.n_events, "message": line})
            self.logs.put_log_events(logGroupName=self.group, logStreamName=self.stream(n), logEvents=events)

        return action

    def expect_run(self, env: dict[str, str] | None = None, n: int = 1, *, started_by: str = "paas-migrate",
                   answer: dict[str, Any] | None = None) -> None:
        override: dict[str, Any] = {"name": self.image}
        if env:
            override["environment"] = [{"name": k, "value": v} for k, v in env.items()]
        expected = {
            "cluster": self.cluster, "taskDefinition": self.family, "launchType": "FARGATE", "count": 1,
            "startedBy": started_by,
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": ["subnet-aaa", "subnet-bbb"], "assignPublicIp": "DISABLED", "securityGroups": ["sg-1"]}},
            "overrides": {"containerOverrides": [override]},
        }
        body = answer or {"tasks": [{"taskArn": self.arn(n), "lastStatus": "PROVISIONING"}], "failures": []}
        self.stubber.add_response("run_task", body, expected)

    def expect_describe(self, states: dict[int, dict[str, Any]]) -> None:
        tasks = []
        for n, st in states.items():
            container: dict[str, Any] = {"name": self.image, "lastStatus": st.get("status", "RUNNING")}
            if "exit" in st:
                container["exitCode"] = st["exit"]
            if "container_reason" in st:
                container["reason"] = st["container_reason"]
            task: dict[str, Any] = {"taskArn": self.arn(n), "lastStatus": st.get("status", "RUNNING"),
                                    "containers": [container]}
            if st.get("status") == "STOPPED":
                task["stoppedReason"] = st.get("reason", "Essential container in task exited")
                task["stopCode"] = st.get("stop_code", "EssentialContainerExited")
                task["createdAt"] = dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
                task["stoppedAt"] = dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=65 + n)
            tasks.append(task)
        self.stubber.add_response("describe_tasks", {"tasks": tasks, "failures": []},
                                  {"cluster": self.cluster, "tasks": [self.arn(n) for n in states]})

    def expect_stop(self, n: int = 1) -> None:
        self.stubber.add_response("stop_task", {"task": {"taskArn": self.arn(n), "lastStatus": "RUNNING"}},
                                  {"cluster": self.cluster, "task": self.arn(n), "reason": ANY})

    def args(self, *extra: str) -> list[str]:
        return ["ecs", "run", self.image, "--cluster", self.cluster, "--task-definition", self.family,
                "--subnet", "subnet-aaa,subnet-bbb", "--security-group", "sg-1", "--poll-interval", "5", *extra]

    def run(self, *extra: str) -> int:
        with self.stubber:
            code = main(self.args(*extra))
            self.stubber.assert_no_pending_responses()
        return code


@pytest.fixture
def scenario(s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    return Scenario(s3_server, monkeypatch)


def _log_lines(out: str, prefix: str = "line ") -> list[str]:
    return [line for line in out.splitlines() if prefix in line]


def _run_and_exit(scenario: Scenario, code: int, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    scenario.create_group()
    scenario.expect_run({"MIGRATE_S3_WORKERS": "16"})
    scenario.expect_describe({1: {"status": "PROVISIONING"}})  # stream not created yet
    scenario.between[1] = scenario.put(["line 1", "line 2", "line 3"])
    scenario.expect_describe({1: {"status": "RUNNING"}})
    scenario.between[2] = scenario.put(["line 4", "line 5"])
    scenario.expect_describe({1: {"status": "STOPPED", "exit": code}})
    # After STOPPED: late events, then silence, then more late events; all must be printed once.
    scenario.between[3] = scenario.put(["line 6", "line 7"])
    scenario.between[5] = scenario.put(["line 8"])
    result = scenario.run("--env", "MIGRATE_S3_WORKERS=16")
    captured = capsys.readouterr()
    return result, captured.out, captured.err


def test_success_follows_logs_in_order_once_including_after_stop(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = _run_and_exit(scenario, 0, capsys)
    assert code == 0
    assert out.splitlines()[0] == scenario.arn()
    assert _log_lines(out) == [f"line {i}" for i in range(1, 9)]
    summary = out.splitlines()[-1]
    assert scenario.arn().rsplit("/", 1)[-1] in summary and " 0 " in summary and "1m06s" in summary
    assert scenario.sleeps >= 7  # polled on after STOPPED until the stream stayed caught up


def test_nonzero_exit_code_is_ours(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_and_exit(scenario, 3, capsys)
    assert code == 3
    assert _log_lines(out) == [f"line {i}" for i in range(1, 9)]
    assert "Traceback" not in err


def test_failures_in_run_task_answer(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    scenario.create_group()
    scenario.expect_run(answer={"tasks": [], "failures": [{"arn": "arn:x", "reason": "RESOURCE:MEMORY"}]})
    assert scenario.run() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ECS did not start the task: RESOURCE:MEMORY")
    assert not any("Traceback" in line for line in err)


def test_cannot_pull_container(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    scenario.create_group()
    scenario.expect_run()
    reason = "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found"
    scenario.expect_describe({1: {"status": "STOPPED", "stop_code": "TaskFailedToStart",
                                  "reason": "Task failed to start", "container_reason": reason}})
    assert scenario.run() == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: task ") and "could not pull its image: CannotPullContainerError" in err
    assert "execution role" in err


def test_stop_reason_without_exit_code(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    scenario.create_group()
    scenario.expect_run()
    scenario.expect_describe({1: {"status": "RUNNING"}})
    scenario.expect_describe({1: {"status": "STOPPED", "stop_code": "SpotInterruption",
                                  "reason": "Your Spot Task was interrupted."}})
    assert scenario.run() == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "stopped without an exit code: SpotInterruption: Your Spot Task was interrupted." in err


def test_missing_log_group_is_named_and_nothing_starts(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    # No log group, and no run_task stubbed: a start attempt would fail the stubber.
    assert scenario.run() == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"log group {scenario.group} does not exist in {REGION}" in err


@pytest.mark.parametrize("choice", ["stop", "leave"])
def test_timeout_stops_or_leaves_the_task(
    scenario: Scenario, capsys: pytest.CaptureFixture[str], choice: str
) -> None:
    scenario.create_group()
    scenario.expect_run()
    scenario.between[1] = scenario.put(["line 1"])
    for _ in range(3):  # t=0, 5, 10 (interval 5s, timeout 12s: the last sleep is shortened to 2s)
        scenario.expect_describe({1: {"status": "RUNNING"}})
    scenario.expect_describe({1: {"status": "RUNNING"}})  # t=12
    if choice == "stop":
        scenario.expect_stop()
    assert scenario.run("--timeout", "12s", "--on-timeout", choice) == 1
    # stop_task logs and swallows a failure (even the stubber's "unexpected call"), so count the calls.
    assert scenario.ecs.calls.count("stop_task") == (1 if choice == "stop" else 0), scenario.ecs.calls
    captured = capsys.readouterr()
    assert _log_lines(captured.out) == ["line 1"]
    err = captured.err.strip().splitlines()[-1]
    assert "did not stop within 12s" in err
    assert ("it was stopped" in err) == (choice == "stop")
    assert ("left running" in err) == (choice == "leave")


def test_sigterm_while_waiting_stops_the_task_and_exits_130(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario.create_group()
    scenario.expect_run()
    scenario.expect_describe({1: {"status": "RUNNING"}})
    scenario.expect_describe({1: {"status": "RUNNING"}})
    scenario.expect_stop()
    # What `docker stop` / an ECS stop of the calling task sends; main() turns it into an interrupt.
    scenario.between[2] = lambda: os.kill(os.getpid(), signal.SIGTERM)
    assert scenario.run() == 130
    err = capsys.readouterr().err
    assert "interrupted while waiting; stopped task(s)" in err


def test_shards_each_get_their_shard_and_worst_exit_wins(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario.create_group()
    for i in (1, 2, 3):
        scenario.expect_run({"MIGRATE_S3_SHARD": f"{i}/3"}, n=i, started_by=f"paas-migrate-shard-{i}-of-3")
    scenario.expect_describe({1: {}, 2: {}, 3: {}})
    scenario.between[1] = lambda: [scenario.put([f"line s{i} a", f"line s{i} b"], n=i)() for i in (1, 2, 3)]
    scenario.expect_describe({1: {"status": "STOPPED", "exit": 0}, 2: {"status": "STOPPED", "exit": 3}, 3: {}})
    scenario.between[2] = scenario.put(["line s3 c"], n=3)
    scenario.expect_describe({3: {"status": "STOPPED", "exit": 1}})
    scenario.between[3] = scenario.put(["line s1 late"], n=1)
    code = scenario.run("--shards", "3")
    captured = capsys.readouterr()
    assert code == 1  # 1 over 3 over 0
    lines = _log_lines(captured.out)
    for i in (1, 2, 3):
        mine = [line for line in lines if line.startswith(f"[shard {i}/3] ")]
        assert all(f"line s{i} " in line for line in mine)
        assert len(mine) == len(set(mine))
    assert [line for line in lines if line.startswith("[shard 3/3]")] == [
        "[shard 3/3] line s3 a", "[shard 3/3] line s3 b", "[shard 3/3] line s3 c"]
    assert [line for line in lines if line.startswith("[shard 1/3]")][-1] == "[shard 1/3] line s1 late"
    rows = [line.split() for line in captured.out.splitlines() if line[:4] in ("1/3 ", "2/3 ", "3/3 ")]
    summary = {row[0]: row for row in rows}
    assert [summary[s][2] for s in ("1/3", "2/3", "3/3")] == ["0", "3", "1"]
    assert all(summary[s][1] == scenario.arn(i).rsplit("/", 1)[-1] for i, s in enumerate(("1/3", "2/3", "3/3"), 1))
    assert "1m06s" in summary["1/3"] and "1m08s" in summary["3/3"]
    assert "2 of 3 shards did not succeed" in captured.err


def test_shards_all_zero_or_three(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    scenario.create_group()
    for i in (1, 2):
        scenario.expect_run({"MIGRATE_S3_SHARD": f"{i}/2"}, n=i, started_by=f"paas-migrate-shard-{i}-of-2")
    scenario.expect_describe({1: {"status": "STOPPED", "exit": 0}, 2: {"status": "STOPPED", "exit": 3}})
    assert scenario.run("--shards", "2", "--json") == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == 3 and [t["exit_code"] for t in doc["tasks"]] == [0, 3]
    assert [t["shard"] for t in doc["tasks"]] == ["1/2", "2/2"]


def test_shard_that_cannot_start_stops_the_started_ones(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario.create_group()
    scenario.expect_run({"MIGRATE_S3_SHARD": "1/2"}, n=1, started_by="paas-migrate-shard-1-of-2")
    scenario.expect_run({"MIGRATE_S3_SHARD": "2/2"}, n=2, started_by="paas-migrate-shard-2-of-2",
                        answer={"tasks": [], "failures": [{"reason": "RESOURCE:ENI"}]})
    scenario.expect_stop(1)
    assert scenario.run("--shards", "2") == 1
    assert "ECS did not start the task (shard 2/2): RESOURCE:ENI" in capsys.readouterr().err


def test_secret_looking_env_warns_without_the_value(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    scenario.create_group()
    secret_url = "postgresql://app:hunter2-very-secret@db.example:5432/app"
    scenario.expect_run({"MIGRATE_SOURCE_DATABASE_URL": secret_url, "API_TOKEN": "tok-abcdef-123456"})
    assert scenario.run("--env", f"MIGRATE_SOURCE_DATABASE_URL={secret_url}", "--env",
                        "API_TOKEN=tok-abcdef-123456", "--no-wait") == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(notes) == 2  # once each, on stderr
    assert "MIGRATE_SOURCE_DATABASE_URL looks like a secret (it is a URL with a password)" in notes[0]
    assert "API_TOKEN looks like a secret (its name contains TOKEN)" in notes[1]
    assert "warning:" not in captured.out
    everything = captured.out + captured.err
    assert "hunter2-very-secret" not in everything and "tok-abcdef-123456" not in everything
    assert scenario.arn() in captured.out


def test_shards_refused_for_db_migration(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    args = scenario.args("--shards", "2")
    args[2] = "db-migration"
    assert main(args) == 2
    assert "--shards applies to s3-migration only" in capsys.readouterr().err


def test_interrupt_with_no_stop_leaves_the_task(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    scenario.create_group()
    scenario.expect_run()
    scenario.expect_describe({1: {"status": "RUNNING"}})

    def interrupt() -> None:
        raise KeyboardInterrupt

    scenario.between[1] = interrupt
    assert scenario.run("--no-stop-on-interrupt") == 130
    assert "left task(s)" in capsys.readouterr().err
    # stop_task swallows errors (an unstubbed call would only be logged), so check it was never called.
    assert "stop_task" not in scenario.ecs.calls, scenario.ecs.calls
    assert scenario.ecs.calls == ["run_task", "describe_tasks"]
