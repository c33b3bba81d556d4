"""boto3 clients for ECS and CloudWatch Logs, and turning their errors into one line for the user."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from migrate.config import redact
from migrate.errors import ConfigError, ConnectionFailed, MigrateError

log = logging.getLogger(__name__)


def _config() -> Any:
    from botocore.config import Config

    # Standard retries absorb ECS/Logs throttling (describe_tasks and get_log_events are polled).
    return Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=10, read_timeout=60)


@dataclass
class EcsClients:
    """An ECS client and CloudWatch Logs clients per region, all on one optional endpoint.

    Creating it makes no request. `endpoint_url` serves a local ECS-compatible API (moto) in tests.
    """

    region: str | None = None
    endpoint_url: str | None = None
    _ecs: Any = None
    _logs: dict[str | None, Any] = field(default_factory=dict)

    @property
    def ecs(self) -> Any:
        if self._ecs is None:
            self._ecs = _client("ecs", self.region, self.endpoint_url)
        return self._ecs

    def logs(self, region: str | None = None) -> Any:
        """A Logs client for `region` (the task definition's awslogs-region), default this one's."""
        key = region or self.region
        if key not in self._logs:
            self._logs[key] = _client("logs", key, self.endpoint_url)
        return self._logs[key]


def _client(service: str, region: str | None, endpoint_url: str | None) -> Any:
    import boto3
    from botocore.exceptions import NoRegionError, ProfileNotFound

    try:
        return boto3.client(service, region_name=region, endpoint_url=endpoint_url, config=_config())
    except NoRegionError:
        raise ConfigError(
            f"no AWS region for {service}", hint="give --region or set MIGRATE_ECS_REGION or AWS_REGION"
        ) from None
    except ProfileNotFound as exc:
        raise api_error(f"creating the {service} client", exc) from None


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def describe_error(exc: BaseException) -> str:
    """'Code: message' of an AWS error, redacted, on one line."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        text = f"{err.get('Code', type(exc).__name__)}: {err.get('Message', '')}".strip().rstrip(":")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()))


def is_aws_error(exc: BaseException) -> bool:
    """An error of an AWS call (the service's answer, or botocore's: credentials, endpoint, region)."""
    from botocore.exceptions import BotoCoreError

    return hasattr(exc, "response") or isinstance(exc, BotoCoreError)


def api_error(what: str, exc: BaseException, *, hint: str | None = None) -> MigrateError:
    """One line saying which call failed and why: no credentials or an unknown profile (a
    configuration error), an unreachable endpoint, or AWS's reason (permissions, names)."""
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(f"{what}: no AWS credentials found",
                           hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or run where a"
                                " role provides them)")
    if isinstance(exc, ProfileNotFound):
        return ConfigError(f"{what}: {redact(exc)}", hint="check AWS_PROFILE")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return ConnectionFailed(f"{what} failed: cannot reach the AWS endpoint ({redact(exc)})",
                                hint="check the region and the network path to AWS")
    code = error_code(exc)
    if hint is None and code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
        hint = "check the AWS credentials and that they allow this ECS / CloudWatch Logs call"
    return ConnectionFailed(f"{what} failed: {describe_error(exc)}", hint=hint)
