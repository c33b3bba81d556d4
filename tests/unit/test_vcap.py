"""VCAP_SERVICES: postgres and S3 entries as GOV.UK PaaS writes them, missing services, malformed JSON,
and vcap:/env: references through the Resolver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate import vcap
from migrate.config import redact
from migrate.errors import ConfigError
from migrate.secretref import Resolver

PG_PASSWORD = "vcap-pg-password-a1b2c3"
S3_SECRET = "vcap-s3-secret-key-d4e5f6"

# The shape `cf env APP` shows on GOV.UK PaaS (trimmed).
VCAP = {
    "postgres": [{
        "binding_name": None, "instance_name": "core-prod-postgres", "label": "postgres", "name": "core-prod-postgres",
        "plan": "small-ha-13", "provider": None, "syslog_drain_url": None, "tags": ["postgres", "relational"],
        "volume_mounts": [],
        "credentials": {
            "host": "rdsbroker-abc.eu-west-2.rds.amazonaws.com", "port": 5432, "name": "rdsbroker_abc",
            "username": "rdsbroker_abc_owner", "password": PG_PASSWORD,
            "uri": f"postgres://rdsbroker_abc_owner:{PG_PASSWORD}@rdsbroker-abc.eu-west-2.rds.amazonaws.com:5432/"
                   "rdsbroker_abc",
            "jdbcuri": "jdbc:postgresql://...",
        },
    }],
    "aws-s3-bucket": [
        {"label": "aws-s3-bucket", "name": "core-prod-csv-bucket", "plan": "default", "tags": ["s3"],
         "credentials": {"bucket_name": "paas-s3-broker-prod-lon-1234", "aws_region": "eu-west-2",
                         "aws_access_key_id": "AKIAVCAPCSV", "aws_secret_access_key": S3_SECRET,
                         "deploy_env": "prod-lon"}},
        {"label": "aws-s3-bucket", "name": "core-prod-export-bucket", "plan": "default",
         "credentials": {"bucket_name": "paas-s3-broker-prod-lon-5678", "aws_region": "eu-west-2"}},
    ],
    "redis": [{"label": "redis", "name": "core-prod-redis", "credentials": {"uri": "rediss://x:redis-pw-999@r:6379"}}],
}


def test_postgres_service_yields_its_uri() -> None:
    services = vcap.parse(json.dumps(VCAP))
    svc = services.find("core-prod-postgres")
    assert svc.is_postgres and not svc.is_s3
    uri = svc.postgres_uri()
    assert uri.reveal().startswith("postgres://rdsbroker_abc_owner:")
    assert PG_PASSWORD not in repr(svc) and PG_PASSWORD not in str(uri)


def test_postgres_uri_is_built_from_parts_when_absent() -> None:
    data = json.loads(json.dumps(VCAP))
    del data["postgres"][0]["credentials"]["uri"]
    uri = vcap.parse(json.dumps(data)).find("core-prod-postgres").postgres_uri().reveal()
    assert uri == (f"postgresql://rdsbroker_abc_owner:{PG_PASSWORD}@rdsbroker-abc.eu-west-2.rds.amazonaws.com:5432/"
                   "rdsbroker_abc")


def test_s3_service_yields_bucket_region_and_keys() -> None:
    creds = vcap.parse(json.dumps(VCAP)).find("core-prod-csv-bucket").s3_credentials()
    assert creds.bucket_name == "paas-s3-broker-prod-lon-1234"
    assert creds.region == "eu-west-2"
    assert creds.access_key_id == "AKIAVCAPCSV"
    assert creds.secret_access_key is not None and creds.secret_access_key.reveal() == S3_SECRET
    # A binding without keys (the app's own role) gives no keys rather than failing.
    other = vcap.parse(json.dumps(VCAP)).find("core-prod-export-bucket").s3_credentials()
    assert other.access_key_id is None and other.secret_access_key is None


def test_loading_registers_credentials_for_redaction() -> None:
    vcap.parse(json.dumps(VCAP))
    assert redact(f"a {PG_PASSWORD} b {S3_SECRET} c redis-pw-999") == "a *** b *** c ***"
    assert redact("paas-s3-broker-prod-lon-1234") == "paas-s3-broker-prod-lon-1234"


def test_missing_service_lists_the_available_names() -> None:
    with pytest.raises(ConfigError) as info:
        vcap.parse(json.dumps(VCAP)).find("core-prod-db", where="plan.toml: environments.p.database.source")
    assert info.value.message == (
        "plan.toml: environments.p.database.source: no service named 'core-prod-db' in VCAP_SERVICES"
    )
    assert info.value.hint == (
        "available service names: core-prod-csv-bucket, core-prod-export-bucket, core-prod-postgres, core-prod-redis"
    )


def test_wrong_service_type_is_refused() -> None:
    services = vcap.parse(json.dumps(VCAP))
    with pytest.raises(ConfigError, match="is a 'aws-s3-bucket' service, not a PostgreSQL database"):
        services.find("core-prod-csv-bucket").postgres_uri()
    with pytest.raises(ConfigError, match="not an S3 bucket"):
        services.find("core-prod-postgres").s3_credentials()
    with pytest.raises(ConfigError, match="no credentials field 'nope'") as info:
        services.find("core-prod-postgres").field("nope", where="w")
    assert "password" in (info.value.hint or "") and PG_PASSWORD not in str(info.value)


def test_malformed_json_never_echoes_the_content() -> None:
    text = '{"postgres": [{"name": "db", "credentials": {"password": "leak-me-xyz-123", }}]}'
    with pytest.raises(ConfigError) as info:
        vcap.parse(text)
    assert info.value.message.startswith("VCAP_SERVICES is not valid JSON (line 1, column")
    assert "leak-me" not in str(info.value) and "password" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "is not a JSON object of service types"),
        ({"postgres": {"name": "x"}}, "service type 'postgres' is not a list of instances"),
        ({"postgres": [{"credentials": {}}]}, "postgres[0] has no 'name'"),
        ({"postgres": [{"name": "x", "credentials": "s"}]}, "service 'x' has credentials that are not an object"),
    ],
)
def test_malformed_structure(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        vcap.parse(json.dumps(data))
    assert message in info.value.message


def test_whole_cf_env_block_is_accepted() -> None:
    services = vcap.parse(json.dumps({"VCAP_SERVICES": VCAP}))
    assert "core-prod-postgres" in services.names()


def test_load_from_env_or_file(tmp_path: Path) -> None:
    assert vcap.load({"VCAP_SERVICES": json.dumps(VCAP)}).origin == "VCAP_SERVICES"
    path = tmp_path / "vcap.json"
    path.write_text(json.dumps(VCAP))
    loaded = vcap.load({"MIGRATE_VCAP_SERVICES_FILE": str(path), "VCAP_SERVICES": "not used"})
    assert loaded.origin == str(path) and len(loaded.services) == 4
    with pytest.raises(ConfigError, match="cannot read"):
        vcap.load({"MIGRATE_VCAP_SERVICES_FILE": str(tmp_path / "missing.json")})


def test_missing_vcap_services_says_how_to_provide_it() -> None:
    with pytest.raises(ConfigError) as info:
        vcap.load({})
    assert "neither VCAP_SERVICES nor MIGRATE_VCAP_SERVICES_FILE is set" in info.value.message
    assert "cf env" in (info.value.hint or "")


def test_resolver_vcap_and_env_references() -> None:
    r = Resolver({"VCAP_SERVICES": json.dumps(VCAP), "DB_URL": "postgresql://u:env-pw-777@h/db",
                  "TOKEN": "env-token-888"})
    assert r.resolve("vcap:core-prod-postgres", where="w").reveal().startswith("postgres://rdsbroker_abc_owner:")
    assert r.resolve("vcap:core-prod-csv-bucket#aws_access_key_id", where="w").reveal() == "AKIAVCAPCSV"
    assert r.resolve("env:DB_URL", where="w").reveal() == "postgresql://u:env-pw-777@h/db"
    assert r.resolve("literal-value", where="w").reveal() == "literal-value"
    assert r.resolve("env:TOKEN", where="w").reveal() == "env-token-888"
    assert redact("token env-token-888") == "token ***"
    with pytest.raises(ConfigError, match="a single value needs a field name"):
        r.resolve("vcap:core-prod-csv-bucket", where="w")
    with pytest.raises(ConfigError, match="unknown reference scheme 'vault:'"):
        r.resolve("vault:x", where="w")
