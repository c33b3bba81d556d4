#!/bin/sh
# Builder-stage helper shared by both Dockerfiles: make /opt/venv from the LOCAL source in /src.
#   build-venv.sh "<packages to leave out>" "<botocore service models to keep>"
# Versions come from requirements.lock (used as constraints, so only the package's runtime
# dependencies are installed, each at its locked version); our own code is never fetched.
set -eu
drop=${1:-}
keep_models=${2:-}

# pip's own CA list would ignore the system store (and any docker/build-ca/ certificate).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi
python3 -m venv /opt/venv
/opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
    --constraint /src/requirements.lock /src
if [ -n "$drop" ]; then
    # Dependencies this image never imports (e.g. psycopg in the S3 image).
    # shellcheck disable=SC2086
    /opt/venv/bin/pip uninstall --yes --quiet $drop
fi
# Build tooling is not needed at run time.
/opt/venv/bin/pip uninstall --yes --quiet setuptools pip
if [ -n "$keep_models" ]; then
    # botocore ships ~28 MB of models for 400+ AWS services; an image calls a handful.
    data=$(echo /opt/venv/lib/python3*/site-packages/botocore/data)
    for dir in "$data"/*/; do
        svc=$(basename "$dir")
        case " $keep_models " in *" $svc "*) ;; *) rm -rf "$dir" ;; esac
    done
fi
find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +
# Compile once here, as root, so the non-root runtime user never tries to write __pycache__.
/opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib >/dev/null
# What the images run must still import after the trimming above.
/opt/venv/bin/python -c 'import migrate.cli, migrate.progress, rich.console, rich.table, rich.progress, boto3'
/opt/venv/bin/paas-migrate --version
