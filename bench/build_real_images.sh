#!/usr/bin/env bash
# Build the REAL db-migration and s3-migration images without any public container registry:
#   1. debootstrap a Debian 12 minbase root file system (from the Debian package mirror),
#      slimmed like the official debian:*-slim images, and import it with buildah as a base;
#   2. build both Dockerfiles against it through `paas-migrate images build` (--build-arg BASE_IMAGE);
#   3. run `paas-migrate --version` inside each as its non-root user; then, from inside the
#      images, a small `s3 copy` between two buckets of a local S3 API server (moto) and a small
#      `db copy` between two local PostgreSQL clusters, checking what arrived;
#   4. print each image's uncompressed size against its budget.
# Slow (minutes) and needs the Debian mirror and PyPI: not part of the test suite.
#   bash bench/build_real_images.sh [WORKDIR]    (default /tmp/paas-migrate-real-images; reused)
# Offline from apt.postgresql.org and the RDS trust store, the db image is built here with
# Debian's PostgreSQL 15 client (PG_APT=debian) and without the RDS CA bundle (RDS_CA_URL=).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/paas-migrate-real-images}
PY=${PY:-.venv/bin/python}
BASE=localhost/debian-bookworm-minbase:local
STORE=(--builder buildah --storage-driver vfs --storage-root "$WORK/store" --isolation chroot)
BUILDAH=(buildah --root "$WORK/store/storage" --runroot "$WORK/store/run" --storage-driver vfs)
say() { printf '[real-images] %s\n' "$*" >&2; }
mkdir -p "$WORK"

