#!/usr/bin/env bash
# Runs libmemcached's protocol suite (memccapable, binary then ASCII) against the example server,
# once per send path (copy, zerocopy, uring: built with --features io-uring), and fails unless
# every test passes. Installs memcached and libmemcached-tools with apt if
# memccapable is missing. The server listens on a free port (it binds port 0 and prints the
# address) and is always stopped, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v memccapable >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq memcached libmemcached-tools >/dev/null
fi

cargo build --release -p memcached-server --bin memcached_server --features io-uring
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
server="$target_dir/release/memcached_server"

# The command line: --help succeeds, a bad argument is refused with usage and status 2.
"$server" --help | grep -q -- '--max-item-size' || { echo "--help does not print usage" >&2; exit 1; }
status=0
"$server" --send-path nosuch 2>/dev/null || status=$?
[ "$status" -eq 2 ] || { echo "an unknown send path exited with $status, not 2" >&2; exit 1; }
status=0
"$server" --threads zero 2>/dev/null || status=$?
[ "$status" -eq 2 ] || { echo "a bad argument exited with $status, not 2" >&2; exit 1; }

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        # Clean shutdown on SIGTERM is part of what is checked; force it only if it hangs.
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Runs both suites against a fresh server sending with send path $1.
run_suite() {
local path="$1"
# Emptied here, not by the redirection below: that one happens in the background child, and
# the loop reading the port could still find the previous server's address.
: >"$work/out"
"$server" --listen 127.0.0.1:0 --threads 2 --send-path "$path" >"$work/out" 2>"$work/err" &
server_pid=$!

port=""
for _ in $(seq 100); do
    port="$(sed -n 's/^memcached_server listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/out")"
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/err" >&2; echo "server exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$port" ] || { echo "server did not print its address" >&2; exit 1; }
head -n 1 "$work/out"

for proto in -b -a; do
    status=0
    timeout 120 memccapable -h 127.0.0.1 -p "$port" "$proto" >"$work/suite" 2>&1 || status=$?
    cat "$work/suite"
    passes="$(grep -c '\[pass\]' "$work/suite" || true)"
    others="$(grep -E '^(binary|ascii) ' "$work/suite" | grep -vc '\[pass\]' || true)"
    if [ "$status" -ne 0 ] || [ "$passes" -lt 27 ] || [ "$others" -ne 0 ] \
        || ! grep -q '^All tests passed' "$work/suite"; then
        echo "memccapable $proto ($path): FAILED (exit $status, $passes passed, $others not passed)" >&2
        failed=1
    else
        echo "memccapable $proto ($path): all $passes tests passed"
    fi
done

kill -TERM "$server_pid"
if ! wait "$server_pid"; then
    echo "server did not exit cleanly on SIGTERM" >&2
    failed=1
fi
server_pid=""
}

failed=0
for path in copy zerocopy uring; do
    run_suite "$path"
done
exit "$failed"
