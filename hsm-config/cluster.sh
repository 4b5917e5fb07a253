#!/usr/bin/env bash
# `make cluster`: a throw-away PostgreSQL and three countersignd on it, with the example configuration, until Ctrl-C.
#
# Server N (0, 1, 2) listens on 7600+N (framed) and 7680+N (HTTP), keeps its lock and the first admin's credential in
# .data/cluster/server-N, and shares the database and the development token with the others. Everything stops at
# Ctrl-C; the database goes with it (it lives in /tmp, owned by the unprivileged postgres user when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
root=.data/cluster
postgres_dir=/tmp/countersign-cluster-$(id -u)
mkdir -p "$root"
COUNTERSIGN_POSTGRES_PORT=${COUNTERSIGN_POSTGRES_PORT:-7650} ./hsm-config/postgres.sh start "$postgres_dir" >/dev/null
# shellcheck disable=SC1091
source "$postgres_dir/env"
port=${COUNTERSIGN_TEST_POSTGRES#*:}; port=${port%%/*}

pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ./hsm-config/postgres.sh stop "$postgres_dir"
}
trap stop EXIT INT TERM

for n in 0 1 2; do
    sed -e "s/^  port: 7600/  port: $((7600 + n))/" -e "s/^  port: 7680/  port: $((7680 + n))/" \
        -e "s#^data_dir: .data #data_dir: $root/server-$n #" hsm-config/countersign.yaml >"$root/server-$n.yaml"
    cat >>"$root/server-$n.yaml" <<YAML

store:                             # one PostgreSQL for the three servers (hsm-config/cluster.sh)
  kind: postgres
  host: 127.0.0.1
  port: $port
  database: countersign
  user: countersign
  password_file: $COUNTERSIGN_TEST_POSTGRES_PASSWORD_FILE
  tls: disable                     # loopback only; use require (with ca_file) across a network
YAML
done

.build/debug/countersignd init --config "$root/server-0.yaml"
for n in 0 1 2; do
    .build/debug/countersignd serve --config "$root/server-$n.yaml" 2>"$root/server-$n.log" &
    pids+=($!)
done
for n in 0 1 2; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((7680 + n))/readyz" >/dev/null && break; sleep 0.2; done
done
cat <<TEXT
three servers on one PostgreSQL (127.0.0.1:$port, database countersign):
  framed  127.0.0.1:7600, 127.0.0.1:7601, 127.0.0.1:7602
  HTTP    http://127.0.0.1:7680, :7681, :7682 (/readyz, /metrics, /.well-known/jwks.json)
  logs    $root/server-{0,1,2}.log
  admin   COUNTERSIGN_CREDENTIAL=$root/server-0/admin.credential COUNTERSIGN_SERVER=127.0.0.1:7600,127.0.0.1:7601,127.0.0.1:7602
Ctrl-C stops them and removes the database.
TEXT
wait
