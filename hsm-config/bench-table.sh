#!/usr/bin/env bash
# Reads the output of `make bench`'s scenarios (countersign bench, one after another) and prints one table:
# scenario, throughput, server CPU per request (with the part in the PKCS#11 module's signing calls, "(N HSM)", and
# PostgreSQL's beside it, "+N db", where measured), p50/p99 latency,
# and the ratio to its ceiling.
set -euo pipefail
awk '
  function flush() {
    if (name != "" && rate != "") {
      printf "%-46s %12s %20s %18s %s\n", name, rate, cpu (hsm != "" ? " (" hsm " HSM)" : "") (db != "" ? " +" db " db" : ""), latency, ratio
    }
    rate = ""; cpu = "-"; hsm = ""; db = ""; latency = "-"; ratio = ""
  }
  BEGIN {
    printf "%-46s %12s %20s %18s %s\n", "scenario", "req/s", "CPU µs/req", "p50 / p99 ms", "ratio to its ceiling"
  }
  /^== / { flush(); section = substr($0, 4); sub(/:.*/, "", section); sub(/ \(.*/, "", section); next }
  /^scenario: open loop at half/ { flush(); name = section " (half load)"; next }
  /^scenario: closed loop/ { flush(); name = section; next }
  /^server CPU: [0-9]/ { cpu = $3; next }
  /^of which HSM signing: [0-9]/ { hsm = $5; next }
  /^database CPU: [0-9]/ { db = $3; next }
  /^requests: / { rate = $(NF - 1); next }
  /^latency ms: / { latency = $4 " / " $8; next }
  /^ratio to the / { ratio = $NF " of " $4; next }
  END { flush() }
'
