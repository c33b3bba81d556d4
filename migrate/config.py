"""Frozen configuration objects built from options and the environment, and the one redaction helper.

Every secret this process learns (a password in a database URL, an AWS secret key, a resolved
secret reference) is registered here, and `redact()` removes all of them, plus any
``scheme://user:password@`` or ``password=...`` pattern, from any text. repr(), logs, error
messages and reports all go through it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit, urlunsplit

from migrate.errors import ConfigError

MASK = "***"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# user:password@ inside any URL-looking token (greedy to the last @ of the token: over-redact, never under).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):(?P<pw>\S*)@")
# password=... in libpq conninfo strings, query strings and environment dumps.
# key=value (spaces allowed), key:value, key: 'value' / "value" (a JSON or YAML value). Not "key: word":
# that is how a message names a setting ("…secret_access_key: missing"), not how a value leaks.
_KV_PASSWORD = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pgpassword|secret[_-]?access[_-]?key|session[_-]?token|aws_secret_access_key)"
    r"['\"]?(?:\s*=\s*|:(?=[^\s'\"])|:\s*(?=['\"])))(?P<q>['\"]?)(?P<val>[^\s'\"&;,]+)"
)


def register_secret(value: str | None) -> None:
    """Remember a secret value (and its URL-encoded/decoded forms) so redact() removes it anywhere."""
    if not value or len(value) < 4:
        # Very short values would mask ordinary words; they are still caught by the patterns.
        return
    with _secrets_lock:
        _secrets.add(value)
        _secrets.add(quote(value, safe=""))
        _secrets.add(unquote(value))


def redact(text: object) -> str:
    """Return `text` as a string with every password and registered secret replaced by ***."""
    s = str(text)
    s = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", s)
    s = _KV_PASSWORD.sub(lambda m: f"{m.group('key')}{m.group('q')}{MASK}", s)
    with _secrets_lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        if value in s:
            s = s.replace(value, MASK)
    return s


@dataclass(frozen=True)
class Secret:
    """A secret string. Its repr and str are masked; `reveal()` is the only way to the value."""

    _value: str = field(repr=False)

    def __post_init__(self) -> None:
        register_secret(self._value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class DatabaseURL:
    """A validated PostgreSQL URL. repr/str never show the password."""

    url: str = field(repr=False)

    def __post_init__(self) -> None:
        """Validated once, here (the properties only re-split the URL)."""
        try:
            password = urlsplit(self.url).password
        except ValueError:
            password = None
        if password:
            register_secret(unquote(password))  # before any message about this URL
        _check_for_libpq(self.url, _split_db_url(self.url))

    @classmethod
    def parse(cls, value: str, *, what: str = "database URL") -> DatabaseURL:
        if not value or not value.strip():
            raise ConfigError(f"{what} is empty", hint="give postgresql://USER@HOST:PORT/DBNAME")
        try:
            return cls(value.strip())
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc.message}", hint=exc.hint) from None

    @property
    def _parts(self):
        return _split_db_url(self.url)

    @property
    def password(self) -> str | None:
        pw = self._parts.password
        return unquote(pw) if pw is not None else None

    @property
    def user(self) -> str | None:
        u = self._parts.username
        return unquote(u) if u is not None else None

    @property
    def host(self) -> str:
        return self._parts.hostname or "localhost"

    @property
    def port(self) -> int:
        return self._parts.port or 5432

    @property
    def dbname(self) -> str:
        return unquote(self._parts.path.lstrip("/")) or (self.user or "postgres")

    def without_password(self) -> str:
        """The URL with the password removed (user, host, port, database and query kept)."""
        p = self._parts
        netloc = p.hostname or ""
        if p.hostname and ":" in p.hostname:
            netloc = f"[{p.hostname}]"
        if p.port:
            netloc = f"{netloc}:{p.port}"
        if p.username is not None:
            netloc = f"{p.username}@{netloc}"
        return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))

    def with_dbname(self, dbname: str) -> DatabaseURL:
        p = self._parts
        return DatabaseURL(urlunsplit((p.scheme, p.netloc, "/" + quote(dbname), p.query, p.fragment)))

    def libpq_env(self) -> dict[str, str]:
        """Environment for libpq programs (pg_dump, pg_restore): the password travels here, not argv."""
        pw = self.password
        return {"PGPASSWORD": pw} if pw else {}

    def display(self) -> str:
        """What to show a user: the URL with the password masked."""
        return redact(self.url)

    def __str__(self) -> str:
        return self.display()

    def __repr__(self) -> str:
        return f"DatabaseURL({self.display()!r})"


def _split_db_url(url: str):
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(
            f"malformed URL ({redact(exc)})", hint="expected postgresql://USER@HOST:PORT/DBNAME"
        ) from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "not a PostgreSQL URL (it must start with postgresql://)",
            hint="expected postgresql://USER@HOST:PORT/DBNAME",
        )
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError("the URL has no host", hint="expected postgresql://USER@HOST:PORT/DBNAME")
    return parts


def _check_for_libpq(url: str, parts: SplitResult) -> None:
    """What urlsplit accepts but libpq would not read as meant: several '@', unknown parameters."""
    if parts.netloc.count("@") > 1:
        raise ConfigError("the URL has more than one '@'",
                          hint="percent-encode special characters in the user name and password"
                               " (@ as %40, : as %3A, / as %2F)")
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)  # libpq's own parser: an unknown parameter (sslmod=) fails here
    except ProgrammingError as exc:
        # libpq's text repeats the token it could not parse, which may be a password: only an
        # unknown parameter's name (one of the URL's own query keys) is shown.
        names = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        m = re.match(r'invalid URI query parameter: "([^"]*)"', str(exc))
        what = f"unknown parameter {m.group(1)!r}" if m and m.group(1) in names else "libpq cannot parse it"
        raise ConfigError(f"the URL is not valid: {what}",
                          hint="percent-encode special characters (% as %25, @ as %40); libpq's parameters"
                               " include sslmode, sslrootcert, connect_timeout") from None


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    value = env.get(name)
    return value if value else None


@dataclass(frozen=True)
class S3Location:
    """s3://BUCKET[/PREFIX]. A non-empty prefix is a folder: it always ends with '/' (added if not
    given, as `aws s3 sync` does), so s3://b/data holds data/x.csv but not database.csv, and keys keep
    their '/' when moved under another prefix (exports/a.csv -> archive/a.csv, not archivea.csv)."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and not self.prefix.endswith("/"):
            object.__setattr__(self, "prefix", self.prefix + "/")

    @classmethod
    def parse(cls, value: str, *, what: str = "S3 location") -> S3Location:
        if not value or not value.startswith("s3://"):
            raise ConfigError(f"{what} {value!r} is not an s3:// URL", hint="expected s3://BUCKET[/PREFIX]")
        rest = value[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,254}", bucket or ""):
            raise ConfigError(f"{what} {value!r} has no valid bucket name", hint="expected s3://BUCKET[/PREFIX]")
        return cls(bucket=bucket, prefix=prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class S3Side:
    """Where one side of an S3 copy is and how to authenticate to it.

    Keys come from MIGRATE_{SOURCE,TARGET}_AWS_* or a profile; with neither, boto3's default chain
    (an ECS task role) applies.
    """

    location: S3Location
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None

    @classmethod
    def build(
        cls,
        role: str,
        location: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> S3Side:
        """Build one side ('source' or 'target') from options, falling back to MIGRATE_<ROLE>_* env vars."""
        prefix = f"MIGRATE_{role.upper()}_"
        key_id = env_value(prefix + "AWS_ACCESS_KEY_ID", environ)
        secret = env_value(prefix + "AWS_SECRET_ACCESS_KEY", environ)
        token = env_value(prefix + "AWS_SESSION_TOKEN", environ)
        if bool(key_id) != bool(secret):
            raise ConfigError(
                f"{prefix}AWS_ACCESS_KEY_ID and {prefix}AWS_SECRET_ACCESS_KEY must be set together"
            )
        if key_id and profile:
            raise ConfigError(f"give either --{role}-profile or {prefix}AWS_* keys, not both")
        endpoint = endpoint_url or env_value(prefix + "S3_ENDPOINT_URL", environ)
        if endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"the {role} S3 endpoint URL {redact(endpoint)!r} is not an http(s) URL",
                                  hint="e.g. https://s3.eu-west-2.amazonaws.com, or leave it out for AWS S3")
        return cls(
            location=S3Location.parse(location, what=f"--{role}"),
            endpoint_url=endpoint,
            region=region or env_value(prefix + "AWS_REGION", environ),
            profile=profile,
            access_key_id=key_id,
            secret_access_key=Secret(secret) if secret else None,
            session_token=Secret(token) if token else None,
        )

    def credential_source(self) -> str:
        if self.access_key_id:
            return "environment keys"
        if self.profile:
            return f"profile {self.profile}"
        return "default credential chain"


@dataclass(frozen=True)
class DbJobConfig:
    """Options shared by db plan / copy / verify."""

    source: DatabaseURL
    target: DatabaseURL
    jobs: int = field(default_factory=lambda: os.cpu_count() or 2)

    @classmethod
    def build(
        cls,
        source: str | None,
        target: str | None,
        *,
        jobs: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> DbJobConfig:
        src = source or env_value("MIGRATE_SOURCE_DATABASE_URL", environ)
        tgt = target or env_value("MIGRATE_TARGET_DATABASE_URL", environ)
        if not src:
            raise ConfigError("no source database", hint="give --source or set MIGRATE_SOURCE_DATABASE_URL")
        if not tgt:
            raise ConfigError("no target database", hint="give --target or set MIGRATE_TARGET_DATABASE_URL")
        if jobs is not None and jobs < 1:
            raise ConfigError("--jobs must be at least 1")
        return cls(
            source=DatabaseURL.parse(src, what="source database URL"),
            target=DatabaseURL.parse(tgt, what="target database URL"),
            jobs=jobs or (os.cpu_count() or 2),
        )


@dataclass(frozen=True)
class DbCopyConfig:
    """Options of `db copy` (and the db part of `run`)."""

    db: DbJobConfig
    mode: str = "parallel"  # parallel | stream
    clean: bool = False  # drop the target's user objects first (needs confirmation)
    resume: bool = False  # continue an interrupted parallel copy recorded in the target
    verify: bool = True
    split_threshold_bytes: int = 256 * 1024 * 1024  # tables above this are copied in ranges
    sections: tuple[str, ...] = ("pre-data", "data", "post-data")

    def __post_init__(self) -> None:
        if self.resume and self.clean:
            raise ConfigError("--resume keeps what an interrupted copy wrote; --clean drops it", hint="choose one")
        if self.resume and self.mode == "stream":
            raise ConfigError("--resume continues a parallel copy; a stream copy cannot be resumed",
                              hint="use --mode parallel --resume, or start again with --clean --yes")


# ---- S3 section: owned by the s3 work (S3CopyConfig and friends go below this line) ----


def env_flag(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """A yes/no environment variable: 0/false/no/off or 1/true/yes/on (any case); unset or empty: `default`."""
    value = env_value(name, environ)
    if value is None:
        return default
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={value!r} is not a yes/no value", hint="use 1 or 0")


@dataclass(frozen=True)
class S3CopyConfig:
    """Options of `s3 plan|copy|verify` (and the s3 part of `run`)."""

    source: S3Side
    target: S3Side
    workers: int = 32
    mode: str = "auto"  # auto | server-side | stream
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("MIGRATE_STATE_DIR") or ".migrate-state"))
    sse: str | None = None  # AES256 | aws:kms
    sse_kms_key_id: str | None = None
    shard: tuple[int, int] | None = None  # (I, N), 1-based
    # Keep a journal of verified objects in the target while the copy is incomplete (migrate.s3.journal)
    target_journal: bool = field(default_factory=lambda: env_flag("MIGRATE_S3_TARGET_JOURNAL", True))

    MODES = ("auto", "server-side", "stream")
    SSE_VALUES = ("AES256", "aws:kms")

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if self.mode not in self.MODES:
            raise ConfigError(f"--mode {self.mode!r} is not one of {', '.join(self.MODES)}")
        if self.sse is not None and self.sse not in self.SSE_VALUES:
            raise ConfigError(f"--sse {self.sse!r} is not one of {', '.join(self.SSE_VALUES)}")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ConfigError("--sse-kms-key-id needs --sse aws:kms")
        if self.shard is not None:
            i, n = self.shard
            if n < 1 or not 1 <= i <= n:
                raise ConfigError(f"--shard {i}/{n} is out of range", hint="I must be between 1 and N")
        self._refuse_overlap()

    def _refuse_overlap(self) -> None:
        """One endpoint, one bucket, and one prefix (a folder, or the whole bucket) containing the other:
        a target inside the source is listed as source objects, so each run would copy its own output
        again (copy/copy/...); a source inside the target would have its own objects as the target's."""
        src, tgt = self.source.location, self.target.location
        if src.bucket != tgt.bucket or (self.source.endpoint_url or "") != (self.target.endpoint_url or ""):
            return
        if src.prefix == tgt.prefix:
            raise ConfigError("the source and the target are the same place", hint="check --source and --target")
        hint = "choose a target outside the source: another bucket, or a prefix beside the source's"
        if tgt.prefix.startswith(src.prefix):
            raise ConfigError(f"the target {tgt} is inside the source {src}: every copy would copy its own "
                              "output again", hint=hint)
        if src.prefix.startswith(tgt.prefix):
            raise ConfigError(f"the source {src} is inside the target {tgt}: the target would hold the source's "
                              "own objects", hint=hint)
