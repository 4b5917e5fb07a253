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
# requests; PostgreSQL's own CPU (the postmaster and its backends, from /proc, over the measured window) is printed
# beside it as "database CPU". Everything shares this machine's cores (the load generators, the servers, PostgreSQL, SoftHSM): the
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
    # One after another: SoftHSM's file store is not safe for processes that log in at the same moment
    # (CKR_GENERAL_ERROR at C_Login, seen here with three).
    for ((n = 0; n < count; n++)); do
        ulimit -n 8192
        .build/release/countersignd serve --config "$root/server-$n.yaml" --log-level warning 2>"$root/server-$n.log" &
        pids+=($!)
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((7780 + n))/readyz" >/dev/null && break; sleep 0.2; done
    done
}

bench() {
    local n=$1; shift
    # shellcheck disable=SC2086
    COUNTERSIGN_SERVER=127.0.0.1:$((7700 + n)) COUNTERSIGN_CREDENTIAL=$root/data-0/admin.credential \
        .build/release/countersign bench --http "127.0.0.1:$((7780 + n))" "$@" $flags
}

# CPU seconds used so far by the PostgreSQL cluster: its postmaster and every process it started.
database_seconds() {
    local postmaster ticks=0 pid fields
    postmaster=$(head -1 "$postgres_dir/cluster/data/postmaster.pid")
    for pid in $postmaster $(pgrep -P "$postmaster"); do
        fields=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        ticks=$((ticks + $(echo "$fields" | awk '{ print $12 + $13 }')))
    done
    awk -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", ticks / hz }'
}
seconds_of() { echo "$flags" | sed -n "s/.*--$1 \([0-9.]*\)s.*/\1/p"; }
warmup=$(seconds_of warmup); warmup=${warmup:-0}
duration=$(seconds_of duration); duration=${duration:-10}

# Runs `bench` on servers 0..count-1 at once, each into $root/bench-N.txt, and measures the database's CPU over the
# measured window (after the warm-up) into $root/database.txt.
bench_all() {
    local count=$1 n before pid; shift
    local runs=()
    for ((n = 0; n < count; n++)); do
        bench "$n" "$@" >"$root/bench-$n.txt" 2>&1 &
        runs+=($!)
    done
    sleep "$warmup"; before=$(database_seconds); sleep "$duration"
    awk -v a="$before" -v b="$(database_seconds)" 'BEGIN { printf "%.2f\n", b - a }' >"$root/database.txt"
    for pid in "${runs[@]}"; do wait "$pid" || status=1; done
}

# "database CPU: N µs per request", from $root/database.txt and the requests in $root/bench-*.txt.
database_line() {
    cat "$root"/bench-*.txt | awk -v seconds="$(cat "$root/database.txt")" '
        /^requests: / { answered += $2 }
        END { if (answered > 0) printf "database CPU: %.0f µs per request (%.2f s of PostgreSQL for %d requests)\n", seconds / answered * 1e6, seconds, answered }'
}

status=0
one_server=
for scenario in $scenarios; do
    if [ "$scenario" = one ]; then
        start_servers 1
        for run in "software tier only:micro=1" "HSM tier only:high=1" "realistic mix:micro=60,standard=30,high=10"; do
            echo "== ${run%%:*}, PostgreSQL"
            bench_all 1 --mix "${run#*:}"
            cat "$root/bench-0.txt"; database_line
        done
        one_server=$(grep -oE "= [0-9]+ req/s" "$root/bench-0.txt" | head -1 | grep -oE "[0-9]+" || true)
        cleanup
        continue
    fi
    count=$scenario
    start_servers "$count"
    echo "== realistic mix, $count servers on one PostgreSQL"
    bench_all "$count" --mix micro=60,standard=30,high=10
    # Each server's figures, indented (not rows of the table), then the cluster's: throughputs and CPU seconds summed
    # (CPU per request over the requests of the servers whose CPU was measured), the highest p50 and p99 among them.
    for ((n = 0; n < count; n++)); do
        echo "  -- server $n"; grep -E "server CPU:|group commit:|requests:|latency ms:|errors:|Error" "$root/bench-$n.txt" | sed 's/^/  /' || true
    done
    cat "$root"/bench-*.txt | awk -v count="$count" -v one="${one_server:-0}" '
        /^server CPU: [0-9]/ { seconds += substr($7, 2); measured += $10 }
        /^requests: / { answered += $2; rate += $(NF - 1) }
        /^latency ms: / { if ($4 > p50) p50 = $4; if ($6 > p90) p90 = $6; if ($8 > p99) p99 = $8 }
        END {
            print "scenario: closed loop, " count " servers together (CPU summed over the servers; the highest p50 and p99 among them)"
            if (measured > 0) printf "server CPU: %.0f µs per request (%.2f s for %d requests)\n", seconds / measured * 1e6, seconds, measured
            printf "requests: %d answered in all = %d req/s\n", answered, rate
            printf "latency ms: p50 %s  p90 %s  p99 %s\n", p50, p90, p99
            if (one > 0) printf "ratio to the 1-server mix: %.0f%%\n", rate / one * 100
        }'
    database_line
    cleanup
done
exit $status
