"""Cloud Foundry's VCAP_SERVICES: the credentials a PaaS app is bound to, found by service name.

On GOV.UK PaaS, `cf env APP` (or a service key) shows a JSON object whose keys are service types
("postgres", "aws-s3-bucket", ...) and whose values are lists of bound instances, each with a
`name` and `credentials`. We read it from the VCAP_SERVICES variable, or from the file named by
MIGRATE_VCAP_SERVICES_FILE (so the JSON need not sit in an operator's shell history).

Every credential value that looks secret is registered for redaction as soon as it is loaded.
Nothing here echoes the JSON: a parse error names the line and column, never the content.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrate.config import Secret, register_secret
from migrate.errors import ConfigError

ENV_VAR = "VCAP_SERVICES"
FILE_ENV_VAR = "MIGRATE_VCAP_SERVICES_FILE"

POSTGRES_LABELS = ("postgres", "postgresql", "aws-rds-postgres")
S3_LABELS = ("aws-s3-bucket", "s3")

# Credential fields whose values are secrets (registered for redaction on load).
_SECRET_FIELD_WORDS = ("password", "secret", "token", "uri", "url")


@dataclass(frozen=True)
class S3ServiceCredentials:
    """What an S3 service binding gives: the bucket, its region and a key pair."""

    bucket_name: str
    region: str | None
    access_key_id: str | None
    secret_access_key: Secret | None


@dataclass(frozen=True)
class VcapService:
    """One bound service instance. `credentials` is never shown by repr."""

    name: str
    label: str
    plan: str | None = None
    tags: tuple[str, ...] = ()
    credentials: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_postgres(self) -> bool:
        if self.label in POSTGRES_LABELS or {"postgres", "postgresql"} & set(self.tags):
            return True
        uri = self.credentials.get("uri")
        return isinstance(uri, str) and uri.startswith(("postgres://", "postgresql://"))

    @property
    def is_s3(self) -> bool:
        return self.label in S3_LABELS or "s3" in self.tags or "bucket_name" in self.credentials

    def field(self, key: str, *, where: str) -> str:
        """One credentials field as text; ConfigError naming the available field names if absent."""
        value = self.credentials.get(key)
        if value is None or isinstance(value, dict | list):
            available = ", ".join(sorted(self.credentials)) or "none"
            raise ConfigError(
                f"{where}: service {self.name!r} has no credentials field {key!r}",
                hint=f"its credentials fields are: {available}",
            )
        return str(value)

    def postgres_uri(self, *, where: str = "VCAP_SERVICES") -> Secret:
        """The database URI of a postgres service (GOV.UK PaaS: credentials.uri)."""
        if not self.is_postgres:
            raise ConfigError(
                f"{where}: service {self.name!r} is a {self.label!r} service, not a PostgreSQL database",
                hint="name the postgres service instance (see `cf services`)",
            )
        uri = self.credentials.get("uri")
        if isinstance(uri, str) and uri:
            return Secret(uri)
        # Some brokers give the parts only; build the URI from them.
        parts = {k: self.credentials.get(k) for k in ("username", "password", "host", "port", "name")}
        if parts["host"] and parts["username"] and parts["name"]:
            from urllib.parse import quote

            pw = f":{quote(str(parts['password']), safe='')}" if parts["password"] else ""
            port = f":{parts['port']}" if parts["port"] else ""
            return Secret(
                f"postgresql://{quote(str(parts['username']), safe='')}{pw}@{parts['host']}{port}/{parts['name']}"
            )
        raise ConfigError(
            f"{where}: postgres service {self.name!r} has no 'uri' in its credentials",
            hint="check the binding or service key (cf service-key ...)",
        )

    def s3_credentials(self, *, where: str = "VCAP_SERVICES") -> S3ServiceCredentials:
        """Bucket name, region and keys of an S3 service (GOV.UK PaaS: aws-s3-bucket)."""
        if not self.is_s3:
            raise ConfigError(
                f"{where}: service {self.name!r} is a {self.label!r} service, not an S3 bucket",
                hint="name the aws-s3-bucket service instance (see `cf services`)",
            )
        bucket = self.field("bucket_name", where=where)
        key_id = self.credentials.get("aws_access_key_id")
        secret = self.credentials.get("aws_secret_access_key")
        if bool(key_id) != bool(secret):
            raise ConfigError(
                f"{where}: S3 service {self.name!r} has only one of aws_access_key_id / aws_secret_access_key",
                hint="create a fresh service key (cf create-service-key ...)",
            )
        region = self.credentials.get("aws_region") or self.credentials.get("region")
        return S3ServiceCredentials(
            bucket_name=bucket,
            region=str(region) if region else None,
            access_key_id=str(key_id) if key_id else None,
            secret_access_key=Secret(str(secret)) if secret else None,
        )


@dataclass(frozen=True)
class VcapServices:
    """Every bound service instance, and where they were read from ('VCAP_SERVICES' or a file)."""

    origin: str
    services: tuple[VcapService, ...]

    def names(self) -> list[str]:
        return sorted(s.name for s in self.services)

    def find(self, name: str, *, where: str = "VCAP_SERVICES") -> VcapService:
        """The instance called `name`, across every service type."""
        for s in self.services:
            if s.name == name:
                return s
        available = ", ".join(self.names()) or "none"
        raise ConfigError(
            f"{where}: no service named {name!r} in {self.origin}",
            hint=f"available service names: {available}",
        )


def parse(text: str, *, origin: str = ENV_VAR) -> VcapServices:
    """Parse VCAP_SERVICES JSON. Errors never echo the content (it is full of credentials)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{origin} is not valid JSON (line {exc.lineno}, column {exc.colno})",
            hint="copy it again from `cf env APP` (the JSON object after \"VCAP_SERVICES\":)",
        ) from None
    if isinstance(data, dict) and "VCAP_SERVICES" in data and isinstance(data["VCAP_SERVICES"], dict):
        # The "System-Provided" block of `cf env` pasted whole: accept it.
        data = data["VCAP_SERVICES"]
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin} is not a JSON object of service types",
            hint='expected {"postgres": [{"name": ..., "credentials": {...}}], ...}',
        )
    services: list[VcapService] = []
    for label, instances in data.items():
        if not isinstance(instances, list):
            raise ConfigError(f"{origin}: service type {label!r} is not a list of instances")
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or not isinstance(inst.get("name"), str):
                raise ConfigError(f"{origin}: {label}[{i}] has no 'name'")
            creds = inst.get("credentials") or {}
            if not isinstance(creds, dict):
                raise ConfigError(f"{origin}: service {inst['name']!r} has credentials that are not an object")
            register_credentials(creds)
            tags = inst.get("tags") or []
            services.append(
                VcapService(
                    name=inst["name"],
                    label=str(inst.get("label") or label),
                    plan=inst.get("plan") if isinstance(inst.get("plan"), str) else None,
                    tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
                    credentials=creds,
                )
            )
    return VcapServices(origin=origin, services=tuple(services))


