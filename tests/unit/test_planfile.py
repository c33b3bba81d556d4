"""The plan file: schema, errors that name the file and the key, and run-time resolution of
env:/vcap:/literal references (Secrets Manager and SSM are in tests/integration/test_secretref.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate import planfile
from migrate.config import redact
from migrate.errors import ConfigError, ExitCode, MigrateError
from migrate.secretref import Resolver, SecretRef, database_url_from_secret, parse_ref
from tests.support.cli import ROOT, run_cli

GOOD = """
[defaults]
jobs = 3
workers = 8

[environments.production.database]
source = "vcap:my-postgres"
target = "secretsmanager:arn:aws:secretsmanager:eu-west-2:123:secret:rds#url"

[environments.production.buckets.csv]
source = "vcap:csv-bucket"
target = "s3://new-csv-bucket"
target_region = "eu-west-2"

[environments.production.buckets.export]
source = "s3://paas-export"
source_credentials = { access_key_id = "env:SRC_KEY", secret_access_key = "env:SRC_SECRET" }
source_endpoint_url = "http://127.0.0.1:9000"
target = "s3://new-export/exports"
workers = 4
mode = "stream"
sse = "aws:kms"
sse_kms_key_id = "arn:aws:kms:eu-west-2:123:key/abc"

[environments.staging]
jobs = 1
db_mode = "stream"

