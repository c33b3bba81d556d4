"""Both Dockerfiles: pinned base, multi-stage, non-root user, the entrypoint and default command,
no secret in any ARG/ENV, and every COPY source present in the build context."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"db-migration": ["db", "copy"], "s3-migration": ["s3", "copy"]}
SECRET_NAME = re.compile(r"(?i)(PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|API_KEY|CREDENTIAL)")
SECRET_VALUE = re.compile(r"(AKIA|ASIA)[A-Z0-9]{16}|://[^/\s:@]+:[^/\s@]+@|-----BEGIN [A-Z ]*PRIVATE KEY")


@dataclass
class Instruction:
    op: str
    args: str


def parse(path: Path) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped (enough for these files)."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        op, _, args = full.partition(" ")
        out.append(Instruction(op.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def _args(instrs: list[Instruction]) -> dict[str, str]:
    values = {}
    for i in instrs:
        if i.op == "ARG" and "=" in i.args:
            key, _, value = i.args.partition("=")
            values[key] = value.strip('"')
    return values


@pytest.fixture(params=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> tuple[str, list[Instruction]]:
    return request.param, parse(ROOT / "docker" / request.param / "Dockerfile")


def test_base_is_pinned_to_an_exact_version(image) -> None:
    name, instrs = image
    base = _args(instrs).get("BASE_IMAGE")
    assert base, f"{name}: no ARG BASE_IMAGE default"
    assert "latest" not in base
    # An exact version: a digest, a dated Debian tag, or a full x.y.z version.
    assert re.search(r"@sha256:[0-9a-f]{64}$|:[a-z]+-\d{8}(-slim)?$|:\d+\.\d+\.\d+", base), base
    froms = [i.args.split()[0] for i in instrs if i.op == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder stage and a runtime stage"
    assert all(f == "${BASE_IMAGE}" for f in froms), froms
    final = [i for i in instrs[[n for n, i in enumerate(instrs) if i.op == "FROM"][-1]:]]
    assert any(i.op == "COPY" and "--from=builder" in i.args and "/opt/venv" in i.args for i in final)


def test_runs_as_a_non_root_user(image) -> None:
    name, instrs = image
    users = [i.args for i in instrs if i.op == "USER"]
    assert users, f"{name}: no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_entrypoint_and_default_command(image) -> None:
    name, instrs = image
    (entry,) = [json.loads(i.args) for i in instrs if i.op == "ENTRYPOINT"]
    (cmd,) = [json.loads(i.args) for i in instrs if i.op == "CMD"]
    assert entry == ["paas-migrate"]
    assert cmd == IMAGES[name]
    assert instrs[-1].op == "CMD"


def test_no_secret_in_any_arg_or_env(image) -> None:
    name, instrs = image
    for i in instrs:
        if i.op in ("ARG", "ENV", "LABEL"):
            for token in re.split(r"\s+(?=[A-Za-z_][A-Za-z0-9_.]*=)", i.args):
                key = token.partition("=")[0]
                assert not SECRET_NAME.search(key), f"{name}: {i.op} {key} looks like a secret"
        assert not SECRET_VALUE.search(i.args), f"{name}: {i.op} {i.args[:60]} holds a credential"


def test_db_image_has_postgres_client_and_rds_bundle() -> None:
    instrs = parse(ROOT / "docker" / "db-migration" / "Dockerfile")
    args = _args(instrs)
    assert args["PG_MAJOR"] == "16"
    assert "truststore.pki.rds.amazonaws.com" in args["RDS_CA_URL"]
    text = " ".join(i.args for i in instrs)
    assert "postgresql-client-${PG_MAJOR}" in text
    assert "/etc/ssl/certs/rds-global-bundle.pem" in text
    s3 = " ".join(i.args for i in parse(ROOT / "docker" / "s3-migration" / "Dockerfile"))
    assert "postgresql-client" not in s3


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = rel.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        if pat.startswith("**/"):
            sub = pat[3:]
            windows = ["/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
            hit = any(fnmatch.fnmatch(w, sub) for w in windows)
        else:
            hit = any(fnmatch.fnmatch("/".join(parts[:n]), pat) for n in range(1, len(parts) + 1))
        if hit:
            ignored = not negate
    return ignored


def test_copy_sources_exist_and_are_not_dockerignored(image) -> None:
    name, instrs = image
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert patterns[0] == "*", "the context starts from nothing and lists what it needs"
    for rel in (".venv/bin/python", ".git/config", "tests/conftest.py", ".migrate-state/report.json"):
        assert _ignored(rel, patterns), rel
    for i in instrs:
        if i.op != "COPY" or i.args.startswith("--from"):
            continue
        *sources, _dest = i.args.split()
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"{name}: COPY {src} is missing"
            probe = src.rstrip("/") + ("/__init__.py" if path.is_dir() and src.startswith("migrate") else "")
            assert not _ignored(probe.rstrip("/"), patterns), f"{name}: {probe} is excluded by .dockerignore"
