#!/usr/bin/env bash
# Runs a Swift Testing command (`swift test …`) with a limit, so that a test that hangs fails the run with its name
# instead of holding CI until its own limit with nothing said.
#
#   hsm-config/test-watchdog.sh SECONDS COMMAND...
#
# The command's output passes through unchanged. If it has not ended after SECONDS, the script prints every test
# that started and never finished (from the runner's "◇ Test … started." and "✔/✘ Test … passed/failed" lines),
# stops the command and everything it started (SIGTERM, then SIGKILL 5 s later) and exits 124. Otherwise it exits with
# the command's status. Interrupted itself (Ctrl-C, a CI job cancelled), it stops the command the same way first.
set -uo pipefail

limit=${1:?usage: test-watchdog.sh SECONDS COMMAND...}
shift
[[ $limit =~ ^[0-9]+$ ]] || { echo "test-watchdog: the limit must be a number of seconds, not '$limit'" >&2; exit 2; }
log=$(mktemp)
pid=

# Everything the command started, in the session setsid gave it: SwiftPM runs the test binary in a process group of
# its own, and the daemon tests start servers from there, so killing one group would leave the rest running. SIGTERM,
# not SIGINT: a command started in the background by a shell without job control ignores SIGINT.
stop_all() {
    pkill -TERM -s "$pid" 2>/dev/null
    for _ in 1 2 3 4 5; do
        ps -o stat= -s "$pid" | grep -qv '^Z' || return 0  # only zombies left (the command's, reaped at exit)
        sleep 1
    done
    pkill -KILL -s "$pid" 2>/dev/null
}
trap 'rm -f "$log"' EXIT
trap 'stop_all; exit 130' INT TERM HUP

# setsid: the command in a session of its own (without job control a background child is not a process group
# leader, so setsid makes the session in place and $! is its id). stdbuf: the runner's output goes to a pipe, which
# C's stdio would fill in 4 KB blocks, and a hung runner would keep the last block: the lines naming the tests.
NO_COLOR=1 setsid stdbuf -oL -eL "$@" > >(tee "$log") 2>&1 &
pid=$!
deadline=$((SECONDS + limit))
while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done

if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"
    exit $?
fi

echo
echo "test-watchdog: the tests did not end within ${limit} s. Started and never finished:"
# In UTF-8 (the symbols are three bytes each) and without colours, whatever the caller's locale and terminal.
export LC_ALL=C.UTF-8
plain=$(sed 's/\x1b\[[0-9;]*m//g' "$log")
started=$(printf '%s\n' "$plain" | sed -nE 's/^◇ Test "(.*)" started\.$/\1/p' | sort -u)
finished=$(printf '%s\n' "$plain" | sed -nE 's/^(✔|✘) Test "(.*)"( with [0-9]+ test cases?)? (passed|failed) after .*/\2/p' | sort -u)
comm -23 <(printf '%s\n' "$started") <(printf '%s\n' "$finished") | sed '/^$/d; s/^/  - /'
stop_all
exit 124