def register_credentials(creds: Mapping[str, Any]) -> None:
    """Register every secret-looking value (password, secret, token, uri, url fields) for redaction."""
    for key, value in creds.items():
        if isinstance(value, str) and any(w in key.lower() for w in _SECRET_FIELD_WORDS):
            register_secret(value)
            if "://" in value:
                # The password inside a URI may be shown on its own (e.g. in a libpq message).
                with contextlib.suppress(ValueError):
                    register_secret(urlsplit(value).password)
        elif isinstance(value, dict):
            register_credentials(value)


def load(environ: Mapping[str, str] | None = None) -> VcapServices:
    """Read VCAP_SERVICES from the file named by MIGRATE_VCAP_SERVICES_FILE, else from VCAP_SERVICES."""
    env = os.environ if environ is None else environ
    path = env.get(FILE_ENV_VAR)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{FILE_ENV_VAR}: cannot read {path}: {exc.strerror}") from None
        return parse(text, origin=path)
    value = env.get(ENV_VAR)
    if not value:
        raise ConfigError(
            f"vcap: references need Cloud Foundry's service credentials, but neither {ENV_VAR} nor "
            f"{FILE_ENV_VAR} is set",
            hint=f"save the JSON from `cf env APP` to a file and set {FILE_ENV_VAR}=PATH",
        )
    return parse(value, origin=ENV_VAR)
