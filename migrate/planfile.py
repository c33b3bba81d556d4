"""The plan file: one TOML file describing each environment's database and bucket migrations.

Schema (every key but the `source`/`target` pairs is optional)::

    [defaults]                      # inherited by every environment
    jobs = 4                        # database: parallel connections (default: CPU count)
    workers = 32                    # buckets: parallel transfers per bucket
    db_mode = "parallel"            # parallel | stream
    s3_mode = "auto"                # auto | server-side | stream

    [environments.production]       # may override jobs / workers / db_mode / s3_mode

    [environments.production.database]
    source = "vcap:my-postgres"     # REF giving a postgresql:// URL
    target = "secretsmanager:arn:aws:secretsmanager:eu-west-2:123:secret:rds"   # RDS JSON secrets work too
    jobs = 4                        # optional, overrides the environment's
    mode = "parallel"               # optional

    [environments.production.buckets.csv]        # any number of named bucket pairs
    source = "vcap:csv-bucket"      # an S3 service binding: bucket name, region and keys from VCAP
    target = "s3://new-csv-bucket/optional/prefix"
    target_region = "eu-west-2"
    sse = "aws:kms"                 # optional target encryption: AES256 | aws:kms
    sse_kms_key_id = "arn:aws:kms:..."
    workers = 32                    # optional
    mode = "auto"                   # optional

    [environments.production.buckets.export]
    source = "s3://paas-export"
    source_credentials = { access_key_id = "env:SRC_KEY", secret_access_key = "env:SRC_SECRET" }
    source_endpoint_url = "https://s3.eu-west-2.amazonaws.com"
    target = "s3://new-export"
    # per side: {source,target}_endpoint_url, _region, _profile, _credentials
    # (access_key_id, secret_access_key, session_token). A side with no credentials and no profile
    # uses boto3's default chain (an ECS task role).

A REF is a literal, ``env:NAME``, ``secretsmanager:ARN[#json-key]``, ``ssm:/param/name[#json-key]``
or ``vcap:SERVICE[#field]`` (see migrate.secretref). Loading checks the syntax only: references
are resolved by `resolve_environment`, at run time, and their values are never written anywhere.

Errors name the file and the key (``plan.toml: environments.production.database.source: ...``)
and are ConfigError (exit 2).
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from migrate.config import redact
from migrate.errors import ConfigError, ConnectionFailed, MigrateError
from migrate.secretref import Resolver, SecretRef, database_url_from_secret, parse_ref

if TYPE_CHECKING:
    from migrate.orchestrate import EnvConfig

log = logging.getLogger(__name__)

DB_MODES = ("parallel", "stream")
S3_MODES = ("auto", "server-side", "stream")
SSE_VALUES = ("AES256", "aws:kms")
_TUNING_KEYS = {"jobs", "workers", "db_mode", "s3_mode"}
_SIDE_KEYS = ("endpoint_url", "region", "profile", "credentials")
_CREDENTIAL_KEYS = ("access_key_id", "secret_access_key", "session_token")
_BUCKET_KEYS = (
    {"source", "target", "workers", "mode", "sse", "sse_kms_key_id"}
    | {f"{side}_{k}" for side in ("source", "target") for k in _SIDE_KEYS}
)


@dataclass(frozen=True)
class CredentialsSpec:
    access_key_id: SecretRef
    secret_access_key: SecretRef
    session_token: SecretRef | None = None


@dataclass(frozen=True)
class BucketSideSpec:
    ref: SecretRef
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    credentials: CredentialsSpec | None = None


@dataclass(frozen=True)
class BucketSpec:
    name: str
    where: str  # "plan.toml: environments.production.buckets.csv"
    source: BucketSideSpec
    target: BucketSideSpec
    workers: int = 32
    mode: str = "auto"
    sse: str | None = None
    sse_kms_key_id: str | None = None


@dataclass(frozen=True)
class DatabaseSpec:
    where: str
    source: SecretRef
    target: SecretRef
    jobs: int | None = None
    mode: str = "parallel"


@dataclass(frozen=True)
class EnvironmentSpec:
    """One environment as written in the file: references unresolved."""

    file: str
    name: str
    database: DatabaseSpec | None = None
    buckets: tuple[BucketSpec, ...] = ()

    def describe(self) -> dict[str, Any]:
        """Where each value will come from (reference names, never values): for plans and reports."""
        out: dict[str, Any] = {"plan_file": self.file, "environment": self.name}
        if self.database:
            out["database"] = {"source": self.database.source.describe(), "target": self.database.target.describe()}
        for b in self.buckets:
            out[f"bucket {b.name}"] = {"source": _side_origin(b.source), "target": _side_origin(b.target)}
        return out


def _side_origin(side: BucketSideSpec) -> str:
    # A literal bucket URL is no secret: show it; a reference shows its name only.
    return side.ref.target if side.ref.is_literal else side.ref.describe()


@dataclass(frozen=True)
class PlanFile:
    path: str
    environments: dict[str, EnvironmentSpec] = field(default_factory=dict)

    def environment(self, name: str) -> EnvironmentSpec:
        if name not in self.environments:
            available = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(
                f"{self.path}: no environment {name!r}", hint=f"environments in this file: {available}"
            )
        return self.environments[name]


def load(path: str | Path) -> PlanFile:
    """Read and validate a plan file. Read-only; resolves no reference."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"plan file {path} does not exist", hint="give --plan PATH (see examples/plan.toml)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read plan file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return loads(text, name=str(path))


