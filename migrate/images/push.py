"""Pushing built images to ECR (or any registry): log in, create the repository if asked, tag, push,
and read back the digest the registry stored.

A push is planned first (`plan_push`, read-only: it looks the repositories up) and then executed
(`execute_push`); `--dry-run` prints the plan's exact commands, so both share one path. Registry
passwords (the ECR token) only ever reach the builder on stdin (`login --password-stdin`).
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.config import Secret, redact
from migrate.errors import ConfigError, ConnectionFailed, PreflightError, ToolError
from migrate.images.build import Builder, local_ref, run_tool, validate_name, validate_tag
from migrate.progress import NullReporter, Reporter

log = logging.getLogger(__name__)

# Stand-ins printed by --dry-run for values only known while pushing.
AUTHFILE_PLACEHOLDER = "<temporary auth file>"
DIGESTFILE_PLACEHOLDER = "<temporary digest file>"
PASSWORD_ON_STDIN = "<password on stdin>"


@dataclass(frozen=True)
class EcrTarget:
    account_id: str
    region: str
    endpoint_url: str | None = None
    profile: str | None = None

    @property
    def host(self) -> str:
        return ecr_host(self.account_id, self.region)


@dataclass(frozen=True)
class RegistryTarget:
    """Where to push: a registry host (and ECR details when it is ECR)."""

    host: str
    tls_verify: bool = True
    ecr: EcrTarget | None = None
    username: str | None = None
    password: Secret | None = None

    @classmethod
    def build(
        cls,
        *,
        registry: str | None,
        account_id: str | None,
        region: str | None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        tls_verify: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> RegistryTarget:
        if registry and (account_id or region):
            raise ConfigError("give either --registry or --account-id with --region, not both")
        if registry:
            host = registry.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
            if not host or "/" in host or " " in host:
                raise ConfigError(f"--registry {registry!r} is not a registry host", hint="e.g. 127.0.0.1:5000")
            if username and not password:
                raise ConfigError("--username needs a password", hint="set MIGRATE_REGISTRY_PASSWORD")
            return cls(host, tls_verify, None, username, Secret(password) if password else None)
        if not account_id or not region:
            raise ConfigError("no registry given", hint="pass --registry HOST, or --account-id ID --region R for ECR")
        if not (account_id.isdigit() and len(account_id) == 12):
            raise ConfigError(f"--account-id {account_id!r} is not a 12-digit AWS account ID")
        ecr = EcrTarget(account_id, region, endpoint_url, profile)
        return cls(ecr.host, tls_verify, ecr)


def ecr_host(account_id: str, region: str) -> str:
    return f"{account_id}.dkr.ecr.{region}.amazonaws.com"


@dataclass(frozen=True)
class Command:
    """One builder invocation. `stdin` names what is fed on stdin (never the secret itself)."""

    argv: tuple[str, ...]
    stdin: str | None = None

    def display(self) -> str:
        text = " ".join(_quote(a) for a in self.argv)
        if self.stdin:
            text += f"  < {self.stdin}"
        return redact(text)


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=@,+<>%" for c in arg) and not (arg.startswith("<") and " " in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


@dataclass
class ImagePush:
    name: str
    repository: str
    source_refs: list[str]
    dest_refs: list[str]


@dataclass
class PushPlan:
    """Everything a push will do, in order. Building it changed nothing."""

    builder: Builder
    registry: RegistryTarget
    images: list[ImagePush]
    create_repositories: list[str] = field(default_factory=list)
    existing_repositories: list[str] = field(default_factory=list)

    @property
    def login(self) -> bool:
        return self.registry.ecr is not None or self.registry.username is not None

    def commands(self, authfile: str = AUTHFILE_PLACEHOLDER, digestfile: str = DIGESTFILE_PLACEHOLDER) -> list[Command]:
        """The exact builder commands, in order (placeholders for the temporary files)."""
        cmds: list[Command] = []
        for image in self.images:
            cmds.append(inspect_command(self.builder, image.source_refs[0]))
        if self.login:
            cmds.append(login_command(self.builder, self.registry, authfile))
        for image in self.images:
            for src, dest in zip(image.source_refs, image.dest_refs, strict=True):
                cmds.append(Command((*self.builder.argv("tag", src, dest),)))
                cmds.extend(push_commands(self.builder, self.registry, dest, authfile, digestfile))
        return cmds

    def to_dict(self) -> dict[str, Any]:
        return {
            "builder": self.builder.kind,
            "registry": self.registry.host,
            "create_repositories": self.create_repositories,
            "images": [
                {"name": i.name, "repository": i.repository, "source": i.source_refs, "destination": i.dest_refs}
                for i in self.images
            ],
            "commands": [c.display() for c in self.commands()],
        }


@dataclass(frozen=True)
class PushedImage:
    name: str
    ref: str
    digest: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "ref": self.ref, "digest": self.digest}


# --- commands --------------------------------------------------------------------------------------


def inspect_command(builder: Builder, ref: str) -> Command:
    if builder.kind == "buildah":
        return Command((*builder.argv("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref),))
    return Command((*builder.argv("image", "inspect", "--format", "{{.Id}}", ref),))


def _tls_args(builder: Builder, registry: RegistryTarget) -> list[str]:
    # docker has no per-command switch: plain-HTTP registries go in the daemon's insecure-registries
    # (and loopback registries are allowed there by default).
    if builder.daemonless and not registry.tls_verify:
        return ["--tls-verify=false"]
    return []


def _authfile_args(builder: Builder, registry: RegistryTarget, authfile: str) -> list[str]:
    # podman/buildah keep the token in a temporary auth file that is deleted after the push, rather
    # than in the user's auth.json; docker only has its own config.
    if builder.daemonless and (registry.ecr is not None or registry.username is not None):
        return ["--authfile", authfile]
    return []


def login_command(builder: Builder, registry: RegistryTarget, authfile: str) -> Command:
    username = "AWS" if registry.ecr is not None else (registry.username or "")
    args = ["login", "--username", username, "--password-stdin",
            *_tls_args(builder, registry), *_authfile_args(builder, registry, authfile), registry.host]
    return Command((*builder.argv(*args),), stdin=PASSWORD_ON_STDIN)


def push_commands(builder: Builder, registry: RegistryTarget, dest: str, authfile: str,
                  digestfile: str) -> list[Command]:
    if builder.daemonless:
        args = ["push", *_tls_args(builder, registry), *_authfile_args(builder, registry, authfile),
                "--digestfile", digestfile, dest, f"docker://{dest}"]
        return [Command((*builder.argv(*args),))]
    return [
        Command((*builder.argv("push", dest),)),
        Command((*builder.argv("image", "inspect", "--format", "{{json .RepoDigests}}", dest),)),
    ]


# --- ECR -------------------------------------------------------------------------------------------


def ecr_client(ecr: EcrTarget) -> Any:
    import boto3

    session = boto3.session.Session(profile_name=ecr.profile, region_name=ecr.region)
    return session.client("ecr", endpoint_url=ecr.endpoint_url)


def _aws_error(exc: Exception, what: str) -> ConnectionFailed | ConfigError:
    from botocore.exceptions import ClientError, NoCredentialsError, ProfileNotFound

    if isinstance(exc, NoCredentialsError):
        return ConfigError(f"{what}: no AWS credentials found",
                           hint="set AWS_PROFILE / --profile, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ProfileNotFound):
        return ConfigError(f"{what}: {exc}")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return ConnectionFailed(f"{what}: {err.get('Code', 'error')}: {err.get('Message', '')}".rstrip(": "))
    return ConnectionFailed(f"{what}: {type(exc).__name__}: {exc}")


def repository_exists(client: Any, ecr: EcrTarget, name: str) -> bool:
    """Whether the ECR repository exists. Read-only."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.describe_repositories(registryId=ecr.account_id, repositoryNames=[name])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "RepositoryNotFoundException":
            return False
        raise _aws_error(exc, f"cannot look up ECR repository {name}") from None
    except BotoCoreError as exc:
        raise _aws_error(exc, f"cannot look up ECR repository {name}") from None
    return True


