#!/usr/bin/env bash
# Runs memcached's own test suite (the `t/` directory of Debian's memcached source package, fetched
# at run time and never committed) against live servers: each file against a fresh Debian
# memcached, then against a fresh example server on each send path, and prints both pass counts.
# Fails if a file that passes against memcached fails against the example server.
#
# The suite's helper connects to the daemon named by T_MEMD_USE_DAEMON instead of starting its
# own; it still runs `memcached-debug -h` to learn what the server supports, so a wrapper of
# Debian's memcached stands in for it. With TLS=1 the servers listen with TLS (memcached -Z,
# the example server's --tls-cert/--tls-key, both with the suite's own test certificate) and the
# suite connects with SSL_TEST=1.
#
# Environment: MEMCACHED_SRC (a directory holding memcached's source with its t/; fetched with
# `apt-get source` when unset), PATHS (the example server's send paths; default
# "copy zerocopy uring", "copy" only with TLS=1), FILES (a subset of the files, by name),
# TLS=1, KEEP_LOGS=1 (keep each run's output in ./target/memcached-suite/).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
command -v memcached >/dev/null 2>&1 || apt_install memcached
TLS="${TLS:-0}"
if [ "$TLS" = 1 ] && ! perl -MIO::Socket::SSL -e 1 2>/dev/null; then
    apt_install libio-socket-ssl-perl
fi

# The suite: Debian bookworm's memcached 1.6.18 source package.
if [ -z "${MEMCACHED_SRC:-}" ]; then
    fetch="$repo/target/memcached-src"
    if [ ! -d "$fetch/t" ]; then
        if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ \
            && ! grep -qs '^deb-src' /etc/apt/sources.list; then
            printf '%s\n' 'Types: deb-src' 'URIs: http://deb.debian.org/debian' \
                'Suites: bookworm' 'Components: main' \
                'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
                | $SUDO tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
        fi
        $SUDO apt-get update -qq
        dl="$(mktemp -d)"
        (cd "$dl" && apt-get source --download-only memcached >/dev/null)
        mkdir -p "$fetch"
        tar -xJf "$dl"/memcached_*.orig.tar.xz -C "$fetch" --strip-components=1 --wildcards '*/t/'
        rm -rf "$dl"
    fi
    MEMCACHED_SRC="$fetch"
fi
suite="$MEMCACHED_SRC"
[ -d "$suite/t" ] || { echo "no t/ in $suite" >&2; exit 1; }
# The suite asks `memcached-debug -h` what the server supports; this one answers as Debian's
# memcached without extstore, the proxy and SASL (out of scope, below), so that files skip
# those parts against both servers instead of waiting on them.
rm -f "$suite/memcached-debug"
printf '%s\n' '#!/bin/sh' \
    "$(command -v memcached) \"\$@\" | grep -v -i -e ext_ -e proxy_ -e sasl" \
    >"$suite/memcached-debug"
chmod +x "$suite/memcached-debug"

# Files out of scope: they test memcached's internals or start-up flags, which a live daemon run
# cannot pass them (the suite ignores a file's server arguments under T_MEMD_USE_DAEMON), or
# features the example server does not have.
declare -A out_of_scope=(
    [00-startup.t]="start-up flags and their errors"
    [64bit.t]="start-up flags (-m 4098 -M)"
    [ascii-auth.t]="authentication (-Y)"
    [binary-extstore.t]="extstore"
    [binary-sasl.t]="SASL"
    [chunked-extstore.t]="extstore"
    [chunked-items.t]="slab chunking (slab_chunk_max)"
    [conn-limits.t]="read buffer memory limits (read_buf_mem_limit)"
    [daemonize.t]="daemon mode (-d -P)"
    [dash-M.t]="start-up flags (-M)"
    [dyn-maxbytes.t]="slab automove"
    [error-extstore.t]="extstore"
    [extstore-buckets.t]="extstore"
    [extstore-jbod.t]="extstore"
    [extstore.t]="extstore"
    [idle-timeout.t]="start-up flags (idle_timeout)"
    [issue_61.t]="start-up flags (-R)"
    [issue_67.t]="start-up flags (port and interface options)"
    [item_size_max.t]="start-up flags (-I)"
    [line-lengths.t]="memcached's source code (line lengths)"
    [lru-crawler.t]="the LRU crawler"
    [lru-maintainer.t]="the LRU maintainer and segmented LRU"
    [misbehave.t]="privilege dropping"
    [proxy.t]="memcached's proxy"
    [restart.t]="warm restart (-e)"
    [slabhang.t]="slab rebalancing"
    [slabs-reassign-chunked.t]="slab rebalancing"
    [slabs-reassign2.t]="slab rebalancing"
    [slabs_reassign.t]="slab rebalancing"
    [ssl_cert_refresh.t]="TLS settings (certificate refresh)"
    [ssl_ports.t]="TLS settings (per-port TLS)"
    [ssl_proto_version.t]="TLS settings (protocol versions)"
    [ssl_session_resumption.t]="TLS settings (session cache)"
    [ssl_settings.t]="TLS settings"
    [ssl_verify_modes.t]="TLS settings (client verification)"
    [stats-conns.t]="unix sockets (-s)"
    [udp.t]="UDP"
    [unixsocket.t]="unix sockets (-s)"
    [watcher.t]="the log watcher"
    [watcher_connid.t]="the log watcher"
    [whitespace.t]="memcached's source code (whitespace)"
)

