#!/usr/bin/env bash
# All tests: set up this host (idempotent), then format check, clippy with
# warnings as errors, and every test of the workspace — unit tests and the
# end-to-end tests with a real broker, real containers and real processes —
# run by cargo-nextest, several at once (`.config/nextest.toml` says which
# run alone) — then every benchmark in its smoke mode (small sizes, seconds
# each, no figure asserted: it proves each still runs end to end).
# Environment: CARGO_TARGET_DIR (default /var/cache/glasshouse/target).
set -euo pipefail
cd "$(dirname "$0")/../.."

start=$(date +%s)
./deploy/local/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/glasshouse/target}

echo "==> cargo fmt --check" >&2
cargo fmt --all --check
echo "==> cargo clippy" >&2
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> cargo nextest run" >&2
# Tests start some binaries as real processes (e.g. aggregators to kill -9).
cargo build --locked --workspace --bins
cargo nextest run --locked --workspace --no-fail-fast
echo "==> benchmarks, smoke mode (cargo test --bench '*')" >&2
cargo test --locked -p glasshouse-tests --bench '*'
echo "==> all tests passed in $(( $(date +%s) - start )) s" >&2