command -v debootstrap >/dev/null || { say "installing debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
command -v buildah >/dev/null || { say "installing buildah"; apt-get install -y -qq buildah >/dev/null; }

if ! "${BUILDAH[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  rootfs="$WORK/rootfs"
  if [ ! -x "$rootfs/usr/bin/apt-get" ]; then
    say "debootstrap --variant=minbase bookworm (a few minutes)"
    rm -rf "$rootfs"
    start=$(date +%s)
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    say "debootstrap took $(( $(date +%s) - start ))s"
  fi
  # What debuerreotype's "slimify" does for debian:*-slim: no docs, man pages or translations,
  # now or in packages installed later; and no apt caches.
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
CFG
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/{groff,info,linda,lintian,locale,man}/* "$rootfs"/var/cache/apt/*.bin \
         "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  printf 'APT::Install-Recommends "false";\n' > "$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  say "importing the root file system as $BASE"
  tar --numeric-owner -C "$rootfs" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* \
      -cf "$WORK/rootfs.tar" .
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$ctr" "$WORK/rootfs.tar" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd /bin/bash "$ctr"
  "${BUILDAH[@]}" commit --quiet "$ctr" "$BASE" >/dev/null
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  rm -f "$WORK/rootfs.tar"
fi

# A build machine behind a TLS-inspecting proxy trusts it through locally added CAs: give those
# (public certificates) to the builder stage only, through docker/build-ca/, removed on exit.
added=()
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$crt" ] || continue
  dest="docker/build-ca/host-$(basename "$crt")"
  cp "$crt" "$dest"; added+=("$dest")
done
cleanup() { rm -f "${added[@]}"; }
trap cleanup EXIT

build() {  # name, extra args...
  local name=$1; shift
  local start; start=$(date +%s)
  say "building $name against $BASE"
  "$PY" -m migrate -vv images build "$name" --tag real "${STORE[@]}" --build-arg "BASE_IMAGE=$BASE" "$@" \
    2> "$WORK/build-$name.log" || { tail -25 "$WORK/build-$name.log"; exit 1; }
  say "$name built in $(( $(date +%s) - start ))s"
}
build s3-migration
build db-migration --build-arg PG_APT=debian --build-arg PG_MAJOR=15 --build-arg RDS_CA_URL=
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true  # earlier builds' now-untagged images

run_in() {  # image command...  (as the image's USER, with its environment)
  local image=$1; shift
  local ctr; ctr=$("${BUILDAH[@]}" from --quiet "$image")
  local rc=0
  "${BUILDAH[@]}" run --isolation chroot "$ctr" -- "$@" || rc=$?
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  return $rc
}

for name in s3-migration db-migration; do
  say "$name: paas-migrate --version, as $(run_in "localhost/$name:real" id -un) (uid $(run_in "localhost/$name:real" id -u))"
  run_in "localhost/$name:real" paas-migrate --version
done
run_in localhost/db-migration:real pg_dump --version

say "image sizes, uncompressed (what 'buildah images' / 'docker images' show, and the files' apparent size)"
for spec in "s3-migration:150" "db-migration:250" "debian-bookworm-minbase:0"; do
  name=${spec%%:*}; budget=${spec##*:}
  tag=real; [ "$name" = debian-bookworm-minbase ] && tag=local
  shown=$("${BUILDAH[@]}" images --format '{{.Size}}' "localhost/$name:$tag")
  ctr=$("${BUILDAH[@]}" from --quiet "localhost/$name:$tag")
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  bytes=$(du -sb --apparent-size "$mnt" | cut -f1)
  "${BUILDAH[@]}" umount "$ctr" >/dev/null; "${BUILDAH[@]}" rm "$ctr" >/dev/null
  mb=$(( bytes / 1000000 ))
  verdict="the base"
  if [ "$budget" != 0 ]; then
    if [ "$mb" -le "$budget" ]; then verdict="budget ${budget} MB: ok"; else verdict="budget ${budget} MB: OVER"; fi
  fi
  say "  $name: $shown; files ${mb} MB ($verdict)"
done

say "a small s3 copy from inside the s3-migration image, between two buckets of a local S3 API server"
"$PY" - "${BUILDAH[@]}" <<'PYEOF'
import subprocess, sys
from migrate.local.s3server import REGION, SOURCE_KEYS, TARGET_KEYS, LocalS3Server
buildah = sys.argv[1:]
with LocalS3Server() as server:
    src, tgt = server.client("s3", SOURCE_KEYS), server.client("s3", TARGET_KEYS)
    cfg = {"CreateBucketConfiguration": {"LocationConstraint": REGION}}
    src.create_bucket(Bucket="paas-source", **cfg)
    tgt.create_bucket(Bucket="aws-target", **cfg)
    for i in range(50):
        src.put_object(Bucket="paas-source", Key=f"uploads/{i:03d}.txt", Body=f"object {i}\n".encode() * (i + 1))
    src.put_object(Bucket="paas-source", Key="big/blob.bin", Body=bytes(range(256)) * 40_000)  # ~10 MB
    env = {
        "MIGRATE_SOURCE_S3_URL": "s3://paas-source", "MIGRATE_TARGET_S3_URL": "s3://aws-target",
        "MIGRATE_SOURCE_S3_ENDPOINT_URL": server.endpoint_url, "MIGRATE_TARGET_S3_ENDPOINT_URL": server.endpoint_url,
        "MIGRATE_SOURCE_AWS_REGION": REGION, "MIGRATE_TARGET_AWS_REGION": REGION,
        "MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": SOURCE_KEYS["access_key_id"],
        "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": SOURCE_KEYS["secret_access_key"],
        "MIGRATE_TARGET_AWS_ACCESS_KEY_ID": TARGET_KEYS["access_key_id"],
        "MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": TARGET_KEYS["secret_access_key"],
    }
    ctr = subprocess.run([*buildah, "from", "--quiet", "localhost/s3-migration:real"],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        env_args = [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
        # The image's default command, as ECS runs it: ENTRYPOINT + CMD = paas-migrate s3 copy.
        proc = subprocess.run([*buildah, "run", "--isolation", "chroot", *env_args, ctr, "--",
                               "paas-migrate", "s3", "copy"], capture_output=True, text=True)
    finally:
        subprocess.run([*buildah, "rm", ctr], capture_output=True)
    print(proc.stdout[-2500:])
    print(proc.stderr[-1500:], file=sys.stderr)
    want = {o["Key"]: o["Size"] for o in src.list_objects_v2(Bucket="paas-source")["Contents"]}
    got = {o["Key"]: o["Size"] for o in tgt.list_objects_v2(Bucket="aws-target").get("Contents", [])}
    print(f"[real-images] s3 copy in the image: exit {proc.returncode}, {len(got)}/{len(want)} objects, "
          f"{'same keys and sizes' if got == want else 'DIFFERENT'}", file=sys.stderr)
    sys.exit(0 if proc.returncode == 0 and got == want else 1)
PYEOF

if [ ! -f migrate/db/copier.py ]; then
  say "db copy inside the image: skipped (migrate/db/copier.py is not in this checkout yet)"
  exit 0
fi
say "a small db copy from inside the db-migration image, between two local clusters"
"$PY" - "${BUILDAH[@]}" <<'PYEOF'
import subprocess, sys
from migrate.local.postgres import local_clusters
buildah = sys.argv[1:]
with local_clusters("imgsrc", "imgtgt") as (src, tgt):
    src.create_database("app")
    src.execute("CREATE TABLE t (id int PRIMARY KEY, v text);"
                "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;", "app")
    tgt.create_role("rds_master", "rds-master-password")
    tgt.create_database("app", owner="rds_master")
    ctr = subprocess.run([*buildah, "from", "--quiet", "localhost/db-migration:real"],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        # chroot isolation shares the host's network, so the clusters on 127.0.0.1 are reachable.
        proc = subprocess.run([*buildah, "run", "--isolation", "chroot",
                               "--env", f"MIGRATE_SOURCE_DATABASE_URL={src.url('app')}",
                               "--env", f"MIGRATE_TARGET_DATABASE_URL={tgt.url('app', 'rds_master', 'rds-master-password')}",
                               ctr, "--", "paas-migrate", "db", "copy"], capture_output=True, text=True)
    finally:
        subprocess.run([*buildah, "rm", ctr], capture_output=True)
    print(proc.stdout[-3000:])
    print(proc.stderr[-1500:], file=sys.stderr)
    import psycopg
    with psycopg.connect(tgt.url("app")) as conn:
        try:
            rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        except psycopg.Error as exc:
            rows = f"none ({type(exc).__name__})"
    print(f"[real-images] db copy in the image: exit {proc.returncode}, target rows {rows} (source 5000)",
          file=sys.stderr)
    sys.exit(0 if proc.returncode == 0 and rows == 5000 else 1)
PYEOF
