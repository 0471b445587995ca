#!/usr/bin/env bash
# CI smoke of the load generator: builds both binaries (release), starts `memcached_server` on a
# free 127.0.0.1 port, runs `loadgen` for 2 s (100 B values, 8 connections x depth 8, 9:1
# get:set after a populate step) and fails on any error or miss, or if no operation completed.
# Then `loadgen --tls` with a throwaway self-signed certificate against the example server's TLS
# listener (100 B and 64 KiB values) and against `memcached -Z` (skipped, saying so, where
# memcached has no TLS or openssl is missing). Every
# server is stopped (trap), by PID. Not a benchmark: the numbers it prints are for the log only.
#
# Usage: .ci/loadgen_smoke.sh        (CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p memcached-server --bin memcached_server --bin loadgen

work=$(mktemp -d /tmp/loadgen_smoke.XXXXXX)
log=$work/server.log

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
trap 'stop_server; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts "$@" in the background (a server that listens on $port); sets server_pid.
start_server() {
    "$@" >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        kill -0 "$server_pid" 2>/dev/null || { cat "$log"; echo "loadgen smoke: server exited at startup" >&2; exit 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "loadgen smoke: server not listening on port $port after 10 s" >&2
    exit 1
}

# Runs loadgen against $port with extra arguments "$@"; fails on any error or miss.
smoke() {
    local what=$1 rc=0 out line ops misses errors
    shift
    out=$(timeout 60 "$TARGET/release/loadgen" --server "127.0.0.1:$port" --threads 1 \
        --conns 8 --depth 8 --value-size 100 --keys 1000 --duration 2 --warmup 0.5 "$@") || rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep '^ops=' || true)
    value() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    ops=$(value ops)
    misses=$(value misses)
    errors=$(value errors)
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$log"
        echo "loadgen smoke ($what): FAILED, the server died during the run" >&2
        exit 1
    fi
    if [ "$rc" != 0 ] || [ -z "$line" ] || [ "${ops:-0}" = 0 ] || [ "$misses" != 0 ] || [ "$errors" != 0 ]; then
        echo "loadgen smoke ($what): FAILED (exit $rc, ops=${ops:-?} misses=${misses:-?} errors=${errors:-?})" >&2
        exit 1
    fi
    echo "loadgen smoke ($what): ok ($ops operations in 2 s, no misses, no errors)"
}

port=$(free_port)
start_server "$TARGET/release/memcached_server" --listen "127.0.0.1:$port" --threads 2 \
    --memory-limit 64
smoke "example server"
stop_server

# loadgen --tls against the example server's TLS listener, then against memcached -Z.
if ! command -v openssl >/dev/null; then
    echo "loadgen smoke (--tls): skipped (needs openssl for a throwaway certificate)"
    exit 0
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" >"$work/openssl.log" 2>&1 \
    || { cat "$work/openssl.log" >&2; echo "loadgen smoke: openssl req failed" >&2; exit 1; }

# The example server's TLS listener, 100 B and 64 KiB values (several records per response).
port=$(free_port)
start_server "$TARGET/release/memcached_server" --listen "127.0.0.1:$port" --threads 2 \
    --memory-limit 64 --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
smoke "--tls, example server" --tls
smoke "--tls 64 KiB, example server" --tls --value-size 65536
stop_server

if ! command -v memcached >/dev/null || ! memcached -h | grep -q -- '--enable-ssl'; then
    echo "loadgen smoke (--tls, memcached -Z): skipped (needs memcached built with TLS)"
    exit 0
fi
user=()
if [ "$(id -u)" = 0 ]; then
    chown -R nobody "$work" # memcached drops to nobody before it loads the certificate
    user=(-u nobody)
fi
port=$(free_port)
start_server memcached "${user[@]}" -U 0 -l 127.0.0.1 -p "$port" -t 2 -m 64 -Z \
    -o "ssl_chain_cert=$work/cert.pem,ssl_key=$work/key.pem"
smoke "--tls, memcached -Z" --tls
