"""Following one task's CloudWatch Logs stream: in order, each event once, across any number of polls."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from migrate.ecs.aws import api_error, error_code, is_aws_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogSource:
    """Where a container's awslogs driver writes: group, region and stream prefix."""

    group: str
    region: str | None
    stream_prefix: str
    create_group: bool = False  # awslogs-create-group: the driver creates the group itself

    def stream_for(self, container: str, task_id: str) -> str:
        # The awslogs driver's naming on Fargate: prefix/container-name/ecs-task-id.
        return f"{self.stream_prefix}/{container}/{task_id}"


def check_log_group(logs: Any, source: LogSource) -> bool:
    """True if the log group exists. Read-only (describe_log_groups)."""
    try:
        pages = logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=source.group)
        for page in pages:
            if any(g.get("logGroupName") == source.group for g in page.get("logGroups", [])):
                return True
    except Exception as exc:
        if is_aws_error(exc):
            raise api_error(f"looking up log group {source.group}", exc) from None
        raise
    return False


class LogFollower:
    """Reads one stream forward with get_log_events' nextForwardToken, from its head.

    CloudWatch hands back the token it was given once nothing new is there, so "the token did not
    change" means "caught up for now". A stream that does not exist yet (the container has not
    started) reads as empty. Never reads backwards, never re-reads an event; keeps no events.
    """

    def __init__(self, logs: Any, group: str, stream: str, *, max_pages: int = 50) -> None:
        self.logs = logs
        self.group = group
        self.stream = stream
        self.token: str | None = None
        self.seen_stream = False
        self._max_pages = max_pages

    def poll(self) -> tuple[list[str], bool]:
        """New messages since the last poll (oldest first), and whether the reader caught up.

        Caught up means CloudWatch handed back the token it was given. Pages are read until then
        (an empty page with a new token is not the end), at most `max_pages` per poll.
        """
        messages: list[str] = []
        for _ in range(self._max_pages):
            kwargs: dict[str, Any] = {"logGroupName": self.group, "logStreamName": self.stream, "startFromHead": True}
            if self.token is not None:
                kwargs["nextToken"] = self.token
            try:
                answer = self.logs.get_log_events(**kwargs)
            except Exception as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return messages, True  # the stream appears when the container starts
                if is_aws_error(exc):
                    raise api_error(f"reading log stream {self.group}/{self.stream}", exc) from None
                raise
            self.seen_stream = True
            messages.extend(str(e.get("message", "")).rstrip("\r\n") for e in answer.get("events", []))
            token = answer.get("nextForwardToken")
            if token is None or token == self.token:
                return messages, True
            self.token = token
        return messages, False
