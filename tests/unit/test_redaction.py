"""Secrets never reach output, logs, repr or errors."""

from __future__ import annotations

import logging

import pytest

from migrate.config import DatabaseURL, S3Side, Secret, redact
from migrate.errors import ConfigError
from migrate.logs import RedactingFilter
from migrate.model import Report


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://u:s3cretpw@host:5432/db",
        "could not connect to postgres://admin:s3cretpw@db.example/x?sslmode=require",
        "host=a user=b password=s3cretpw dbname=c",
        "PGPASSWORD=s3cretpw pg_dump",
        "https://user:s3cretpw@registry.example/v2/",
        'config: {"password": "s3cretpw"}',
        "password: 's3cretpw'",
        "aws_secret_access_key:s3cretpw",
        "password = s3cretpw",
    ],
)
def test_redact_patterns(text: str) -> None:
    assert "s3cretpw" not in redact(text)


def test_a_setting_named_in_a_message_is_not_taken_for_its_value() -> None:
    for text in ("credentials.secret_access_key: missing", "#password: no key 'password' in the secret"):
        assert redact(text) == text


def test_password_with_special_characters() -> None:
    url = DatabaseURL.parse("postgresql://u:p%40ss%2Fw0rd@h/db")
    assert url.password == "p@ss/w0rd"
    for shown in (repr(url), str(url), url.display(), redact(f"failed: {url.url}"), redact("p@ss/w0rd")):
        assert "p@ss/w0rd" not in shown and "p%40ss%2Fw0rd" not in shown


def test_database_url_parts_and_without_password() -> None:
    url = DatabaseURL.parse("postgresql://app:topsecret@db.internal:6543/service?sslmode=verify-full")
    assert (url.user, url.host, url.port, url.dbname) == ("app", "db.internal", 6543, "service")
    assert url.without_password() == "postgresql://app@db.internal:6543/service?sslmode=verify-full"
    assert url.libpq_env() == {"PGPASSWORD": "topsecret"}
    assert "topsecret" not in repr(url)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("", r"^database URL is empty \(give postgresql://USER@HOST:PORT/DBNAME\)$"),
        ("mysql://u:pw-4711-a@h/db", r"^database URL: not a PostgreSQL URL \(it must start with postgresql://\)"),
        ("postgresql://u:pw-4711-b@h:notaport/db", r"^database URL: malformed URL \(Port could not be cast"),
        ("postgresql://u:pw-4711-c@h:99999/db", r"^database URL: malformed URL \(Port out of range"),
        ("postgresql://:pw-4711-d@/db", r"^database URL: the URL has no host"),
        ("postgresql:///db", r"^database URL: the URL has no host"),
    ],
)
def test_malformed_urls_are_config_errors(bad: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        DatabaseURL.parse(bad)
    message = str(info.value)  # the raw message, not a redacted one
    assert "pw-4711" not in message  # every password above starts with pw-4711
    assert len(message.splitlines()) == 1


def test_secret_and_s3_side_repr() -> None:
    side = S3Side.build(
        "source",
        "s3://bucket-a/prefix",
        environ={
            "MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": "AKIDEXAMPLEVALUE",
            "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": "very-secret-value-123",
        },
    )
    assert "very-secret-value-123" not in repr(side)
    assert side.secret_access_key is not None and side.secret_access_key.reveal() == "very-secret-value-123"
    assert redact("leaked very-secret-value-123 here") == "leaked *** here"
    assert repr(Secret("another-secret")) == "Secret(***)"


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        logger.info("connecting to %s", "postgresql://u:logsecret@h/db")
    assert "logsecret" not in caplog.text


def test_report_json_is_redacted() -> None:
    r = Report(kind="db", source="postgresql://u:reportsecret@h/db")
    r.errors.append("failed at postgresql://u:reportsecret@h/db")
    assert "reportsecret" not in str(r.to_dict())


def test_a_message_naming_a_secret_setting_keeps_its_words() -> None:
    """"…secret_access_key — environment variable X is not set" names a setting; no value to hide."""
    from migrate.errors import ConfigError
    from migrate.secretref import Resolver

    try:
        Resolver({}).resolve("env:UNSET_FOR_TEST", where="plan.toml: environments.p.credentials.secret_access_key")
    except ConfigError as exc:
        text = redact(str(exc))
    assert "environment variable UNSET_FOR_TEST is not set" in text, text


def test_libpq_programs_get_the_url_as_given_minus_its_password() -> None:
    """pg_dump/pg_restore/psql must see the same settings psycopg does: libpq decodes %XX but not '+'."""
    from migrate.db.pgtools import libpq_target, tool_env

    url = DatabaseURL.parse("postgresql://u:pw-in-netloc@h:5432/db?options=-c%20TimeZone%3DEtc/GMT+1"
                            "&application_name=a+b&password=pw-in-query&sslmode=require")
    target = libpq_target(url)
    assert target == ("postgresql://u@h:5432/db?options=-c%20TimeZone%3DEtc/GMT+1&application_name=a+b"
                      "&sslmode=require"), target
    assert "pw-in" not in target
    query_only = DatabaseURL.parse("postgresql://u@h/db?password=x+y%2Bz&sslmode=disable")
    assert tool_env(query_only)["PGPASSWORD"] == "x+y+z"  # as libpq reads it
    assert "password" not in libpq_target(query_only)
