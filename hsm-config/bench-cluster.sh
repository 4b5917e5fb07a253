#!/usr/bin/env bash
# `make bench-cluster`: the realistic mix against 1, 2 and 3 servers on one throw-away PostgreSQL (release build).
# One `countersign bench` per server, all at once (each: 4 connections x depth 16, 10 s after a 2 s warm-up); the
# figures of each and their sum. Everything runs on this machine: the load generators, the servers, PostgreSQL and
# SoftHSM share its cores, so the sum says what limits a cluster here, not what a cluster of machines does.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=${*:-1 2 3}
root=$PWD/.build-bench-cluster
postgres_dir=/tmp/countersign-bench-postgres-$(id -u)
export SOFTHSM2_CONF=$root/hsm/softhsm2.conf COUNTERSIGN_TOKEN_LABEL=countersign-bench COUNTERSIGN_HSM_PIN=${COUNTERSIGN_HSM_PIN:-countersign-dev}
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
    ./hsm-config/postgres.sh stop "$postgres_dir"
}
trap cleanup EXIT

for count in $counts; do
    rm -rf "$root" && mkdir -p "$root"
    COUNTERSIGN_HSM_DIR=$root/hsm COUNTERSIGN_HSM_SO_PIN=countersign-so-dev ./hsm-config/init-token.sh >/dev/null
    ./hsm-config/postgres.sh start "$postgres_dir" >/dev/null
    # shellcheck disable=SC1091
    source "$postgres_dir/env"
    port=${COUNTERSIGN_TEST_POSTGRES#*:}; port=${port%%/*}
    for ((n = 0; n < count; n++)); do
        sed -e "s/port: 7700 }/port: $((7700 + n)) }/" -e "s/port: 7780 }/port: $((7780 + n)) }/" -e "s#^data_dir: .*#data_dir: $root/data-$n#" \
            hsm-config/bench.yaml >"$root/server-$n.yaml"
        printf '\nstore: { kind: postgres, host: 127.0.0.1, port: %s, database: countersign, user: countersign, password_file: %s, tls: disable, pool_size: 16 }\n' \
            "$port" "$COUNTERSIGN_TEST_POSTGRES_PASSWORD_FILE" >>"$root/server-$n.yaml"
    done
    .build/release/countersignd init --config "$root/server-0.yaml" >/dev/null
    for ((n = 0; n < count; n++)); do
        ulimit -n 8192
        .build/release/countersignd serve --config "$root/server-$n.yaml" --log-level warning 2>"$root/server-$n.log" &
        pids+=($!)
    done
    for ((n = 0; n < count; n++)); do
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((7780 + n))/readyz" >/dev/null && break; sleep 0.2; done
    done
    echo "== $count server(s) on one PostgreSQL: realistic mix, one load generator per server"
    benches=()
    for ((n = 0; n < count; n++)); do
        COUNTERSIGN_SERVER=127.0.0.1:$((7700 + n)) COUNTERSIGN_CREDENTIAL=$root/data-0/admin.credential \
            .build/release/countersign bench --http "127.0.0.1:$((7780 + n))" --mix micro=60,standard=30,high=10 ${BENCH_FLAGS:---duration 10s --warmup 2s} \
            >"$root/bench-$n.txt" 2>&1 &
        benches+=($!)
    done
    status=0
    for pid in "${benches[@]}"; do wait "$pid" || status=1; done
    total=0
    for ((n = 0; n < count; n++)); do
        echo "-- server $n"; grep -E "requests:|latency ms:|errors:" "$root/bench-$n.txt"
        rate=$(grep -oE "= [0-9]+ req/s" "$root/bench-$n.txt" | head -1 | grep -oE "[0-9]+" || echo 0)
        total=$((total + rate))
    done
    echo "total: $total req/s"
    cleanup
    [ $status = 0 ] || exit $status
done
