#!/usr/bin/env bash
# Builds the runtime base image of the Glasshouse images without any registry:
# a rootfs holding only what the given binaries load (their ldd closure: the
# dynamic loader, libc, libm, libgcc_s, zlib, libelf for the agent), the CA
# bundle, and passwd/group entries for root and the unprivileged `glasshouse`
# user (uid/gid 65532), imported with `podman import`.
#
# The libraries come from this build host, so the image runs exactly the
# libraries the binaries were linked against. Where a registry is reachable,
# `--build-arg BASE=docker.io/library/debian:bookworm-slim` (plus libelf1 and
# zlib1g for the agent) in build.sh does the same job.
#
# Usage: make-base.sh IMAGE BINARY...   (idempotent: rebuilds, same content)
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: $0 IMAGE BINARY..." >&2; exit 2; }
image=$1; shift

root=$(mktemp -d)
trap 'rm -rf "$root" "$root.tar"' EXIT
mkdir -p "$root"/{etc,tmp,var/lib/glasshouse,etc/glasshouse,usr/bin}
chmod 1777 "$root/tmp"

# The ldd closure of every binary, each library at the same path as on the
# build host (and under /lib64 for the loader, where binaries look for it).
libs=$(for bin in "$@"; do
  [[ -x $bin ]] || { echo "make-base.sh: $bin is not an executable" >&2; exit 1; }
  ldd "$bin" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }'
done | sort -u)
[[ -n $libs ]] || { echo "make-base.sh: ldd found no libraries" >&2; exit 1; }
for lib in $libs; do
  # Resolve directory links (/lib -> usr/lib on a merged-/usr host) so that
  # the links below, made as on the host, lead to the files.
  dir=$(readlink -f "$(dirname "$lib")")
  mkdir -p "$root$dir"
  cp -L "$lib" "$root$dir/$(basename "$lib")"
done
for link in /lib /lib64 /bin /sbin; do
  if [[ -L $link ]]; then ln -sfn "$(readlink "$link")" "$root$link"; fi
done

# TLS trust for rustls/librdkafka where a config names no CA file.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi

cat > "$root/etc/passwd" <<'PW'
root:x:0:0:root:/root:/sbin/nologin
glasshouse:x:65532:65532:glasshouse:/var/lib/glasshouse:/sbin/nologin
PW
cat > "$root/etc/group" <<'GR'
root:x:0:
glasshouse:x:65532:
GR
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
chown 65532:65532 "$root/var/lib/glasshouse"

tar --numeric-owner -C "$root" -cf "$root.tar" .
podman import --quiet --change 'ENV PATH=/usr/bin' "$root.tar" "$image" >/dev/null
echo "$image"