[environments.staging.database]
source = "env:STAGING_SOURCE"
target = "postgresql://rds@db.internal:5432/app"
"""


def _error(text: str, name: str = "plan.toml") -> str:
    with pytest.raises(ConfigError) as info:
        planfile.loads(text, name=name)
    assert info.value.exit_code == ExitCode.USAGE
    return info.value.message


def test_loads_the_documented_schema() -> None:
    pf = planfile.loads(GOOD)
    prod = pf.environment("production")
    assert prod.database is not None
    assert prod.database.source == SecretRef("vcap", "my-postgres")
    assert prod.database.target == SecretRef("secretsmanager", "arn:aws:secretsmanager:eu-west-2:123:secret:rds", "url")
    assert prod.database.jobs == 3 and prod.database.mode == "parallel"
    csv, export = prod.buckets
    assert (csv.name, csv.workers, csv.mode) == ("csv", 8, "auto")
    assert csv.source.ref.scheme == "vcap" and csv.target.region == "eu-west-2"
    assert export.workers == 4 and export.mode == "stream" and export.sse == "aws:kms"
    assert export.source.credentials is not None
    assert export.source.credentials.secret_access_key == SecretRef("env", "SRC_SECRET")
    assert export.source.endpoint_url == "http://127.0.0.1:9000"
    staging = pf.environment("staging")
    assert staging.database is not None and staging.database.jobs == 1 and staging.database.mode == "stream"
    assert staging.buckets == ()


def test_describe_names_references_never_values() -> None:
    d = planfile.loads(GOOD).environment("production").describe()
    assert d["database"]["source"] == "vcap:my-postgres"
    assert d["bucket export"] == {"source": "s3://paas-export", "target": "s3://new-export/exports"}


def test_the_example_file_is_valid() -> None:
    pf = planfile.load(ROOT / "examples" / "plan.toml")
    assert set(pf.environments) == {"staging", "production"}
    assert {b.name for b in pf.environment("production").buckets} == {"csv", "export"}


def test_unknown_scheme_names_file_and_key() -> None:
    text = GOOD.replace('source = "vcap:my-postgres"', 'source = "foo:bar"')
    assert _error(text) == "plan.toml: environments.production.database.source — unknown reference scheme 'foo:'"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('target = "s3://new-csv-bucket"', 'target = "new-csv-bucket"',
         "plan.toml: environments.production.buckets.csv.target: must be s3://"),
        ('target = "s3://new-csv-bucket"', 'targt = "s3://new-csv-bucket"',
         "plan.toml: environments.production.buckets.csv.targt: unknown key"),
        ("workers = 4", 'workers = "four"', "plan.toml: environments.production.buckets.export.workers: must be"),
        ("workers = 4", "workers = 0", "plan.toml: environments.production.buckets.export.workers: must be"),
        ('mode = "stream"', 'mode = "fast"', "plan.toml: environments.production.buckets.export.mode: 'fast'"),
        ('sse = "aws:kms"', 'sse = "AES256"', "plan.toml: environments.production.buckets.export.sse_kms_key_id:"),
        ('source = "vcap:csv-bucket"', 'source = "vcap:csv-bucket#bucket_name"',
         "plan.toml: environments.production.buckets.csv.source: a bucket side takes the whole service"),
        ('secret_access_key = "env:SRC_SECRET"', 'secret = "env:SRC_SECRET"',
         "plan.toml: environments.production.buckets.export.source_credentials.secret: unknown key"),
        ("jobs = 3", "jobs = true", "plan.toml: defaults.jobs: must be"),
        ("[defaults]", "[defaults]\ncolour = 1", "plan.toml: defaults.colour: unknown key"),
        ('source = "env:STAGING_SOURCE"', 'source = "env:STAGING-SOURCE"',
         "plan.toml: environments.staging.database.source — env:STAGING-SOURCE is not a valid"),
        ('source = "env:STAGING_SOURCE"', 'source = "secretsmanager:name#"',
         "plan.toml: environments.staging.database.source — nothing after '#'"),
        ('source = "env:STAGING_SOURCE"', 'source = ""', "plan.toml: environments.staging.database.source: must be"),
        ('source = "env:STAGING_SOURCE"\n', "",
         "plan.toml: environments.staging.database.source: missing"),
        ('db_mode = "stream"', 'db_mode = "copy"', "plan.toml: environments.staging.db_mode: 'copy'"),
    ],
)
def test_errors_name_the_key(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert _error(GOOD.replace(old, new, 1)).startswith(expected)


def test_structural_errors() -> None:
    assert _error("", name="p.toml").startswith("p.toml: environments: missing")
    assert _error("[environments.x]\n", name="p.toml") == (
        "p.toml: environments.x: has neither a database nor any buckets"
    )
    assert _error("environments = 3\n").startswith("plan.toml: environments: must be a table")
    assert _error("[environments]\n").startswith("plan.toml: environments: no environment defined")
    msg = _error("[environments.x.database\nsource = 1\n", name="bad.toml")
    assert msg.startswith("bad.toml: not valid TOML")


def test_unknown_environment_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        planfile.loads(GOOD).environment("prod")
    assert "no environment 'prod'" in info.value.message
    assert info.value.hint == "environments in this file: production, staging"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        planfile.load(tmp_path / "nope.toml")


def test_parse_ref() -> None:
    assert parse_ref("postgresql://u:p@h/db", where="w").is_literal
    assert parse_ref("s3://bucket/prefix", where="w").is_literal
    assert parse_ref("plain", where="w") == SecretRef(None, "plain")
    assert parse_ref("ssm:/a/b", where="w") == SecretRef("ssm", "/a/b")
    assert parse_ref("vcap:svc#password", where="w") == SecretRef("vcap", "svc", "password")
    with pytest.raises(ConfigError, match="needs a name"):
        parse_ref("env:", where="w")


def test_database_url_from_rds_style_json_secret() -> None:
    secret = json.dumps({"username": "master", "password": "p@ss/word", "host": "db.rds", "port": 5432,
                         "dbname": "core", "engine": "postgres"})
    assert database_url_from_secret(secret) == "postgresql://master:p%40ss%2Fword@db.rds:5432/core"
    assert database_url_from_secret(" postgresql://a@b/c ") == "postgresql://a@b/c"
    assert database_url_from_secret('{"not": "rds"}') == '{"not": "rds"}'


def _vcap(tmp_path: Path) -> Path:
    path = tmp_path / "vcap.json"
    path.write_text(json.dumps({
        "postgres": [{"name": "my-postgres", "credentials": {
            "uri": "postgres://app:vcap-db-password-123@paas-db.example:5432/rdsbroker_1"}}],
        "aws-s3-bucket": [{"name": "csv-bucket", "credentials": {
            "bucket_name": "paas-s3-broker-csv", "aws_region": "eu-west-2",
            "aws_access_key_id": "AKIAVCAPEXAMPLE", "aws_secret_access_key": "vcap-s3-secret-456"}}],
    }))
    return path


def test_resolve_environment_from_env_and_vcap(tmp_path: Path) -> None:
    text = GOOD.replace(
        'target = "secretsmanager:arn:aws:secretsmanager:eu-west-2:123:secret:rds#url"', 'target = "env:TARGET_DB"'
    )
    spec = planfile.loads(text).environment("production")
    environ = {
        "MIGRATE_VCAP_SERVICES_FILE": str(_vcap(tmp_path)),
        "TARGET_DB": "postgresql://master:env-target-password-789@rds.example:5432/core",
        "SRC_KEY": "AKIASRCEXAMPLE", "SRC_SECRET": "env-source-secret-000",
    }
    env = planfile.resolve_environment(spec, resolver=Resolver(environ), state_dir=tmp_path / "state")
    assert env.db is not None
    assert env.db.db.source.host == "paas-db.example" and env.db.db.source.password == "vcap-db-password-123"
    assert env.db.db.target.user == "master" and env.db.db.jobs == 3
    csv, export = env.buckets
    assert str(csv.config.source.location) == "s3://paas-s3-broker-csv"
    assert csv.config.source.region == "eu-west-2"
    assert csv.config.source.access_key_id == "AKIAVCAPEXAMPLE"
    assert csv.config.source.secret_access_key.reveal() == "vcap-s3-secret-456"
    assert csv.config.target.access_key_id is None  # no credentials given: the default chain (task role)
    assert csv.config.state_dir == tmp_path / "state" / "production" / "csv"
    assert export.config.source.access_key_id == "AKIASRCEXAMPLE"
    assert export.config.source.endpoint_url == "http://127.0.0.1:9000"
    assert export.config.mode == "stream" and export.config.sse == "aws:kms"
    # Every resolved secret is registered for redaction; the bucket names are not.
    text_with_secrets = "vcap-db-password-123 env-target-password-789 vcap-s3-secret-456 env-source-secret-000"
    assert redact(text_with_secrets) == "*** *** *** ***"
    assert "paas-s3-broker-csv" in redact(repr(env.buckets))
    assert "vcap-s3-secret-456" not in repr(env) and "env-target-password-789" not in repr(env)


def test_only_db_does_not_resolve_bucket_references(tmp_path: Path) -> None:
    spec = planfile.loads(GOOD).environment("staging")
    environ = {"STAGING_SOURCE": "postgresql://app:pw-staging-1@paas:5432/app"}
    env = planfile.resolve_environment(spec, resolver=Resolver(environ), only="db")
    assert env.db is not None and env.buckets == ()
    with pytest.raises(ConfigError, match="no buckets to migrate"):
        planfile.resolve_environment(spec, resolver=Resolver(environ), only="s3")


def test_unset_env_reference_names_the_key() -> None:
    spec = planfile.loads(GOOD).environment("staging")
    with pytest.raises(ConfigError) as info:
        planfile.resolve_environment(spec, resolver=Resolver({}))
    assert info.value.message == (
        "plan.toml: environments.staging.database.source — environment variable STAGING_SOURCE is not set"
    )


def test_every_failing_reference_is_reported_at_once() -> None:
    """A plan file is fixed in one round: the database's and each bucket's failing references together."""
    # (no AWS call: the database target is an unset variable here)
    text = GOOD.replace('target = "secretsmanager:arn:aws:secretsmanager:eu-west-2:123:secret:rds#url"',
                        'target = "env:PROD_TARGET"')
    spec = planfile.loads(text).environment("production")
    vcap = '{"postgres": [{"name": "my-postgres", "label": "postgres", "credentials": {"uri": "postgres://u:p@h/d"}}]}'
    with pytest.raises(MigrateError) as info:
        planfile.resolve_environment(spec, resolver=Resolver({"VCAP_SERVICES": vcap}))
    message = info.value.message
    assert message.startswith("3 settings cannot be used: "), message
    for where in ("environments.production.database.target", "environments.production.buckets.csv.source",
                  "environments.production.buckets.export"):
        assert where in message, (where, message)
    assert len(message.splitlines()) == 1


def test_bad_url_from_a_reference_names_the_key_not_the_value() -> None:
    spec = planfile.loads(GOOD).environment("staging")
    with pytest.raises(ConfigError) as info:
        planfile.resolve_environment(spec, resolver=Resolver({"STAGING_SOURCE": "mysql://u:hunter2-xyz@h/db"}))
    assert info.value.message.startswith("plan.toml: environments.staging.database: source database URL")
    assert "hunter2-xyz" not in str(info.value)


def test_cli_plan_file_error_is_one_line_exit_2(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(GOOD.replace('source = "vcap:my-postgres"', 'source = "foo:bar"'))
    res = run_cli("run", "--plan", str(plan), "--env", "production")
    assert res.code == ExitCode.USAGE
    assert f"{plan}: environments.production.database.source — unknown reference scheme 'foo:'" in res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1


def test_cli_unset_reference_exit_2_and_only_choice(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(GOOD)
    res = run_cli("run", "--plan", str(plan), "--env", "staging", "--dry-run")
    assert res.code == ExitCode.USAGE and "STAGING_SOURCE is not set" in res.err
    # With the reference set, the only thing wrong is the --only value: click's Choice must refuse it.
    res = run_cli("run", "--plan", str(plan), "--env", "staging", "--only", "web", "--dry-run",
                  env={"STAGING_SOURCE": "postgresql://app@127.0.0.1:1/app"})
    assert res.code == ExitCode.USAGE
    assert "Invalid value for '--only'" in res.err and "'web' is not one of" in res.err, res.err
    assert "STAGING_SOURCE" not in res.err