# The server's TLS runs on the copy path only.
if [ "$TLS" = 1 ]; then
    PATHS="${PATHS:-copy}"
else
    PATHS="${PATHS:-copy zerocopy uring}"
fi
cargo build --release -p memcached-server --bin memcached_server --features io-uring
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
server="$target_dir/release/memcached_server"

logs="$target_dir/memcached-suite"
rm -rf "$logs"
mkdir -p "$logs"
# Every server this script starts writes its PID under $logs/pids; all are stopped on exit.
mkdir -p "$logs/pids"
cleanup() {
    for f in "$logs"/pids/*; do
        [ -e "$f" ] || continue
        kill -KILL "$(cat "$f")" 2>/dev/null || true
    done
    [ "${KEEP_LOGS:-0}" = 1 ] || rm -rf "$logs"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

crt="$suite/t/server_crt.pem"
key="$suite/t/server_key.pem"

# Runs file $1 against a fresh server, `memcached` or a send path of the example server ($2),
# and writes "pass (N)" or "FAIL (...)" to $logs/<file>.<target>.result.
run_one() {
    local file="$1" target="$2" port log status pid
    log="$logs/${file%.t}.$target.log"
    # A free port can be taken by another job's server before ours binds it: try again.
    for _ in 1 2 3; do
        port="$(free_port)"
        if [ "$target" = memcached ]; then
            local args=(-l 127.0.0.1 -p "$port" -U 0)
            [ "$TLS" = 1 ] && args+=(-Z -o "ssl_chain_cert=$crt,ssl_key=$key")
            # memcached refuses to run as root without -u.
            [ "$(id -u)" -eq 0 ] && args+=(-u root)
            memcached "${args[@]}" >"$log.server" 2>&1 &
        else
            local args=(--listen "127.0.0.1:$port" --threads 2 --send-path "$target")
            [ "$TLS" = 1 ] && args+=(--tls-cert "$crt" --tls-key "$key")
            "$server" "${args[@]}" >"$log.server" 2>&1 &
        fi
        pid=$!
        echo "$pid" >"$logs/pids/$pid"
        local up=0
        for _ in $(seq 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        [ "$up" = 1 ] && break
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -f "$logs/pids/$pid"
        pid=""
    done
    if [ -z "$pid" ]; then
        echo "FAIL (server did not start)" >"$log.result"
        return
    fi
    status=0
    (cd "$suite" && SSL_TEST="$TLS" T_MEMD_USE_DAEMON="127.0.0.1:$port" \
        timeout "${TIMEOUT:-120}" perl "t/$file") >"$log" 2>&1 || status=$?
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$logs/pids/$pid"
    local ok notok
    ok="$(grep -c '^ok ' "$log" || true)"
    notok="$(grep -c '^not ok ' "$log" || true)"
    if [ "$status" -eq 0 ] && [ "$notok" -eq 0 ]; then
        echo "pass ($ok)" >"$log.result"
    else
        echo "FAIL ($ok ok, $notok not ok, exit $status)" >"$log.result"
    fi
}

files=()
for f in "$suite"/t/*.t; do
    name="$(basename "$f")"
    if [ -n "${FILES:-}" ]; then
        case " $FILES " in *" $name "* | *" ${name%.t} "*) ;; *) continue ;; esac
    fi
    [ -n "${out_of_scope[$name]:-}" ] && continue
    files+=("$name")
done

# The files mostly wait (on sleeps and round trips), so several run at once, each against its
# own servers: JOBS at a time (default 4).
jobs_max="${JOBS:-4}"
start=$SECONDS
for name in "${files[@]}"; do
    for target in memcached $PATHS; do
        while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
        run_one "$name" "$target" &
    done
done
wait

over=""
[ "$TLS" = 1 ] && over=" over TLS"
echo "memcached's t/ against live servers$over: ${#files[@]} files; send paths: $PATHS;" \
    "$((SECONDS - start)) s"
printf '%-22s %-22s' file memcached
for p in $PATHS; do printf ' %-22s' "$p"; done
echo
mc_pass=0
declare -A ours_pass=()
regressions=()
for name in "${files[@]}"; do
    mc="$(cat "$logs/${name%.t}.memcached.log.result")"
    printf '%-22s %-22s' "$name" "$mc"
    [[ "$mc" == pass* ]] && mc_pass=$((mc_pass + 1))
    for p in $PATHS; do
        r="$(cat "$logs/${name%.t}.$p.log.result")"
        printf ' %-22s' "$r"
        if [[ "$r" == pass* ]]; then
            ours_pass[$p]=$((${ours_pass[$p]:-0} + 1))
        elif [[ "$mc" == pass* ]]; then
            regressions+=("$name ($p)")
        fi
    done
    echo
done
echo
echo "Out of scope (${#out_of_scope[@]} files):"
for name in $(printf '%s\n' "${!out_of_scope[@]}" | sort); do
    printf '  %-26s %s\n' "$name" "${out_of_scope[$name]}"
done
echo
summary="memcached's suite$over: memcached passes $mc_pass"
summary+=" of ${#files[@]} files"
for p in $PATHS; do summary+="; example server ($p) ${ours_pass[$p]:-0}"; done
echo "$summary ($((SECONDS - start)) s)"
if [ "${#regressions[@]}" -gt 0 ]; then
    echo "Pass against memcached, fail against the example server: ${regressions[*]}" >&2
    [ "${KEEP_LOGS:-0}" = 1 ] && echo "Logs: $logs" >&2
    exit 1
fi
