#!/usr/bin/env bash
# Runs a Swift Testing command (`swift test …`) with a limit, so that a test that hangs fails the run with its name
# instead of holding CI until its own limit with nothing said.
#
#   hsm-config/test-watchdog.sh SECONDS COMMAND...
#
# The command's output passes through unchanged. If it has not ended after SECONDS, the script prints every test
# that started and never finished (from the runner's "◇ Test … started." and "✔/✘ Test … passed/failed" lines),
# stops the command (SIGINT, then SIGKILL) and exits 124. Otherwise it exits with the command's status.
set -uo pipefail

limit=${1:?usage: test-watchdog.sh SECONDS COMMAND...}
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# setsid: the command and its children (the test runner) in a process group of their own, stopped together.
# stdbuf: the runner writes to a pipe here, which C's stdio fills in 4 KB blocks; a hung runner would keep the last
# block, and with it the lines that say which tests are running. Line by line, nothing is held back.
setsid stdbuf -oL -eL "$@" > >(tee "$log") 2>&1 &
pid=$!
deadline=$((SECONDS + limit))
while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done

if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"
    exit $?
fi

echo
echo "test-watchdog: the tests did not end within ${limit} s. Started and never finished:"
started=$(grep -oE '^◇ Test "[^"]+" started\.' "$log" | sed -E 's/^◇ Test "(.*)" started\.$/\1/' | sort -u)
finished=$(grep -oE '^. Test "[^"]+"( with [0-9]+ test cases?)? (passed|failed)' "$log" |
    sed -E 's/^. Test "(.*)"( with [0-9]+ test cases?)? (passed|failed)$/\1/' | sort -u)
comm -23 <(printf '%s\n' "$started") <(printf '%s\n' "$finished") | sed 's/^/  - /'
kill -INT -- "-$pid" 2>/dev/null
sleep 5
kill -KILL -- "-$pid" 2>/dev/null
exit 124
