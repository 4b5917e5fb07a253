#!/usr/bin/env bash
# `make bench` (its PostgreSQL part) and `make bench-cluster`: servers on one throw-away PostgreSQL (release build).
#
#   hsm-config/bench-cluster.sh [SCENARIO...]
#     one     one server: the software tier, the HSM tier and the realistic mix, one after another
#     2, 3    that many servers at once, each with its own load generator, the realistic mix
#   (default: one 2 3)
#
# Each `countersign bench` runs 4 connections x depth 16 for 10 s after a 2 s warm-up (BENCH_FLAGS). Every server's
# CPU comes from its own /metrics, so a cluster's CPU per request is the sum over its servers over the sum of their
# requests. Everything shares this machine's cores (the load generators, the servers, PostgreSQL, SoftHSM): the
# figures say what limits a cluster here, not what a cluster of machines does. The output is in `countersign bench`'s
# format, so hsm-config/bench-table.sh makes rows of it.
set -euo pipefail
cd "$(dirname "$0")/.."
scenarios=${*:-one 2 3}
root=$PWD/.build-bench-cluster
postgres_dir=/tmp/countersign-bench-postgres-$(id -u)
flags=${BENCH_FLAGS:---duration 10s --warmup 2s}
export SOFTHSM2_CONF=$root/hsm/softhsm2.conf COUNTERSIGN_TOKEN_LABEL=countersign-bench COUNTERSIGN_HSM_PIN=${COUNTERSIGN_HSM_PIN:-countersign-dev}
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
    ./hsm-config/postgres.sh stop "$postgres_dir"
}
trap cleanup EXIT

# Starts `count` servers on a fresh token and database.
start_servers() {
    local count=$1 port n
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
}

bench() {
    local n=$1; shift
    # shellcheck disable=SC2086
    COUNTERSIGN_SERVER=127.0.0.1:$((7700 + n)) COUNTERSIGN_CREDENTIAL=$root/data-0/admin.credential \
        .build/release/countersign bench --http "127.0.0.1:$((7780 + n))" "$@" $flags
}

status=0
one_server=
for scenario in $scenarios; do
    if [ "$scenario" = one ]; then
        start_servers 1
        echo "== software tier only, PostgreSQL"; bench 0 --mix micro=1 || status=1
        echo "== HSM tier only, PostgreSQL"; bench 0 --mix high=1 || status=1
        echo "== realistic mix, PostgreSQL"
        out=$(bench 0 --mix micro=60,standard=30,high=10) || status=1
        echo "$out"
        one_server=$(echo "$out" | grep -oE "= [0-9]+ req/s" | head -1 | grep -oE "[0-9]+" || true)
        cleanup
        continue
    fi
    count=$scenario
    start_servers "$count"
    echo "== realistic mix, $count servers on one PostgreSQL"
    benches=()
    for ((n = 0; n < count; n++)); do
        bench "$n" --mix micro=60,standard=30,high=10 >"$root/bench-$n.txt" 2>&1 &
        benches+=($!)
    done
    for pid in "${benches[@]}"; do wait "$pid" || status=1; done
    # Each server's figures, indented (not rows of the table), then the cluster's: throughputs and CPU seconds summed,
    # the worst server's latency percentiles.
    for ((n = 0; n < count; n++)); do
        echo "  -- server $n"; grep -E "server CPU:|group commit:|requests:|latency ms:|errors:" "$root/bench-$n.txt" | sed 's/^/  /'
    done
    cat "$root"/bench-*.txt | awk -v count="$count" -v one="${one_server:-0}" '
        /^server CPU: [0-9]/ { seconds += substr($7, 2) }
        /^requests: / { answered += $2; rate += $(NF - 1) }
        /^latency ms: / { if ($4 > p50) p50 = $4; if ($6 > p90) p90 = $6; if ($8 > p99) p99 = $8 }
        END {
            print "scenario: closed loop, " count " servers together (CPU summed over the servers; latency of the worst)"
            printf "server CPU: %.0f µs per request (%.2f s for %d requests)\n", seconds / answered * 1e6, seconds, answered
            printf "requests: %d answered in all = %d req/s\n", answered, rate
            printf "latency ms: p50 %s  p90 %s  p99 %s\n", p50, p90, p99
            if (one > 0) printf "ratio to the 1-server mix: %.0f%%\n", rate / one * 100
        }'
    cleanup
done
exit $status