def loads(text: str, *, name: str = "plan.toml") -> PlanFile:
    """Parse plan-file text; `name` is used in every error message."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {redact(exc)}") from None
    _only_keys(data, {"defaults", "environments"}, name, "")
    defaults = _table(data.get("defaults", {}), name, "defaults")
    _only_keys(defaults, _TUNING_KEYS, name, "defaults")
    # Check the defaults where they are written, so an error names [defaults], not an environment.
    _int(defaults, "jobs", name, "defaults", None)
    _int(defaults, "workers", name, "defaults", None)
    _choice(defaults, "db_mode", DB_MODES, name, "defaults", "parallel")
    _choice(defaults, "s3_mode", S3_MODES, name, "defaults", "auto")
    envs = _table(data.get("environments"), name, "environments", required=True)
    if not envs:
        raise ConfigError(f"{name}: environments: no environment defined", hint="add [environments.NAME.database]")
    out: dict[str, EnvironmentSpec] = {}
    for env_name, env_data in envs.items():
        out[env_name] = _environment(name, env_name, env_data, defaults)
    return PlanFile(path=name, environments=out)


# ---- parsing helpers ----


def _err(file: str, key: str, message: str, hint: str | None = None) -> ConfigError:
    where = f"{file}: {key}" if key else file
    return ConfigError(f"{where}: {message}", hint=hint)


def _table(value: Any, file: str, key: str, *, required: bool = False) -> dict[str, Any]:
    if value is None:
        if required:
            raise _err(file, key, "missing", hint=f"add a [{key}] table")
        return {}
    if not isinstance(value, dict):
        raise _err(file, key, "must be a table")
    return value


def _only_keys(table: Mapping[str, Any], allowed: set[str], file: str, key: str) -> None:
    for k in table:
        if k not in allowed:
            path = f"{key}.{k}" if key else k
            raise _err(file, path, "unknown key", hint=f"allowed here: {', '.join(sorted(allowed))}")


def _int(table: Mapping[str, Any], k: str, file: str, key: str, default: int | None) -> int | None:
    if k not in table:
        return default
    v = table[k]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _err(file, f"{key}.{k}", "must be a whole number of at least 1")
    return v


def _choice(table: Mapping[str, Any], k: str, choices: tuple[str, ...], file: str, key: str, default: str) -> str:
    v = table.get(k, default)
    if v not in choices:
        raise _err(file, f"{key}.{k}", f"{v!r} is not one of {', '.join(choices)}")
    return str(v)


def _str(table: Mapping[str, Any], k: str, file: str, key: str) -> str | None:
    if k not in table:
        return None
    v = table[k]
    if not isinstance(v, str) or not v.strip():
        raise _err(file, f"{key}.{k}", "must be a non-empty string")
    return v.strip()


def _ref(table: Mapping[str, Any], k: str, file: str, key: str) -> SecretRef:
    if k not in table:
        raise _err(file, f"{key}.{k}", "missing", hint="give a URL or a reference such as env:NAME")
    v = table[k]
    if not isinstance(v, str) or not v.strip():
        raise _err(file, f"{key}.{k}", "must be a non-empty string")
    return parse_ref(v.strip(), where=f"{file}: {key}.{k}")


def _environment(file: str, env_name: str, env_data: Any, defaults: Mapping[str, Any]) -> EnvironmentSpec:
    key = f"environments.{env_name}"
    env = _table(env_data, file, key, required=True)
    _only_keys(env, {"database", "buckets"} | _TUNING_KEYS, file, key)
    tuning = {**defaults, **{k: v for k, v in env.items() if k in _TUNING_KEYS}}
    jobs = _int(tuning, "jobs", file, key, None)
    workers = _int(tuning, "workers", file, key, 32) or 32
    db_mode = _choice(tuning, "db_mode", DB_MODES, file, key, "parallel")
    s3_mode = _choice(tuning, "s3_mode", S3_MODES, file, key, "auto")

    database = None
    if "database" in env:
        dkey = f"{key}.database"
        d = _table(env["database"], file, dkey)
        _only_keys(d, {"source", "target", "jobs", "mode"}, file, dkey)
        database = DatabaseSpec(
            where=f"{file}: {dkey}",
            source=_ref(d, "source", file, dkey),
            target=_ref(d, "target", file, dkey),
            jobs=_int(d, "jobs", file, dkey, jobs),
            mode=_choice(d, "mode", DB_MODES, file, dkey, db_mode),
        )
    buckets: list[BucketSpec] = []
    for bname, bdata in _table(env.get("buckets"), file, f"{key}.buckets").items():
        bkey = f"{key}.buckets.{bname}"
        b = _table(bdata, file, bkey)
        _only_keys(b, _BUCKET_KEYS, file, bkey)
        sse = _str(b, "sse", file, bkey)
        if sse is not None and sse not in SSE_VALUES:
            raise _err(file, f"{bkey}.sse", f"{sse!r} is not one of {', '.join(SSE_VALUES)}")
        kms = _str(b, "sse_kms_key_id", file, bkey)
        if kms and sse != "aws:kms":
            raise _err(file, f"{bkey}.sse_kms_key_id", 'needs sse = "aws:kms"')
        buckets.append(
            BucketSpec(
                name=bname,
                where=f"{file}: {bkey}",
                source=_side(b, "source", file, bkey),
                target=_side(b, "target", file, bkey),
                workers=_int(b, "workers", file, bkey, workers) or workers,
                mode=_choice(b, "mode", S3_MODES, file, bkey, s3_mode),
                sse=sse,
                sse_kms_key_id=kms,
            )
        )
    if database is None and not buckets:
        raise _err(file, key, "has neither a database nor any buckets", hint=f"add [{key}.database]")
    return EnvironmentSpec(file=file, name=env_name, database=database, buckets=tuple(buckets))


def _side(b: Mapping[str, Any], role: str, file: str, bkey: str) -> BucketSideSpec:
    ref = _ref(b, role, file, bkey)
    if ref.scheme is None and not ref.target.startswith("s3://"):
        raise _err(file, f"{bkey}.{role}", "must be s3://BUCKET[/PREFIX], vcap:SERVICE or a reference")
    if ref.scheme == "vcap" and ref.key:
        raise _err(file, f"{bkey}.{role}", "a bucket side takes the whole service: write vcap:SERVICE without '#'")
    creds = None
    ckey = f"{role}_credentials"
    if ckey in b:
        c = _table(b[ckey], file, f"{bkey}.{ckey}")
        _only_keys(c, set(_CREDENTIAL_KEYS), file, f"{bkey}.{ckey}")
        for required in ("access_key_id", "secret_access_key"):
            if required not in c:
                raise _err(file, f"{bkey}.{ckey}.{required}", "missing", hint="give both keys, or neither")
        creds = CredentialsSpec(
            access_key_id=_ref(c, "access_key_id", file, f"{bkey}.{ckey}"),
            secret_access_key=_ref(c, "secret_access_key", file, f"{bkey}.{ckey}"),
            session_token=_ref(c, "session_token", file, f"{bkey}.{ckey}") if "session_token" in c else None,
        )
    profile = _str(b, f"{role}_profile", file, bkey)
    if profile and creds:
        raise _err(file, f"{bkey}.{role}_profile", f"give either {role}_profile or {role}_credentials, not both")
    return BucketSideSpec(
        ref=ref,
        endpoint_url=_str(b, f"{role}_endpoint_url", file, bkey),
        region=_str(b, f"{role}_region", file, bkey),
        profile=profile,
        credentials=creds,
    )


# ---- resolution (run time) ----


def resolve_environment(
    spec: EnvironmentSpec,
    *,
    resolver: Resolver | None = None,
    state_dir: str | Path | None = None,
    only: str | None = None,
    resume: bool = False,
    clean: bool = False,
) -> EnvConfig:
    """Resolve every reference of one environment into runnable configs.

    Contacts Secrets Manager / SSM and reads VCAP_SERVICES as the references require; never
    writes a secret anywhere. `only` ("db" or "s3") skips resolving the other part entirely.
    `resume` continues an interrupted database copy (`db copy --resume`); `clean` first drops what the
    target database holds (`db copy --clean`).
    """
    from migrate.orchestrate import BucketJob, EnvConfig

    r = resolver or Resolver()
    base_state = Path(state_dir or r.environ.get("MIGRATE_STATE_DIR") or ".migrate-state")
    # Every job's references are resolved, and all that fail are reported at once (one fix-and-rerun
    # round for a plan file, not one per reference).
    problems: list[MigrateError] = []
    db_cfg = None
    if spec.database is not None and only in (None, "db"):
        try:
            db_cfg = _resolve_database(spec.database, r, resume, clean)
        except (ConfigError, ConnectionFailed) as exc:
            problems.append(exc)
    jobs: list[BucketJob] = []
    if only in (None, "s3"):
        for b in spec.buckets:
            try:
                jobs.append(BucketJob(name=b.name, config=_resolve_bucket(b, r, base_state / spec.name / b.name)))
            except (ConfigError, ConnectionFailed) as exc:
                problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        usage = all(isinstance(p, ConfigError) for p in problems)
        message = f"{len(problems)} settings cannot be used: " + "; ".join(str(p) for p in problems)
        raise ConfigError(message) if usage else ConnectionFailed(message)
    if db_cfg is None and not jobs:
        what = {"db": "no database", "s3": "no buckets"}.get(only or "", "nothing")
        raise ConfigError(f"{spec.file}: environments.{spec.name}: {what} to migrate")
    return EnvConfig(name=spec.name, db=db_cfg, buckets=tuple(jobs), sources=spec.describe())


def _resolve_database(d: DatabaseSpec, r: Resolver, resume: bool = False, clean: bool = False) -> Any:
    from migrate.config import DbCopyConfig, DbJobConfig

    for role, ref in (("source", d.source), ("target", d.target)):
        if ref.is_literal and _has_password(ref.target):
            log.warning("%s.%s: a password is written in the plan file; prefer a reference (env:, "
                        "secretsmanager:, ssm:, vcap:)", d.where, role)
    src = database_url_from_secret(r.resolve(d.source, where=f"{d.where}.source").reveal())
    tgt = database_url_from_secret(r.resolve(d.target, where=f"{d.where}.target").reveal())
    try:
        job = DbJobConfig.build(src, tgt, jobs=d.jobs, environ={})
    except ConfigError as exc:
        raise ConfigError(f"{d.where}: {exc.message}", hint=exc.hint) from None
    try:
        return DbCopyConfig(db=job, mode=d.mode, clean=clean, resume=resume, verify=True)
    except ConfigError as exc:
        raise ConfigError(f"{d.where}: {exc.message}", hint=exc.hint) from None


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def _resolve_side(side: BucketSideSpec, role: str, where: str, r: Resolver) -> Any:
    from migrate.config import S3Side

    key = f"{where}.{role}"
    environ: dict[str, str] = {}
    prefix = f"MIGRATE_{role.upper()}_"
    region = side.region
    if side.ref.scheme == "vcap":
        svc = r.vcap().find(side.ref.target, where=key).s3_credentials(where=key)
        location = f"s3://{svc.bucket_name}"
        region = region or svc.region
        if side.credentials is None and svc.access_key_id and svc.secret_access_key:
            environ[prefix + "AWS_ACCESS_KEY_ID"] = svc.access_key_id
            environ[prefix + "AWS_SECRET_ACCESS_KEY"] = svc.secret_access_key.reveal()
    else:
        location = r.resolve_public(side.ref, where=key)
    if side.credentials is not None:
        c = side.credentials
        ckey = f"{where}.{role}_credentials"
        environ[prefix + "AWS_ACCESS_KEY_ID"] = r.resolve(c.access_key_id, where=f"{ckey}.access_key_id").reveal()
        environ[prefix + "AWS_SECRET_ACCESS_KEY"] = r.resolve(
            c.secret_access_key, where=f"{ckey}.secret_access_key"
        ).reveal()
        if c.session_token is not None:
            environ[prefix + "AWS_SESSION_TOKEN"] = r.resolve(c.session_token, where=f"{ckey}.session_token").reveal()
    try:
        return S3Side.build(
            role, location, endpoint_url=side.endpoint_url, region=region, profile=side.profile, environ=environ
        )
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc.message}", hint=exc.hint) from None


def _resolve_bucket(b: BucketSpec, r: Resolver, state_dir: Path) -> Any:
    from migrate.config import S3CopyConfig

    source = _resolve_side(b.source, "source", b.where, r)
    target = _resolve_side(b.target, "target", b.where, r)
    try:
        return S3CopyConfig(
            source=source, target=target, workers=b.workers, mode=b.mode, state_dir=state_dir,
            sse=b.sse, sse_kms_key_id=b.sse_kms_key_id,
        )
    except ConfigError as exc:
        raise ConfigError(f"{b.where}: {exc.message}", hint=exc.hint) from None


def load_environment(
    path: str | Path,
    env_name: str,
    *,
    environ: Mapping[str, str] | None = None,
    state_dir: str | Path | None = None,
    only: str | None = None,
    resume: bool = False,
    clean: bool = False,
) -> EnvConfig:
    """load() + resolve_environment(): what `run` and `demo` both do before orchestrating."""
    spec = load(path).environment(env_name)
    return resolve_environment(
        spec, resolver=Resolver(dict(os.environ) if environ is None else environ), state_dir=state_dir, only=only,
        resume=resume, clean=clean,
    )
