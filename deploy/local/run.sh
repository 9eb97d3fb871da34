#!/usr/bin/env bash
# The main job: the whole Glasshouse pipeline on this host.
#   tansu broker (durable sqlite under the state dir) → aggregator → analyzer
#   (detection, and the lake writer into Iceberg tables) → query service (SQL),
#   with the agent watching every container, and the live view on this terminal.
# Ctrl-C stops everything in order: agent, aggregator, query, analyzer, broker.
#
# Environment: GLASSHOUSE_STATE (default /var/lib/glasshouse/local),
#              CARGO_TARGET_DIR (default /var/cache/glasshouse/target).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

./deploy/local/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/glasshouse/target}
STATE=${GLASSHOUSE_STATE:-/var/lib/glasshouse/local}
LOGS=$STATE/logs
mkdir -p "$LOGS" "$STATE/broker"

echo "==> building (cargo build, dev profile shared with the tests)" >&2
cargo build --locked --workspace --bins --quiet
BIN=$CARGO_TARGET_DIR/debug

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 200); do port_busy "$1" && return 0; sleep 0.1; done
  echo "run.sh: $2 did not start listening on 127.0.0.1:$1; see $LOGS/$2.log" >&2
  return 1
}
for port in 9092 50051 5433 50052; do
  if port_busy "$port"; then
    echo "run.sh: port $port is already in use (another Glasshouse stack or broker?); stop it first" >&2
    exit 1
  fi
done

declare -A PIDS=()
stop() {
  trap - INT TERM EXIT
  # Piped (`run.sh | tee log`), Ctrl-C ends the reader first: the messages
  # below then fail with EPIPE, which must not end this handler before it
  # has stopped every process.
  trap '' PIPE
  set +e
  echo >&2
  echo "==> stopping" >&2
  for name in agent aggregator query analyzer broker podman-api; do
    pid=${PIDS[$name]:-}
    [[ -n $pid ]] || continue
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "    $name did not stop in 15 s, killing" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    echo "    $name stopped" >&2
  done
  echo "==> logs and broker data kept in $STATE" >&2
}
trap stop INT TERM EXIT

# Every part runs in its own session (setsid), so Ctrl-C reaches only this
# script, which then stops the parts one by one, in order.
# The broker resolves a relative sqlite path against its working directory.
(cd "$STATE/broker" && exec setsid tansu broker \
    --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine sqlite://tansu.db) >"$LOGS/broker.log" 2>&1 &
PIDS[broker]=$!
wait_port 9092 broker

# The Docker-compatible API the agent asks for container metadata.
PODMAN_SOCK=/run/podman/podman.sock
if ! curl -sf --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1; then
  mkdir -p /run/podman
  setsid podman system service --time=0 "unix://$PODMAN_SOCK" >"$LOGS/podman-api.log" 2>&1 &
  PIDS[podman-api]=$!
fi

setsid "$BIN/glasshouse-aggregator" --config "$REPO/deploy/local/aggregator.toml" 2>"$LOGS/aggregator.log" &
PIDS[aggregator]=$!
wait_port 50051 aggregator

# The SQL front doors' password (and Flight SQL token), made once.
if [[ ! -s "$STATE/sql-password" ]]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/sql-password")
fi
# The control key that signs operator commands (control_key_file).
if [[ ! -s "$STATE/control-key" ]]; then
  (umask 077; head -c 32 /dev/urandom | base64 >"$STATE/control-key")
fi
# In the state directory: the lake and the password file are relative to it.
(cd "$STATE" && exec setsid "$BIN/glasshouse-analyzer" --config "$REPO/deploy/local/analyzer.toml") 2>"$LOGS/analyzer.log" &
PIDS[analyzer]=$!
# SQL over the lake, in its own process (deploy/local/query.toml).
(cd "$STATE" && exec setsid "$BIN/glasshouse-query" --config "$REPO/deploy/local/query.toml") 2>"$LOGS/query.log" &
PIDS[query]=$!
wait_port 5433 query

setsid "$BIN/glasshouse-agent" --config "$REPO/deploy/local/agent.toml" 2>"$LOGS/agent.log" &
PIDS[agent]=$!

cat >&2 <<MSG
==> Glasshouse is running: broker 127.0.0.1:9092, aggregator 127.0.0.1:50051, analyzer,
    query service 127.0.0.1:5433 (PostgreSQL) and 127.0.0.1:50052 (Flight SQL), agent.
    Logs: $LOGS/{broker,aggregator,analyzer,query,agent}.log
    SQL over the telemetry (Iceberg tables in $STATE/lake, rows queryable within
    about 5 s), password in $STATE/sql-password:
      PGPASSWORD=\$(cat $STATE/sql-password) psql -h 127.0.0.1 -p 5433 -U glasshouse glasshouse
      $BIN/glasshouse sql --token-file $STATE/sql-password "SELECT * FROM containers"
    Baselines (commands are signed with the control key):
      $BIN/glasshouse --control-key-file $STATE/control-key baselines list
    Try, in another terminal:
      podman run --rm localhost/glasshouse-test:latest /bin/sh -c 'id; ls /; cat /etc/passwd'
    Containers and what they execute appear below. Ctrl-C stops everything.
MSG

# Stop when any part dies, saying which.
while true; do
  for name in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
      echo "run.sh: $name exited; last lines of $LOGS/$name.log:" >&2
      tail -n 5 "$LOGS/$name.log" >&2 || true
      unset "PIDS[$name]"
      exit 1
    fi
  done
  sleep 1
done
