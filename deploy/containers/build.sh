#!/usr/bin/env bash
# Builds the three Glasshouse images with `podman build`, from binaries built
# on this host and a base image made here (make-base.sh), so no registry is
# needed:
#   localhost/glasshouse-base:TAG        (skipped with --base IMAGE)
#   localhost/glasshouse-agent:TAG
#   localhost/glasshouse-aggregator:TAG
#   localhost/glasshouse-analyzer:TAG    (with glasshouse-query and the `glasshouse` CLI)
#
# Usage: build.sh [--binaries DIR] [--tag TAG] [--base IMAGE]
#   DIR   where glasshouse-agent, -aggregator, -analyzer, -query and glasshouse are
#         (default: $CARGO_TARGET_DIR/release, CARGO_TARGET_DIR defaulting to
#         /var/cache/glasshouse/target; build them with
#         `cargo build --release --workspace --bins`)
#   TAG   image tag (default: the workspace version, e.g. 0.1.0)
#   IMAGE a base image to build FROM instead of making one, e.g.
#         docker.io/library/debian:bookworm-slim where a registry is
#         reachable (the agent then needs libelf1 and zlib1g in it)
# Prints the names of the images it built, one a line. The image a tag named
# before is removed when the rebuild replaces it, unless a container uses it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

bins=${CARGO_TARGET_DIR:-/var/cache/glasshouse/target}/release
tag=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
base=
while [[ $# -gt 0 ]]; do
  case $1 in
    --binaries) bins=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    *) echo "build.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
for b in glasshouse-agent glasshouse-aggregator glasshouse-analyzer glasshouse-query glasshouse; do
  [[ -x $bins/$b ]] || { echo "build.sh: $bins/$b missing: cargo build --workspace --bins first" >&2; exit 1; }
done

# The image a tag names now (empty: none).
image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
# A rebuild leaves the image it replaced untagged: removed here unless a
# container still uses it (then podman refuses and it stays), so repeated
# builds do not fill the disk.
drop_replaced() {
  local old=$1 image=$2
  [[ -n $old && $old != "$(image_id "$image")" ]] || return 0
  podman rmi "$old" >/dev/null 2>&1 || true
}

old_base=
if [[ -z $base ]]; then
  base=localhost/glasshouse-base:$tag
  old_base=$(image_id "$base")
  "$here/make-base.sh" "$base" "$bins/glasshouse-agent" "$bins/glasshouse-aggregator" \
    "$bins/glasshouse-analyzer" "$bins/glasshouse-query" "$bins/glasshouse" >/dev/null
  echo "$base"
fi

# One small build context per image (hard links where possible: the binaries
# are large), so podman does not send the whole target directory.
ctx=$(mktemp -d "${TMPDIR:-/tmp}/glasshouse-images.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
stage() { ln -f "$bins/$1" "$ctx/$2/$1" 2>/dev/null || cp "$bins/$1" "$ctx/$2/$1"; }
for component in agent aggregator analyzer; do
  mkdir -p "$ctx/$component"
  stage "glasshouse-$component" "$component"
done
# The query service ships in the analyzer image: one image to pull for the
# analyzer pod whether or not it runs a query container, and the same build
# of the lake code (glasshouse-lake) on both sides of the lake.
stage glasshouse-query analyzer
stage glasshouse analyzer

for component in agent aggregator analyzer; do
  image=localhost/glasshouse-$component:$tag
  old=$(image_id "$image")
  podman build --quiet --build-arg "BASE=$base" --tag "$image" \
    --file "$here/$component.Containerfile" "$ctx/$component" >/dev/null
  drop_replaced "$old" "$image"
  echo "$image"
done
# The replaced base last: the replaced images were built on it.
[[ -z $old_base ]] || drop_replaced "$old_base" "$base"
