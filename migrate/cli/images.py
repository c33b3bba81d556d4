"""`paas-migrate images build|push`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from migrate.cli.common import app, echo_json, output_options, reporter_for
from migrate.errors import ConfigError

TARGET_CHOICE = click.Choice(["db-migration", "s3-migration", "all"])


def builder_options(func):
    func = click.option(
        "--isolation", type=click.Choice(["oci", "chroot", "rootless"]), default=None,
        envvar="MIGRATE_BUILD_ISOLATION", show_envvar=True,
        help="podman/buildah RUN isolation (chroot works as root inside a container).",
    )(func)
    func = click.option(
        "--storage-root", type=click.Path(file_okay=False, path_type=Path), default=None,
        envvar="MIGRATE_STORAGE_ROOT", show_envvar=True,
        help="podman/buildah image store directory (build and push must use the same one).",
    )(func)
    func = click.option(
        "--storage-driver", metavar="DRIVER", default=None, envvar="MIGRATE_STORAGE_DRIVER", show_envvar=True,
        help="podman/buildah storage driver, e.g. vfs where overlay is not available.",
    )(func)
    func = click.option(
        "--builder", type=click.Choice(["auto", "docker", "podman", "buildah"]), default="auto",
        envvar="MIGRATE_BUILDER", show_envvar=True,
        help="Which builder to use; auto = docker with a running daemon, else podman, else buildah.",
    )(func)
    func = click.option(
        "--tag", "-t", "tags", multiple=True, metavar="TAG",
        help="Image tag (repeatable). Default: the package version and the git short SHA.",
    )(func)
    return output_options(func)


def _builder(builder: str, storage_driver: str | None, storage_root: Path | None, isolation: str | None):
    from migrate.images.build import detect_builder

    return detect_builder(builder, storage_driver=storage_driver,
                          storage_root=storage_root.resolve() if storage_root else None, isolation=isolation)


def _tags(tags: tuple[str, ...]) -> list[str]:
    from migrate.images.build import default_tags

    return list(dict.fromkeys(tags)) if tags else default_tags()


@click.group(name="images")
def command() -> None:
    """Build the db-migration and s3-migration images and push them to ECR."""


@command.command(name="build")
@click.argument("target", type=TARGET_CHOICE, default="all")
@builder_options
@click.option("--platform", metavar="OS/ARCH", default=None, help="Target platform, e.g. linux/amd64 for Fargate.")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
              help="Build argument (repeatable), e.g. PG_MAJOR=16 or BASE_IMAGE=... Never a secret.")
@click.option("--file", "-f", "dockerfile", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Use this Dockerfile instead of docker/TARGET/Dockerfile (one target only).")
@click.option("--context", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Build context directory. Default: the paas-migrate source checkout.")
@click.pass_context
def build_cmd(
    ctx: click.Context, target: str, tags: tuple[str, ...], builder: str, storage_driver: str | None,
    storage_root: Path | None, isolation: str | None, platform: str | None, build_args: tuple[str, ...],
    dockerfile: Path | None, context: Path | None,
) -> int:
    """Build an image (or both) from this source checkout; print the references and image IDs.

    The images run `paas-migrate db copy` / `paas-migrate s3 copy`, configured by MIGRATE_*
    environment variables. Builds locally only; see `images push`.
    """
    from migrate.images.build import SOURCE_ROOT, build_image, expand_targets, image_spec, parse_build_args

    names = expand_targets(target)
    if dockerfile is not None and len(names) != 1:
        raise ConfigError("--file needs a single target", hint="name db-migration or s3-migration")
    args = parse_build_args(build_args)
    specs = [
        image_spec(name, tags=_tags(tags), context=context or SOURCE_ROOT, dockerfile=dockerfile,
                   platform=platform, build_args=args)
        for name in names
    ]
    b = _builder(builder, storage_driver, storage_root, isolation)
    reporter = reporter_for(ctx)
    built = []
    try:
        for spec in specs:
            built.append(build_image(b, spec, reporter))
    finally:
        reporter.close()
    if app(ctx).json:
        echo_json({"built": [i.to_dict() for i in built]})
    else:
        for image in built:
            click.echo(f"built {image.name} ({image.image_id}) with {image.builder}")
            for ref in image.refs:
                click.echo(f"  {ref}")
    return 0


@command.command(name="push")
@click.argument("target", type=TARGET_CHOICE, default="all")
@builder_options
@click.option("--registry", metavar="HOST[:PORT]", default=None, help="Push to this registry (not ECR).")
@click.option("--account-id", metavar="ID", default=None, envvar="MIGRATE_ECR_ACCOUNT_ID",
              help="AWS account of the ECR registry (with --region).")
@click.option("--region", metavar="REGION", default=None, envvar="MIGRATE_ECR_REGION",
              help="AWS region of the ECR registry (with --account-id).")
@click.option("--profile", metavar="NAME", default=None,
              help="AWS profile for the ECR API (default: boto3's credential chain).")
@click.option("--endpoint-url", metavar="URL", default=None, envvar="MIGRATE_ECR_ENDPOINT_URL", show_envvar=True,
              help="ECR API endpoint (for a local AWS API server in tests).")
@click.option("--repository-prefix", metavar="PREFIX", default="",
              help="Prefix of the repository names, e.g. 'myapp/' gives myapp/db-migration.")
@click.option("--create-repository", is_flag=True, help="Create missing ECR repositories (scan on push).")
@click.option("--tls-verify/--no-tls-verify", default=True,
              help="Verify the registry's TLS certificate; --no-tls-verify also allows plain HTTP (local registry).")
@click.option("--username", metavar="USER", default=None,
              help="Log in to a --registry as USER; the password comes from MIGRATE_REGISTRY_PASSWORD.")
@click.option("--dry-run", is_flag=True,
              help="Check AWS access and the repositories (read-only), print the exact builder commands, run none.")
@click.pass_context
def push_cmd(
    ctx: click.Context, target: str, tags: tuple[str, ...], builder: str, storage_driver: str | None,
    storage_root: Path | None, isolation: str | None, registry: str | None, account_id: str | None,
    region: str | None, profile: str | None, endpoint_url: str | None, repository_prefix: str,
    create_repository: bool, tls_verify: bool, username: str | None, dry_run: bool,
) -> int:
    """Tag and push built images, then print the digests the registry stored.

    For ECR, logs in with ecr:GetAuthorizationToken (no aws CLI needed); the password reaches the
    builder on stdin only. Repositories are named db-migration and s3-migration (plus any prefix).
    """
    from migrate.images.build import expand_targets
    from migrate.images.push import RegistryTarget, execute_push, plan_push

    names = expand_targets(target)
    reg = RegistryTarget.build(
        registry=registry, account_id=account_id, region=region, endpoint_url=endpoint_url, profile=profile,
        tls_verify=tls_verify, username=username, password=os.environ.get("MIGRATE_REGISTRY_PASSWORD"),
    )
    b = _builder(builder, storage_driver, storage_root, isolation)
    plan = plan_push(b, reg, names, _tags(tags), repository_prefix=repository_prefix,
                     create_repository=create_repository)
    if dry_run:
        if app(ctx).json:
            echo_json({"dry_run": True, **plan.to_dict()})
            return 0
        click.echo(f"dry run: nothing will be run. Pushing to {reg.host} with {b.kind}:")
        for repo in plan.create_repositories:
            click.echo(f"# would create ECR repository {repo} (scan on push)")
        if reg.ecr is not None:
            click.echo("# the password comes from ecr:GetAuthorizationToken")
        for cmd in plan.commands():
            click.echo(cmd.display())
        return 0
    reporter = reporter_for(ctx)
    try:
        pushed = execute_push(plan, reporter=reporter)
    finally:
        reporter.close()
    if app(ctx).json:
        echo_json({"registry": reg.host, "pushed": [p.to_dict() for p in pushed]})
    else:
        for p in pushed:
            click.echo(f"pushed {p.ref} {p.digest}")
    return 0