def create_repository(client: Any, ecr: EcrTarget, name: str) -> None:
    """Create an ECR repository that scans every pushed image, with mutable tags (we re-push `0.1.0`)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.create_repository(
            registryId=ecr.account_id,
            repositoryName=name,
            imageScanningConfiguration={"scanOnPush": True},
            imageTagMutability="MUTABLE",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "RepositoryAlreadyExistsException":
            return
        raise _aws_error(exc, f"cannot create ECR repository {name}") from None
    except BotoCoreError as exc:
        raise _aws_error(exc, f"cannot create ECR repository {name}") from None
    log.info("created ECR repository %s (scan on push)", name)


def ecr_login_password(client: Any, ecr: EcrTarget) -> Secret:
    """A registry password from ecr:GetAuthorizationToken (valid 12 hours). Never logged."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        data = client.get_authorization_token(registryIds=[ecr.account_id])["authorizationData"]
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, "ECR login failed") from None
    if not data:
        raise ConnectionFailed("ECR login failed: no authorization data returned")
    try:
        user, _, password = base64.b64decode(data[0]["authorizationToken"]).decode().partition(":")
    except (KeyError, ValueError) as exc:
        raise ConnectionFailed(f"ECR login failed: unreadable token ({type(exc).__name__})") from None
    if user != "AWS" or not password:
        raise ConnectionFailed("ECR login failed: the token is not for user AWS")
    return Secret(password)


# --- plan and execute ------------------------------------------------------------------------------


