"""boto3 clients for each side of a copy, and the translation of botocore errors into one clear line.

One client per side, shared by every worker thread (botocore clients are thread-safe), with a
connection pool at least as large as the number of workers.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from migrate.config import S3Side, redact
from migrate.errors import ConfigError, ConnectionFailed, MigrateError, PreflightError

log = logging.getLogger(__name__)

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "AllAccessDisabled", "403", "Forbidden",
}
_MISSING_BUCKET_CODES = {"NoSuchBucket", "404", "NotFound"}


def make_client(side: S3Side, *, workers: int = 32, probe: bool = False) -> Any:
    """A boto3 S3 client for one side.

    `probe=True` gives a client that fails fast (short timeouts, one retry): used for the pre-flight
    checks so that a wrong endpoint is one clear line after seconds, not minutes of back-off.
    """
    from botocore.config import Config

    try:
        session = _session(side.profile, _aws_environment())
    except Exception as exc:  # ProfileNotFound and friends
        raise ConfigError(f"cannot use the credentials for {side.location}: {redact(exc)}") from None
    credentials: dict[str, Any] = {}
    if side.access_key_id:
        credentials["aws_access_key_id"] = side.access_key_id
        credentials["aws_secret_access_key"] = side.secret_access_key.reveal() if side.secret_access_key else None
        if side.session_token:
            credentials["aws_session_token"] = side.session_token.reveal()
    if probe:
        retries = {"mode": "standard", "max_attempts": 2}
        timeouts = {"connect_timeout": 5, "read_timeout": 20}
    else:
        # adaptive: client-side rate limiting on 503 SlowDown on top of the standard retry rules.
        retries = {"mode": "adaptive", "max_attempts": 10}
        timeouts = {"connect_timeout": 10, "read_timeout": 120}
    config = Config(
        max_pool_connections=max(10, workers * 2),
        retries=retries,
        # We compute and send SHA-256 ourselves; botocore adding a CRC32 to every request would be wasted CPU.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if side.endpoint_url else {},
        tcp_keepalive=True,
        **timeouts,
    )
    return session.client("s3", endpoint_url=side.endpoint_url, region_name=side.region, config=config,
                          **credentials)


def _aws_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


@functools.lru_cache(maxsize=8)
def _session(profile: str | None, environment: tuple[tuple[str, str], ...]) -> Any:
    """One boto3 session per profile (and AWS_* environment): a new session loads botocore's models
    again (about 0.1 s each), a client from an existing one takes milliseconds. Explicit keys are passed
    to each client, never stored in the session. Sessions are created on the calling thread only."""
    import boto3

    return boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        if code:
            return code
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return type(exc).__name__


def translate(exc: BaseException, role: str, side: S3Side) -> MigrateError:
    """Turn a botocore error from a bucket-level call into a MigrateError saying which side to fix."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, MigrateError):
        return exc
    env = f"MIGRATE_{role.upper()}"
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        where = side.endpoint_url or f"the AWS S3 endpoint of region {side.region or '(default)'}"
        return ConnectionFailed(
            f"the {role} S3 endpoint {where} is unreachable",
            hint=f"check the {role} endpoint URL (--{role}-endpoint-url, {env}_S3_ENDPOINT_URL or the plan file)"
                 " and the network",
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            f"no credentials for the {role} side ({side.location})",
            hint=f"set {env}_AWS_ACCESS_KEY_ID and {env}_AWS_SECRET_ACCESS_KEY, or --{role}-profile",
        )
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in _MISSING_BUCKET_CODES:
            return PreflightError(
                f"{role} bucket {side.location.bucket} does not exist",
                hint=f"check the {role} bucket name, endpoint URL and region (options or plan file)",
            )
        if code in _CREDENTIAL_CODES:
            return ConnectionFailed(
                f"the {role} credentials were refused for {side.location} ({code})",
                hint=f"check the {role} credentials ({side.credential_source()}: {env}_AWS_ACCESS_KEY_ID/"
                f"{env}_AWS_SECRET_ACCESS_KEY or --{role}-profile) and their permissions on the bucket",
            )
        return ConnectionFailed(f"S3 error on the {role} side ({side.location}): {code}: {redact(exc)}")
    return ConnectionFailed(f"S3 error on the {role} side ({side.location}): {redact(exc)}")


def preflight(role: str, side: S3Side) -> None:
    """HeadBucket with a fail-fast client, so a wrong bucket, key or endpoint is one clear line. Read-only."""
    client = make_client(side, workers=1, probe=True)
    try:
        client.head_bucket(Bucket=side.location.bucket)
    except Exception as exc:
        if error_code(exc) not in ("403", "Forbidden"):
            raise translate(exc, role, side) from None
        # A HEAD answer has no body, so a refusal is only "403". Ask once more with a GET, whose error
        # says which: an unknown key id, a wrong secret, or a key without the permission.
        try:
            client.list_objects_v2(Bucket=side.location.bucket, MaxKeys=1)
        except Exception as detailed:
            raise translate(detailed, role, side) from None
        raise translate(exc, role, side) from None
