#!/usr/bin/env bash
# Builds the release agent and aggregator and the release analyzer benchmark
# of a revision (default: d523df7, the main before the hostile-input
# budgets), and prints the variables that hand them to the benchmarks:
#   eval "$(tests/benches/reference.sh a8a6fcb)"
#   cargo bench -p glasshouse-tests --bench agent     # + GLASSHOUSE_BENCH_REFERENCE_AGENT
#   cargo bench -p glasshouse-tests --bench ingest    # + ..._AGGREGATOR (part 4)
#   GLASSHOUSE_BENCH_ONLY=scoring cargo bench -p glasshouse-tests --bench analyzer
# With `this` as the revision it builds this tree's release agent and
# aggregator (`cargo bench` builds its benchmarks) and prints
# GLASSHOUSE_BENCH_AGGREGATOR_BINARY, so both sides of a comparison are
# release builds made the same way.
# The revision is checked out in a worktree ($GLASSHOUSE_CACHE/ref-REV, kept
# so a rerun is incremental) and built with its own target directory, so
# this workspace's build is not disturbed.
set -euo pipefail
rev=${1:-d523df7}
cd "$(dirname "$0")/../.."
cache=${GLASSHOUSE_CACHE:-/var/cache/glasshouse}
if [[ $rev == this ]]; then
  target=${CARGO_TARGET_DIR:-$cache/target}
  CARGO_TARGET_DIR=$target cargo build --release --locked -p glasshouse-agent -p glasshouse-aggregator >&2
  echo "export GLASSHOUSE_BENCH_AGGREGATOR_BINARY=$target/release/glasshouse-aggregator"
  exit 0
fi
out=$cache/reference/$rev
target=$cache/reference-target
tree=$cache/ref-$rev
if [[ ! -x $out/analyzer-bench ]]; then
  [[ -d $tree ]] || git worktree add --detach "$tree" "$rev" >/dev/null
  (cd "$tree" && CARGO_TARGET_DIR=$target cargo build --release --locked \
    -p glasshouse-agent -p glasshouse-aggregator >&2)
  bench=$(cd "$tree" && CARGO_TARGET_DIR=$target cargo bench --locked --no-run \
    -p glasshouse-tests --bench analyzer --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "analyzer" and m.get("executable"):
        print(m["executable"])')
  mkdir -p "$out"
  cp "$target/release/glasshouse-agent" "$target/release/glasshouse-aggregator" "$out/"
  cp "$bench" "$out/analyzer-bench"
fi
echo "export GLASSHOUSE_BENCH_REFERENCE_AGENT=$out/glasshouse-agent"
echo "export GLASSHOUSE_BENCH_REFERENCE_AGGREGATOR=$out/glasshouse-aggregator"
echo "export GLASSHOUSE_BENCH_REFERENCE_ANALYZER=$out/analyzer-bench"
