#!/usr/bin/env bash
# CI smoke of the load generator against the example server: builds both
# binaries (release), starts `memcached_server` on a free 127.0.0.1 port, runs
# `loadgen` for 2 s (100 B values, 8 connections x depth 8, 9:1 get:set after a
# populate step) and fails on any error or miss, or if no operation completed. The server is
# always stopped (trap), by PID. Not a benchmark: the numbers it prints are for the log only.
#
# Usage: .ci/loadgen_smoke.sh        (CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p memcached-server --bin memcached_server --bin loadgen

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp /tmp/loadgen_smoke.XXXXXX)

server_pid=
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server_pid" 2>/dev/null || true
    fi
    [ -z "$server_pid" ] || wait "$server_pid" 2>/dev/null || true
    server_pid=
}
trap 'stop_server; rm -f "$log"' EXIT
trap 'exit 130' INT TERM

"$TARGET/release/memcached_server" --listen "127.0.0.1:$port" --threads 2 \
    --memory-limit 64 >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || { cat "$log"; echo "loadgen smoke: server exited at startup" >&2; exit 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

rc=0
out=$(timeout 60 "$TARGET/release/loadgen" --server "127.0.0.1:$port" --threads 1 \
    --conns 8 --depth 8 --value-size 100 --keys 1000 --duration 2 --warmup 0.5) || rc=$?
printf '%s\n' "$out"

line=$(printf '%s\n' "$out" | grep '^ops=' || true)
value() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
ops=$(value ops)
misses=$(value misses)
errors=$(value errors)
if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$log"
    echo "loadgen smoke: FAILED, the server died during the run" >&2
    exit 1
fi
if [ "$rc" != 0 ] || [ -z "$line" ] || [ "${ops:-0}" = 0 ] || [ "$misses" != 0 ] || [ "$errors" != 0 ]; then
    echo "loadgen smoke: FAILED (exit $rc, ops=${ops:-?} misses=${misses:-?} errors=${errors:-?})" >&2
    exit 1
fi
echo "loadgen smoke: ok ($ops operations in 2 s, no misses, no errors)"
