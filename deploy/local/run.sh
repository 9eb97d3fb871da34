#!/usr/bin/env bash
# The main job: the whole Glasshouse pipeline on this host.
#   tansu broker (durable sqlite under the state dir) → aggregator → analyzer
#   (detection, and the lake writer into Iceberg tables) → query service (SQL),
#   with the agent watching every container, and the live view on this terminal.
# Ctrl-C stops everything in order: agent, aggregator, query, analyzer, broker.
#
# Environment: GLASSHOUSE_STATE (default /var/lib/glasshouse/local),
#              CARGO_TARGET_DIR (default /var/cache/glasshouse/target),
#              GLASSHOUSE_BIN_LINK (default /usr/local/bin/glasshouse: where the
#              `glasshouse` command for this stack is written).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

./deploy/local/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/glasshouse/target}
STATE=${GLASSHOUSE_STATE:-/var/lib/glasshouse/local}
LOGS=$STATE/logs
mkdir -p "$LOGS" "$STATE/broker"

LINK=${GLASSHOUSE_BIN_LINK:-/usr/local/bin/glasshouse}

# Leftovers of an earlier run.sh that was killed (SIGKILL, a closed
# terminal): its parts run in their own sessions and outlive it. Each part's
# pid is recorded in $STATE/pids; a recorded pid that still runs the same
# program is reported with how to stop it, instead of failing later on a
# busy port.
mkdir -p "$STATE/pids"
if [[ -s $STATE/pids/run.sh ]] && kill -0 "$(cat "$STATE/pids/run.sh")" 2>/dev/null \
   && grep -q run.sh "/proc/$(cat "$STATE/pids/run.sh")/cmdline" 2>/dev/null; then
  echo "run.sh: another run.sh (pid $(cat "$STATE/pids/run.sh")) runs this stack ($STATE); stop it with Ctrl-C in its terminal or: kill -INT $(cat "$STATE/pids/run.sh")" >&2
  exit 1
fi
leftovers=() pids=""
for f in "$STATE"/pids/*; do
  [[ -f $f ]] || continue
  name=${f##*/}; pid=$(cat "$f")
  [[ $name != run.sh ]] || continue
  # Still the same program (a pid can be reused by anything).
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE 'tansu|glasshouse|podman'; then
    leftovers+=("$name (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-80))")
    pids+=" $pid"
  else
    rm -f "$f"
  fi
done
if ((${#leftovers[@]})); then
  echo "run.sh: parts of an earlier run.sh of $STATE are still running (it was killed before it could stop them):" >&2
  printf '    %s\n' "${leftovers[@]}" >&2
  echo "    stop them with: kill -INT$pids   (then run run.sh again)" >&2
  exit 1
fi

echo "==> building the workspace (cargo build, dev profile shared with the tests;" >&2
echo "    the first build takes about 30 min on 2 cores, later ones seconds)" >&2
cargo build --locked --workspace --bins
BIN=$CARGO_TARGET_DIR/debug

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 200); do port_busy "$1" && return 0; sleep 0.1; done
  echo "run.sh: $2 did not start listening on 127.0.0.1:$1; see $LOGS/$2.log" >&2
  return 1
}
for port in 9092 50051 5433 50052 9464 9465 9466 9467; do
  if port_busy "$port"; then
    holder=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:(.*)' | head -n 1)
    echo "run.sh: port 127.0.0.1:$port is already in use${holder:+ by $holder}: another Glasshouse stack or broker? Stop it first." >&2
    exit 1
  fi
done
echo $$ >"$STATE/pids/run.sh"

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
    rm -f "$STATE/pids/$name"
    echo "    $name stopped" >&2
  done
  rm -f "$STATE/pids/run.sh"
  echo "==> logs and broker data kept in $STATE" >&2
}
# After a signal the script ends once everything is stopped.
trap 'stop; exit 130' INT TERM
trap stop EXIT

# Every part runs in its own session (setsid), so Ctrl-C reaches only this
# script, which then stops the parts one by one, in order.
# The broker resolves a relative sqlite path against its working directory.
(cd "$STATE/broker" && exec setsid tansu broker \
    --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine sqlite://tansu.db) >"$LOGS/broker.log" 2>&1 &
PIDS[broker]=$!
echo "${PIDS[broker]}" >"$STATE/pids/broker"
wait_port 9092 broker

# The Docker-compatible API the agent asks for container metadata.
PODMAN_SOCK=/run/podman/podman.sock
if ! curl -sf --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1; then
  mkdir -p /run/podman
  setsid podman system service --time=0 "unix://$PODMAN_SOCK" >"$LOGS/podman-api.log" 2>&1 &
  PIDS[podman-api]=$!
  echo "${PIDS[podman-api]}" >"$STATE/pids/podman-api"
fi

setsid "$BIN/glasshouse-aggregator" --config "$REPO/deploy/local/aggregator.toml" 2>"$LOGS/aggregator.log" &
PIDS[aggregator]=$!
echo "${PIDS[aggregator]}" >"$STATE/pids/aggregator"
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
echo "${PIDS[analyzer]}" >"$STATE/pids/analyzer"
# SQL over the lake, in its own process (deploy/local/query.toml).
(cd "$STATE" && exec setsid "$BIN/glasshouse-query" --config "$REPO/deploy/local/query.toml") 2>"$LOGS/query.log" &
PIDS[query]=$!
echo "${PIDS[query]}" >"$STATE/pids/query"
wait_port 5433 query

setsid "$BIN/glasshouse-agent" --config "$REPO/deploy/local/agent.toml" 2>"$LOGS/agent.log" &
PIDS[agent]=$!
echo "${PIDS[agent]}" >"$STATE/pids/agent"

# The command line, on PATH, with this stack's keys: a small script that
# points the CLI at the control key and the SQL password of $STATE.
mkdir -p "$(dirname "$LINK")"
cat >"$LINK.tmp" <<SCRIPT
#!/bin/sh
# Written by $REPO/deploy/local/run.sh: the glasshouse CLI of the local
# stack in $STATE, signing with its control key and using its SQL password.
export GLASSHOUSE_CONTROL_KEY_FILE="\${GLASSHOUSE_CONTROL_KEY_FILE:-$STATE/control-key}"
export GLASSHOUSE_SQL_TOKEN_FILE="\${GLASSHOUSE_SQL_TOKEN_FILE:-$STATE/sql-password}"
exec "$BIN/glasshouse" "\$@"
SCRIPT
chmod 0755 "$LINK.tmp" && mv "$LINK.tmp" "$LINK"

cat >&2 <<MSG
==> Glasshouse is running: broker 127.0.0.1:9092, aggregator 127.0.0.1:50051, analyzer
    (127.0.0.1:9466), query service 127.0.0.1:5433 (PostgreSQL) and 127.0.0.1:50052
    (Flight SQL), agent. Logs: $LOGS/{broker,aggregator,analyzer,query,agent}.log
    \`glasshouse\` is on PATH: $LINK (uses $STATE/control-key and sql-password).
    SQL password for psql: $STATE/sql-password.
    Try next, in another terminal:
      podman run --rm localhost/glasshouse-test:latest /bin/sh -c 'id; echo x:x:0:0::/:/bin/sh >>/etc/passwd'
      glasshouse sql "SELECT time, container_name, rule, title FROM alerts"
      glasshouse baselines show localhost/glasshouse-test
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
