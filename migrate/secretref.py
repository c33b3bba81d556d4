"""Secret references in a plan file, resolved at run time only.

A value is one of:

- ``env:NAME`` — the environment variable NAME;
- ``secretsmanager:ARN-or-name[#json-key]`` — AWS Secrets Manager (GetSecretValue); with ``#key``
  the secret is a JSON object and the value is its member ``key``;
- ``ssm:/param/name[#json-key]`` — an SSM Parameter Store parameter (GetParameter, decrypted);
- ``vcap:SERVICE[#field]`` — Cloud Foundry VCAP_SERVICES (see migrate.vcap): a postgres service's
  ``uri``, or one credentials field of any service;
- anything else is a literal (``postgresql://...``, ``s3://...``, a plain string).

Every resolved value comes back as a migrate.config.Secret (registered for redaction), is cached
for the life of one Resolver (each secret is fetched once per run), and is never written back,
logged or put in an exception. AWS clients use boto3's default credential chain (an ECS task
role) and honour MIGRATE_AWS_ENDPOINT_URL (tests point it at moto).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from migrate.config import Secret, redact, register_secret
from migrate.errors import ConfigError, ConnectionFailed

log = logging.getLogger(__name__)

SCHEMES = ("env", "secretsmanager", "ssm", "vcap")
ENDPOINT_ENV = "MIGRATE_AWS_ENDPOINT_URL"

# "scheme:" not followed by "//" (URLs such as postgresql:// and s3:// are literals).
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9_+.\-]*):(?!//)")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference. scheme None means a literal; `target` is then the literal itself."""

    scheme: str | None
    target: str
    key: str | None = None

    @property
    def is_literal(self) -> bool:
        return self.scheme is None

    def describe(self) -> str:
        """Where the value comes from, safe to show (never the value; a literal is just 'literal')."""
        if self.scheme is None:
            return "literal"
        suffix = f"#{self.key}" if self.key else ""
        return f"{self.scheme}:{self.target}{suffix}"


def parse_ref(value: str, *, where: str) -> SecretRef:
    """Check a reference's syntax without resolving it. `where` is e.g. 'plan.toml: environments.x.y'."""
    if not isinstance(value, str):
        raise ConfigError(f"{where} — expected a string")
    m = _SCHEME.match(value)
    if not m:
        return SecretRef(None, value)
    scheme = m.group("scheme")
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{where} — unknown reference scheme '{scheme}:'",
            hint="use env:NAME, secretsmanager:ARN[#key], ssm:/NAME, vcap:SERVICE or a literal URL",
        )
    rest = value[m.end() :]
    target, _, key = rest.partition("#")
    if not target:
        raise ConfigError(f"{where} — '{scheme}:' needs a name after the colon")
    if scheme == "env" and (key or not _ENV_NAME.match(target)):
        raise ConfigError(f"{where} — env:{rest} is not a valid environment variable name")
    if "#" in rest and not key:
        raise ConfigError(f"{where} — nothing after '#' in {scheme}:{rest}", hint="write #json-key or drop the '#'")
    return SecretRef(scheme, target, key or None)


