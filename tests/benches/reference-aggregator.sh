#!/usr/bin/env bash
# Builds the release aggregator of another revision (default: d523df7, the
# main before the hostile-input budgets) for `--bench ingest`'s part 4, and
# prints its path:
#   GLASSHOUSE_BENCH_REFERENCE_AGGREGATOR=$(tests/benches/reference-aggregator.sh) \
#     cargo bench -p glasshouse-tests --bench ingest
# The revision is checked out in a temporary worktree and built with its own
# target directory, so this workspace's build is not disturbed.
set -euo pipefail
rev=${1:-d523df7}
cd "$(dirname "$0")/../.."
cache=${GLASSHOUSE_CACHE:-/var/cache/glasshouse}
out=$cache/reference/$rev
if [[ ! -x $out/glasshouse-aggregator ]]; then
  tree=$(mktemp -d)
  trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true; rm -rf "$tree"' EXIT
  git worktree add --detach "$tree" "$rev" >/dev/null
  (cd "$tree" && CARGO_TARGET_DIR=$cache/reference-target \
    cargo build --release --locked -p glasshouse-aggregator >&2)
  mkdir -p "$out"
  cp "$cache/reference-target/release/glasshouse-aggregator" "$out/"
fi
echo "$out/glasshouse-aggregator"