def plan_push(
    builder: Builder,
    registry: RegistryTarget,
    names: Sequence[str],
    tags: Sequence[str],
    *,
    repository_prefix: str = "",
    create_repository: bool = False,
    client: Any = None,
) -> PushPlan:
    """What a push would do. Read-only: for ECR it looks the repositories up, and creates none.

    A missing ECR repository without `create_repository` is a PreflightError.
    """
    if not tags:
        raise ConfigError("no tag to push")
    if not builder.daemonless and not registry.tls_verify:
        log.warning("docker has no per-push --tls-verify: a plain-HTTP registry other than localhost must be in "
                    "the daemon's insecure-registries")
    if create_repository and registry.ecr is None:
        raise ConfigError("--create-repository only applies to ECR", hint="use --account-id and --region")
    images = []
    for name in names:
        repo = validate_name(f"{repository_prefix}{name}")
        images.append(ImagePush(
            name=name,
            repository=repo,
            source_refs=[local_ref(name, validate_tag(t)) for t in tags],
            dest_refs=[f"{registry.host}/{repo}:{t}" for t in tags],
        ))
    plan = PushPlan(builder, registry, images)
    if registry.ecr is not None:
        client = client or ecr_client(registry.ecr)
        for image in images:
            if repository_exists(client, registry.ecr, image.repository):
                plan.existing_repositories.append(image.repository)
            elif create_repository:
                plan.create_repositories.append(image.repository)
            else:
                raise PreflightError(
                    f"ECR repository {image.repository!r} does not exist in {registry.host}",
                    hint="pass --create-repository to create it (scan on push)",
                )
    return plan


def execute_push(plan: PushPlan, *, client: Any = None, reporter: Reporter | None = None) -> list[PushedImage]:
    """Do what `plan` says: check the local images exist, create repositories, log in, tag, push.

    Returns each pushed reference with the digest the registry stored.
    """
    rep = reporter or NullReporter()
    builder, registry = plan.builder, plan.registry
    # Every local image must exist before anything changes remotely: no half-done push.
    for image in plan.images:
        for src in image.source_refs:
            cmd = inspect_command(builder, src)
            try:
                run_tool(cmd.argv, what=f"{builder.kind} inspect {src}", timeout=120)
            except ToolError:
                raise ToolError(f"no local image {src}",
                                hint=f"run 'paas-migrate images build {image.name}' with the same tags first") from None
    password: Secret | None = registry.password
    if registry.ecr is not None:
        client = client or ecr_client(registry.ecr)
        for repo in plan.create_repositories:
            create_repository(client, registry.ecr, repo)
            rep.note(f"created ECR repository {repo} (scan on push)")
        password = ecr_login_password(client, registry.ecr)
    pushed: list[PushedImage] = []
    with tempfile.TemporaryDirectory(prefix="paas-migrate-push-") as tmp:
        authfile = str(Path(tmp) / "auth.json")
        if plan.login:
            assert password is not None
            login = login_command(builder, registry, authfile)
            try:
                run_tool(login.argv, what=f"{builder.kind} login", input_text=password.reveal() + "\n", timeout=120)
            except ToolError as exc:
                raise ConnectionFailed(f"login to {registry.host} failed: {exc.message}") from None
            rep.note(f"logged in to {registry.host}")
        for image in plan.images:
            for i, (src, dest) in enumerate(zip(image.source_refs, image.dest_refs, strict=True)):
                run_tool(builder.argv("tag", src, dest), what=f"{builder.kind} tag {dest}", timeout=120)
                digestfile = str(Path(tmp) / f"digest-{image.name}-{i}")
                rep.note(f"pushing {dest}")
                digest = _push_one(builder, registry, dest, authfile, digestfile)
                log.info("pushed %s@%s", dest, digest)
                pushed.append(PushedImage(image.name, dest, digest))
    return pushed


def _push_one(builder: Builder, registry: RegistryTarget, dest: str, authfile: str, digestfile: str) -> str:
    cmds = push_commands(builder, registry, dest, authfile, digestfile)
    out = run_tool(cmds[0].argv, what=f"{builder.kind} push {dest}", timeout=3600)
    if builder.daemonless:
        try:
            digest = Path(digestfile).read_text().strip()
        except OSError:
            raise ToolError(f"{builder.kind} push {dest} wrote no digest") from None
    else:
        digest = _docker_repo_digest(run_tool(cmds[1].argv, what=f"docker inspect {dest}", timeout=120), dest) \
            or _digest_from_push_output(out)
    if not digest.startswith("sha256:"):
        raise ToolError(f"{builder.kind} push {dest}: no digest reported (got {digest[:80]!r})")
    return digest


def _docker_repo_digest(inspect_json: str, dest: str) -> str:
    repo = dest.rsplit(":", 1)[0]
    try:
        digests = json.loads(inspect_json) or []
    except ValueError:
        return ""
    for entry in digests:
        name, _, digest = str(entry).partition("@")
        if name == repo:
            return digest
    return ""


def _digest_from_push_output(out: str) -> str:
    for token in out.split():
        if token.startswith("sha256:") and len(token) == 71:
            return token
    return ""