class Resolver:
    """Resolves references against one environment, fetching each secret at most once.

    Read-only: it never creates, updates or logs a secret.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, endpoint_url: str | None = None) -> None:
        self.environ: Mapping[str, str] = dict(os.environ) if environ is None else environ
        self.endpoint_url = endpoint_url or self.environ.get(ENDPOINT_ENV) or None
        self._cache: dict[tuple[str, str], str] = {}
        self._vcap: Any = None
        self._clients: dict[tuple[str, str | None], Any] = {}

    # ---- public ----

    def resolve(self, value: str | SecretRef, *, where: str) -> Secret:
        """The value a reference names, as a Secret (registered for redaction).

        Raises ConfigError / ConnectionFailed naming `where`, never showing the value.
        """
        ref = value if isinstance(value, SecretRef) else parse_ref(value, where=where)
        return Secret(self._value(ref, where=where, secret=True))

    def resolve_public(self, value: str | SecretRef, *, where: str) -> str:
        """The value of a reference that is not a secret (a bucket URL, a region): not registered for
        redaction, so it stays readable in plans and reports."""
        ref = value if isinstance(value, SecretRef) else parse_ref(value, where=where)
        return self._value(ref, where=where, secret=False)

    def _value(self, ref: SecretRef, *, where: str, secret: bool) -> str:
        if ref.scheme is None:
            return ref.target
        if ref.scheme == "vcap":
            return self._vcap_value(ref, where=where)
        cache_key = (ref.scheme, ref.target)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._fetch(ref, where=where)
        raw = self._cache[cache_key]
        if secret:
            # The whole secret (e.g. an RDS JSON secret) is registered too, not only the member used.
            _register_everything(raw)
        if ref.key is None:
            return raw
        return _json_member(raw, ref.key, where=where, what=ref.describe())

    def vcap(self) -> Any:
        """The parsed VCAP_SERVICES (loaded once)."""
        if self._vcap is None:
            from migrate import vcap

            self._vcap = vcap.load(self.environ)
        return self._vcap

    # ---- schemes ----

    def _fetch(self, ref: SecretRef, *, where: str) -> str:
        if ref.scheme == "env":
            value = self.environ.get(ref.target)
            if not value:
                raise ConfigError(
                    f"{where} — environment variable {ref.target} is not set", hint=f"export {ref.target}=..."
                )
            return value
        if ref.scheme == "secretsmanager":
            return self._secretsmanager(ref, where=where)
        if ref.scheme == "ssm":
            return self._ssm(ref, where=where)
        raise ConfigError(f"{where} — unknown reference scheme '{ref.scheme}:'")  # pragma: no cover

    def _vcap_value(self, ref: SecretRef, *, where: str) -> str:
        service = self.vcap().find(ref.target, where=where)
        if ref.key:
            return service.field(ref.key, where=where)
        if service.is_postgres:
            return service.postgres_uri(where=where).reveal()
        raise ConfigError(
            f"{where} — vcap:{ref.target} is a {service.label!r} service; a single value needs a field name",
            hint=f"write vcap:{ref.target}#FIELD, or use it as a bucket side (source = \"vcap:{ref.target}\")",
        )

    def _client(self, service: str, region: str | None) -> Any:
        key = (service, region)
        if key not in self._clients:
            import boto3
            from botocore.config import Config

            region_name = (
                region
                or self.environ.get("MIGRATE_AWS_REGION")
                or self.environ.get("AWS_REGION")
                or self.environ.get("AWS_DEFAULT_REGION")
            )
            # Credentials from this resolver's environment when it names them (the demo, tests),
            # else boto3's default chain (profile, ECS task role).
            env = self.environ
            session_kw: dict[str, Any] = {}
            if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
                session_kw = {
                    "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
                    "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
                    "aws_session_token": env.get("AWS_SESSION_TOKEN") or None,
                }
            elif env.get("AWS_PROFILE"):
                session_kw = {"profile_name": env["AWS_PROFILE"]}
            self._clients[key] = boto3.session.Session(**session_kw).client(
                service,
                region_name=region_name,
                endpoint_url=self.endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=30),
            )
        return self._clients[key]

    def _secretsmanager(self, ref: SecretRef, *, where: str) -> str:
        region = _arn_region(ref.target)
        resp = self._aws_call(
            "secretsmanager", region, "get_secret_value", {"SecretId": ref.target}, ref=ref, where=where
        )
        if resp.get("SecretString") is not None:
            return str(resp["SecretString"])
        binary = resp.get("SecretBinary")
        if binary is not None:
            try:
                return bytes(binary).decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{where} — {ref.describe()} is a binary secret that is not UTF-8 text") from None
        raise ConfigError(f"{where} — {ref.describe()} has no value")

    def _ssm(self, ref: SecretRef, *, where: str) -> str:
        region = _arn_region(ref.target)
        resp = self._aws_call(
            "ssm", region, "get_parameter", {"Name": ref.target, "WithDecryption": True}, ref=ref, where=where
        )
        return str(resp["Parameter"]["Value"])

    def _aws_call(
        self, service: str, region: str | None, op: str, params: dict[str, Any], *, ref: SecretRef, where: str
    ) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

        what = ref.describe()
        try:
            return getattr(self._client(service, region), op)(**params)
        except NoRegionError:
            raise ConfigError(
                f"{where} — no AWS region for {what}", hint="use a full ARN, or set AWS_REGION"
            ) from None
        except NoCredentialsError:
            raise ConnectionFailed(
                f"{where} — no AWS credentials to read {what}",
                hint="run with a task role, a profile (AWS_PROFILE) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            ) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ResourceNotFoundException", "ParameterNotFound"):
                raise ConfigError(f"{where} — {what} does not exist", hint="check the name/ARN and region") from None
            if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
                action = "secretsmanager:GetSecretValue" if service == "secretsmanager" else "ssm:GetParameter"
                raise ConnectionFailed(
                    f"{where} — access denied reading {what}",
                    hint=f"allow {action} (and kms:Decrypt for its key) to this role",
                ) from None
            raise ConnectionFailed(f"{where} — reading {what} failed: {code or redact(exc)}") from None
        except BotoCoreError as exc:
            raise ConnectionFailed(f"{where} — cannot reach AWS to read {what}: {redact(exc)}") from None


def _register_everything(raw: str) -> None:
    """Register a secret, the password inside it if it is a URL, and the secret-looking members
    of it if it is a JSON object: any of them may later be shown on its own."""
    Secret(raw)
    text = raw.strip()
    if "://" in text:
        with contextlib.suppress(ValueError):
            register_secret(urlsplit(text).password)
    elif text.startswith("{"):
        with contextlib.suppress(ValueError):
            data = json.loads(text)
            if isinstance(data, dict):
                from migrate.vcap import register_credentials

                register_credentials(data)


def _arn_region(target: str) -> str | None:
    # arn:aws:secretsmanager:eu-west-2:123456789012:secret:name
    if target.startswith("arn:"):
        parts = target.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return None


def _json_member(raw: str, key: str, *, where: str, what: str) -> str:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        # Never echo the secret: say only that it is not JSON.
        raise ConfigError(
            f"{where} — {what} — the secret is not a JSON object, so '#{key}' cannot be looked up",
            hint="drop the '#key' to use the whole secret",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} — {what} — the secret is not a JSON object")
    if key not in data or data[key] is None:
        available = ", ".join(sorted(str(k) for k in data)) or "none"
        raise ConfigError(f"{where} — {what} — no key {key!r} in the secret", hint=f"its keys are: {available}")
    value = data[key]
    if isinstance(value, dict | list):
        raise ConfigError(f"{where} — {what} — {key!r} is not a single value")
    return str(value)


def database_url_from_secret(value: str) -> str:
    """A database URL from a resolved value: the value itself, or one built from an RDS-style JSON
    secret ({"username", "password", "host", "port", "dbname"}), as RDS-managed secrets hold."""
    text = value.strip()
    if not text.startswith("{"):
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if not isinstance(data, dict) or not {"username", "host"} <= set(data):
        return text
    from urllib.parse import quote

    user = quote(str(data["username"]), safe="")
    pw = f":{quote(str(data['password']), safe='')}" if data.get("password") else ""
    port = f":{data['port']}" if data.get("port") else ""
    dbname = quote(str(data.get("dbname") or data.get("database") or "postgres"), safe="")
    return f"postgresql://{user}{pw}@{data['host']}{port}/{dbname}"
