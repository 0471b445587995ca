#!/usr/bin/env bash
# The example server (examples/memcached_server) side by side with real memcached, by the
# method BENCHMARKS.md describes:
#
#   * both servers started fresh and at once on 127.0.0.1 ports, same placement and worker count:
#     pinned   = 1 worker each on cpu 1, client (1 thread) on cpu 0;
#     unpinned = 2 workers each, client 2 threads, no affinity;
#   * an A/A pair set first (memcached against a second memcached) to show the noise floor;
#   * ABBA pairs (A,B then B,A) of loadgen runs (examples/memcached_server/src/bin/loadgen/) for 100 B, 4 KiB and 64 KiB values
#     x (16 connections, depth 1) and (8 connections x depth 8); 9:1 get:set, every get a hit;
#     median ratio (min-max) of ops/s and of server CPU us/op (/proc/PID/stat utime+stime over
#     the counted window);
#   * memcaslap -B (depth 1, 100 B and 4 KiB) as a third-party client, ABBA pairs too;
#   * the loopback stream ceiling (loadgen --stream-ceiling, 2 streams, 1 MiB writes, 256 KiB
#     page-aligned reads) measured after each pair of the unpinned 64 KiB c8d8 runs, and the
#     fraction of it the example server's run of that pair reaches (values moved per second);
#   * syscalls per operation of both servers (strace -c -f, pinned, counts only);
#   * resident memory per idle connection: VmRSS before and after 5,000 connections each fetched
#     a 64 KiB value and stay open, divided by 5,000 (fresh servers, 2 workers).
#
# With TLS=1 the same method runs over TLS: a throwaway self-signed P-256 certificate and key made
# in a temp dir (removed on exit), memcached started with -Z -o ssl_chain_cert=,ssl_key=, the
# example server with --tls-cert/--tls-key, every loadgen run with --tls (handshakes are done
# before the counted window); memcaslap is skipped (it has no TLS), `stats` is read through
# openssl s_client, and the stream ceiling stays plain TCP.
#
# Usage: benches/vs_memcached.sh            (full run: 9 pairs x 3 s; about 36 minutes)
#        PAIRS=3 SECS=1 benches/vs_memcached.sh     (quick run)
#        TLS=1 benches/vs_memcached.sh              (the same over TLS)
# Environment (defaults in brackets):
#   PAIRS [9] ABBA pairs per scenario    SECS [3] counted seconds per run   WARMUP [1]
#   AA [all]  A/A pair sets: all (every scenario), first (first scenario of each mode), none
#   AA_PAIRS [$PAIRS]                    SIZES ["100 4096 65536"]  SHAPES ["c16d1 c8d8"]
#   MODES ["pinned unpinned"]            MEMCASLAP [1]  CEILING [1]  IDLE_CONNS [5000] (0: skip)
#   STRACE [1]: syscalls per op of both servers (strace -c, pinned, 100 B and 64 KiB)
#   TLS [0]: 1 runs every server and client over TLS (see above; needs openssl, and memcached
#   built with TLS)
#   KEYS [1000]  B [example]: the server under test; B=memcached compares three memcacheds
#   (A/A only), for working on this script without the example server.
#   B_ARGS [""]: extra arguments for the example server, e.g. B_ARGS="--send-path zerocopy"
#   SERVER_BIN: a memcached_server binary to measure instead of this tree's (another commit's)
#   FEATURES [""]: cargo features for the build, e.g. FEATURES=io-uring (for --send-path uring)
#   CARGO_TARGET_DIR [target]; LOG [a temp dir]: every raw output line is kept there;
#   SRC_REV: the revision to print when the tree is not a git checkout.
# Every process the script starts is stopped on exit (trap), by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-9}
SECS=${SECS:-3}
WARMUP=${WARMUP:-1}
AA=${AA:-all}
AA_PAIRS=${AA_PAIRS:-$PAIRS}
SIZES=${SIZES:-"100 4096 65536"}
SHAPES=${SHAPES:-"c16d1 c8d8"}
MODES=${MODES:-"pinned unpinned"}
MEMCASLAP=${MEMCASLAP:-1}
STRACE=${STRACE:-1}
CEILING=${CEILING:-1}
IDLE_CONNS=${IDLE_CONNS:-5000}
KEYS=${KEYS:-1000}
TLS=${TLS:-0}
B=${B:-example}
MEM_MIB=1024
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOG=${LOG:-$(mktemp -d /tmp/vs_memcached.XXXXXX)}
mkdir -p "$LOG"

# Seconds a client may take beyond its run (SECS and WARMUP may be fractional).
RUN_TIMEOUT=$(awk -v s="$SECS" -v w="$WARMUP" 'BEGIN { printf "%d", s + w + 90 }')
LOADGEN=$CARGO_TARGET_DIR/release/loadgen
# SERVER_BIN: a server binary built elsewhere (e.g. at another commit), measured instead of a
# fresh build of this tree's; the build still makes the load generator.
SERVER=${SERVER_BIN:-$CARGO_TARGET_DIR/release/memcached_server}

say() { printf '%s\n' "$*" | tee -a "$LOG/summary.txt"; }
die() { echo "vs_memcached: $*" >&2; exit 1; }

command -v memcached >/dev/null || die "memcached not installed (apt-get install memcached)"
if [ "$STRACE" = 1 ] && ! command -v strace >/dev/null; then
    echo "vs_memcached: strace not found, skipping syscall counts" >&2
    STRACE=0
fi
if [ "$MEMCASLAP" = 1 ] && ! command -v memcaslap >/dev/null; then
    die "memcaslap not installed (apt-get install libmemcached-tools), or MEMCASLAP=0"
fi
if [ "$B" = example ] && [ ! -f examples/memcached_server/src/main.rs ]; then
    die "examples/memcached_server does not exist yet; use B=memcached to exercise the script"
fi
case $TLS in
    0 | 1) ;;
    *) die "TLS must be 0 or 1" ;;
esac
if [ "$TLS" = 1 ]; then
    command -v openssl >/dev/null || die "TLS=1 needs openssl (apt-get install openssl)"
    memcached -h | grep -q -- '--enable-ssl\|^-Z' || die "this memcached has no TLS (-Z)"
    if [ "$MEMCASLAP" = 1 ]; then
        echo "vs_memcached: memcaslap has no TLS; skipping it (TLS=1)" >&2
        MEMCASLAP=0
    fi
fi

# ---- processes: every PID we start, stopped on exit ------------------------------------------
PIDS=()
stop_pid() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}
TLS_DIR=
trap 'cleanup; [ -z "$TLS_DIR" ] || rm -rf "$TLS_DIR"' EXIT
trap 'exit 130' INT TERM

# TLS=1: a throwaway certificate and key (never kept), and each program's TLS arguments.
LG_TLS=(); MC_TLS=(); EX_TLS=()
if [ "$TLS" = 1 ]; then
    TLS_DIR=$(mktemp -d /tmp/vs_memcached_tls.XXXXXX)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=localhost -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" \
        >"$TLS_DIR/openssl.log" 2>&1 || { cat "$TLS_DIR/openssl.log" >&2; die "openssl req failed"; }
    # memcached drops to nobody (as root) before it loads them.
    [ "$(id -u)" = 0 ] && chown -R nobody "$TLS_DIR"
    LG_TLS=(--tls)
    MC_TLS=(-Z -o "ssl_chain_cert=$TLS_DIR/cert.pem,ssl_key=$TLS_DIR/key.pem")
    EX_TLS=(--tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem")
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # pid port
    local i
    for i in $(seq 100); do
        kill -0 "$1" 2>/dev/null || die "server pid $1 (port $2) exited at startup"
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "server pid $1 not listening on port $2 after 10 s"
}

# Starts a server in the background; sets STARTED_PID. Args: kind (memcached|example) port
# threads affinity-prefix...
start_server() {
    local kind=$1 port=$2 threads=$3
    shift 3
    local user=()
    [ "$(id -u)" = 0 ] && user=(-u nobody)
    if [ "$kind" = memcached ]; then
        "$@" memcached "${user[@]}" -t "$threads" -m "$MEM_MIB" -p "$port" -l 127.0.0.1 \
            -c 16384 "${MC_TLS[@]}" >>"$LOG/servers.log" 2>&1 &
    else
        # The connection limit memcached gets (-c), for servers that have one (builds of
        # older commits do not).
        local maxconn=()
        if "$SERVER" --help 2>/dev/null | grep -q -- --max-connections; then
            maxconn=(--max-connections 16384)
        fi
        # shellcheck disable=SC2086 # B_ARGS is a list of words
        "$@" "$SERVER" --listen "127.0.0.1:$port" --threads "$threads" \
            --memory-limit "$MEM_MIB" "${maxconn[@]}" "${EX_TLS[@]}" ${B_ARGS:-} \
            >>"$LOG/servers.log" 2>&1 &
    fi
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_port "$STARTED_PID" "$port"
}

# ---- numbers -------------------------------------------------------------------------------
field() { # name line -> value of name=value in line
    printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1
}
# median (min-max) of the numbers given as arguments
stats() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {
        if (NR == 0) { print "n/a"; exit }
        m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        printf "%.2f (%.2f-%.2f)", m, v[1], v[NR] }'
}
median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {
        if (NR == 0) { print 0; exit }
        m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; printf "%.6g", m }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "nan" }'; }

# ---- one loadgen run -------------------------------------------------------------------------
# run_loadgen port pid size conns depth -> sets OPS CPU USER SYS SUTIL CUTIL MISSES ERRORS MBPS
run_loadgen() {
    local port=$1 pid=$2 size=$3 conns=$4 depth=$5 out rc=0
    out=$(timeout "$RUN_TIMEOUT" "${CLIENT_PREFIX[@]}" "$LOADGEN" \
        --server "127.0.0.1:$port" --threads "$CLIENT_THREADS" --conns "$conns" \
        --depth "$depth" --value-size "$size" --keys "$KEYS" --duration "$SECS" \
        --warmup "$WARMUP" --cpu-pid "$pid" "${LG_TLS[@]}" 2>&1) || rc=$?
    printf 'port=%s rc=%s %s\n' "$port" "$rc" "$out" >>"$LOG/runs.log"
    local line
    line=$(printf '%s\n' "$out" | grep '^ops=' | head -1 || true)
    OPS=$(field ops_per_sec "$line"); OPS=${OPS:-0}
    CPU=$(field server_cpu_us_per_op "$line"); CPU=${CPU:-0}
    SUTIL=$(field server_cpu_util "$line"); SUTIL=${SUTIL:-0}
    CUTIL=$(field client_cpu_util "$line"); CUTIL=${CUTIL:-0}
    USER=$(field server_user_us_per_op "$line"); USER=${USER:-0}
    SYS=$(field server_sys_us_per_op "$line"); SYS=${SYS:-0}
    MISSES=$(field misses "$line"); MISSES=${MISSES:-?}
    ERRORS=$(field errors "$line"); ERRORS=${ERRORS:-?}
    MBPS=$(field value_mb_per_sec "$line"); MBPS=${MBPS:-0}
    kill -0 "$pid" 2>/dev/null || say "  !! server pid $pid (port $port) is gone"
    if [ "$rc" != 0 ]; then
        echo "  !! loadgen exit $rc against port $port ($size B c${conns}d$depth): $(printf '%s' "$out" | tail -1)" \
            | tee -a "$LOG/summary.txt" >&2
        [ "$ERRORS" = "?" ] && ERRORS=fail
    fi
}

# ABBA pairs of loadgen runs; prints one result line. Args: label portA pidA portB pidB size
# conns depth pairs. Sets LAST_B_MBPS (median of B's value MB/s).
pairs() {
    local label=$1 pa=$2 ida=$3 pb=$4 idb=$5 size=$6 conns=$7 depth=$8 n=$9
    local i ra=() rb=() ca=() cb=() r_ops=() r_cpu=() bad_a=0 bad_b=0 mb=() ceil=() frac=()
    local ua=() ub=() ka=() kb=() usa=() usb=() sya=() syb=()
    for i in $(seq "$n"); do
        local order="A B"
        [ $((i % 2)) = 0 ] && order="B A"
        local o a_ops a_cpu b_ops b_cpu
        for o in $order; do
            if [ "$o" = A ]; then
                run_loadgen "$pa" "$ida" "$size" "$conns" "$depth"
                a_ops=$OPS; a_cpu=$CPU; ua+=("$SUTIL"); ka+=("$CUTIL")
                usa+=("$USER"); sya+=("$SYS")
                [ "$MISSES$ERRORS" = 00 ] || bad_a=$((bad_a + 1))
            else
                run_loadgen "$pb" "$idb" "$size" "$conns" "$depth"
                b_ops=$OPS; b_cpu=$CPU; ub+=("$SUTIL"); kb+=("$CUTIL")
                usb+=("$USER"); syb+=("$SYS")
                mb+=("$MBPS")
                [ "$MISSES$ERRORS" = 00 ] || bad_b=$((bad_b + 1))
            fi
        done
        ra+=("$a_ops"); rb+=("$b_ops"); ca+=("$a_cpu"); cb+=("$b_cpu")
        r_ops+=("$(div "$b_ops" "$a_ops")")
        r_cpu+=("$(div "$b_cpu" "$a_cpu")")
        if [ "${CEIL_EACH:-0}" = 1 ]; then
            ceiling
            ceil+=("$GBPS")
            frac+=("$(div "$(div "${mb[-1]}" 1000)" "$GBPS")")
        fi
    done
    LAST_B_MBPS=$(median "${mb[@]}")
    say "$(printf '| %s | %s | %.0f | %.0f | %s | %.2f | %.2f | %s | %.2f+%.2f / %.2f+%.2f | %.2f / %.2f | %.2f / %.2f | %s |' \
        "$label" "$size B c${conns}d$depth" "$(median "${ra[@]}")" "$(median "${rb[@]}")" \
        "$(stats "${r_ops[@]}")" "$(median "${ca[@]}")" "$(median "${cb[@]}")" \
        "$(stats "${r_cpu[@]}")" "$(median "${usa[@]}")" "$(median "${sya[@]}")" \
        "$(median "${usb[@]}")" "$(median "${syb[@]}")" "$(median "${ua[@]}")" "$(median "${ub[@]}")" \
        "$(median "${ka[@]}")" "$(median "${kb[@]}")" "$bad_a/$bad_b")"
    if [ "${CEIL_EACH:-0}" = 1 ]; then
        say "| ceiling | loopback, 2 streams, one run after each pair: $(stats "${ceil[@]}") GB/s | | B: $(awk -v m="$LAST_B_MBPS" 'BEGIN { printf "%.2f", m / 1000 }') GB/s of values | B / ceiling of its pair: $(stats "${frac[@]}") | | | | | | | |"
    fi
}

# ---- memcaslap ------------------------------------------------------------------------------
proc_cpu_us() { # pid -> utime+stime in microseconds
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) * 1e6 / hz }' "/proc/$1/stat"
}
# run_memcaslap port pid size -> sets OPS CPU
run_memcaslap() {
    local port=$1 pid=$2 size=$3 out c0 c1 ops
    c0=$(proc_cpu_us "$pid")
    out=$(timeout "$RUN_TIMEOUT" "${CLIENT_PREFIX[@]}" memcaslap -s "127.0.0.1:$port" -B \
        -T "$CLIENT_THREADS" -c 16 -t "${SECS}s" -X "$size" -w 1k 2>&1) || true
    c1=$(proc_cpu_us "$pid")
    printf 'memcaslap port=%s size=%s\n%s\n' "$port" "$size" "$out" >>"$LOG/runs.log"
    ops=$(printf '%s\n' "$out" | sed -n 's/.*Ops: \([0-9]*\).*/\1/p' | tail -1)
    OPS=$(printf '%s\n' "$out" | sed -n 's/.*TPS: \([0-9]*\).*/\1/p' | tail -1)
    OPS=${OPS:-0}; ops=${ops:-0}
    CPU=$(awk -v a="$c0" -v b="$c1" -v n="$ops" 'BEGIN { if (n > 0) printf "%.3f", (b - a) / n; else print 0 }')
}
caslap_pairs() { # label portA pidA portB pidB size pairs
    local label=$1 pa=$2 ida=$3 pb=$4 idb=$5 size=$6 n=$7
    local i ra=() rb=() ca=() cb=() r_ops=() r_cpu=()
    for i in $(seq "$n"); do
        local order="A B" o a_ops a_cpu b_ops b_cpu
        [ $((i % 2)) = 0 ] && order="B A"
        for o in $order; do
            if [ "$o" = A ]; then run_memcaslap "$pa" "$ida" "$size"; a_ops=$OPS; a_cpu=$CPU
            else run_memcaslap "$pb" "$idb" "$size"; b_ops=$OPS; b_cpu=$CPU; fi
        done
        ra+=("$a_ops"); rb+=("$b_ops"); ca+=("$a_cpu"); cb+=("$b_cpu")
        r_ops+=("$(div "$b_ops" "$a_ops")"); r_cpu+=("$(div "$b_cpu" "$a_cpu")")
    done
    say "$(printf '| %s | memcaslap %s B c16d1 | %.0f | %.0f | %s | %.2f | %.2f | %s | - | - | - |' \
        "$label" "$size" "$(median "${ra[@]}")" "$(median "${rb[@]}")" "$(stats "${r_ops[@]}")" \
        "$(median "${ca[@]}")" "$(median "${cb[@]}")" "$(stats "${r_cpu[@]}")")"
}

ceiling() { # -> sets GBPS
    local out
    out=$(timeout "$RUN_TIMEOUT" "$LOADGEN" --stream-ceiling --streams 2 \
        --duration "$SECS" --warmup "$WARMUP" 2>&1) || true
    printf 'ceiling %s\n' "$out" >>"$LOG/runs.log"
    GBPS=$(field stream_gbps "$(printf '%s\n' "$out" | head -1)")
    GBPS=${GBPS:-0}
}

# Syscalls per operation of a server under a short loadgen run (strace -c -f; it slows the server,
# so only the counts mean anything). Args: name port pid size conns depth
strace_counts() {
    local name=$1 port=$2 pid=$3 size=$4 conns=$5 depth=$6 spid out ops f
    f="$LOG/strace_${name}_${size}_c${conns}d$depth.txt"
    strace -c -f -p "$pid" -o "$f" 2>/dev/null &
    spid=$!
    PIDS+=("$spid")
    sleep 1
    out=$(timeout "$RUN_TIMEOUT" "${CLIENT_PREFIX[@]}" "$LOADGEN" --server "127.0.0.1:$port" \
        --threads "$CLIENT_THREADS" --conns "$conns" --depth "$depth" --value-size "$size" \
        --keys "$KEYS" --duration 2 --warmup 0 --no-populate "${LG_TLS[@]}" 2>&1) || true
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    ops=$(field ops "$(printf '%s\n' "$out" | grep '^ops=' | head -1)")
    say "$(awk -v ops="${ops:-0}" -v name="$name" -v sc="$size B c${conns}d$depth" '
        # columns: % time, seconds, usecs/call, calls, [errors], syscall (or "total")
        $NF == "total" { total = $4 + 0; next }
        $1 ~ /^[0-9.]+$/ && NF >= 5 { calls[$NF] = $4 + 0 }
        END {
            if (ops <= 0) { printf "| %s | %s | no operations |\n", name, sc; exit }
            line = ""
            n = 0
            for (c in calls) { order[++n] = c }
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                if (calls[order[j]] > calls[order[i]]) { t = order[i]; order[i] = order[j]; order[j] = t }
            for (i = 1; i <= n && i <= 5; i++) line = line sprintf("%s %.3f, ", order[i], calls[order[i]] / ops)
            printf "| %s | %s | %d | %.3f | %s |\n", name, sc, ops, total / ops, substr(line, 1, length(line) - 2)
        }' "$f")"
}

server_stats() { # port -> a few counters from the ASCII `stats` command
    local out
    if [ "$TLS" = 1 ]; then
        out=$(printf 'stats\r\nquit\r\n' | timeout 5 openssl s_client -quiet \
            -connect "127.0.0.1:$1" 2>/dev/null || true)
    else
        out=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf 'stats\r\nquit\r\n' >&3; cat <&3" 2>/dev/null || true)
    fi
    printf '%s\n' "$out" | tr -d '\r' | awk '$1 == "STAT" && ($2 == "cmd_get" || $2 == "cmd_set" ||
        $2 == "get_hits" || $2 == "get_misses" || $2 == "curr_connections" || $2 == "total_connections") {
        printf "%s=%s ", $2, $3 }'
}

# ---- build -----------------------------------------------------------------------------------
REV=${SRC_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}
say "# vs_memcached $(date -u '+%Y-%m-%d %H:%M UTC') at $REV"
say "# PAIRS=$PAIRS SECS=$SECS WARMUP=$WARMUP AA=$AA AA_PAIRS=$AA_PAIRS SIZES='$SIZES' SHAPES='$SHAPES' MODES='$MODES' KEYS=$KEYS B=$B B_ARGS='${B_ARGS:-}' FEATURES='${FEATURES:-}'; raw output in $LOG"
say "# TLS: $([ "$TLS" = 1 ] && echo "on (memcached -Z, example --tls-cert/--tls-key, loadgen --tls; self-signed P-256 certificate)" || echo off)"
say "# machine: $(nproc) cpus, load average $(cut -d' ' -f1-3 /proc/loadavg); memcached $(memcached -V | cut -d' ' -f2)"
if [ "$B" = example ]; then
    cargo build --release -p memcached-server ${FEATURES:+--features "$FEATURES"} \
        --bin loadgen --bin memcached_server >"$LOG/build.log" 2>&1 \
        || { tail -20 "$LOG/build.log" >&2; die "build failed"; }
else
    cargo build --release -p memcached-server --bin loadgen >"$LOG/build.log" 2>&1 \
        || { tail -20 "$LOG/build.log" >&2; die "build failed"; }
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
[ "$(ulimit -n)" -ge $((IDLE_CONNS + 1000)) ] || say "# note: ulimit -n is $(ulimit -n); the idle-connection test may fail"

B_NAME=example
[ "$B" = example ] || B_NAME=memcached
if [ "$TLS" = 1 ] && [ "$B" = example ] && ! "$SERVER" --help 2>&1 | grep -q -- --tls-cert; then
    die "$SERVER has no --tls-cert (TLS=1 needs the example server's TLS support)"
fi

# ---- side by side, per placement ------------------------------------------------------------
for mode in $MODES; do
    if [ "$mode" = pinned ]; then
        SRV_PREFIX=(taskset -c 1); CLIENT_PREFIX=(taskset -c 0); W=1; CLIENT_THREADS=1
    else
        SRV_PREFIX=(env); CLIENT_PREFIX=(env); W=2; CLIENT_THREADS=2
    fi
    PA=$(free_port); start_server memcached "$PA" "$W" "${SRV_PREFIX[@]}"; IDA=$STARTED_PID
    PA2=$(free_port); start_server memcached "$PA2" "$W" "${SRV_PREFIX[@]}"; IDA2=$STARTED_PID
    PB=$(free_port); start_server "$B" "$PB" "$W" "${SRV_PREFIX[@]}"; IDB=$STARTED_PID
    say ""
    say "## $mode: $W worker(s) per server$([ "$mode" = pinned ] && echo ' on cpu 1, client 1 thread on cpu 0' || echo ', client 2 threads, no affinity')"
    say "A = memcached (port $PA), A' = second memcached (port $PA2), B = $B_NAME (port $PB)"
    say ""
    say "| pair | scenario | A ops/s | B ops/s | B/A ops/s median (min-max) | A CPU us/op | B CPU us/op | B/A CPU/op median (min-max) | user+system us/op A / B | server CPU use A / B | client CPU use A / B | runs with misses or errors A/B |"
    say "|---|---|---:|---:|---|---:|---:|---|---|---|---|---|"
    first=1
    for size in $SIZES; do
        for shape in $SHAPES; do
            conns=${shape#c}; conns=${conns%d*}; depth=${shape#*d}
            if [ "$AA" = all ] || { [ "$AA" = first ] && [ "$first" = 1 ]; }; then
                pairs "A'/A" "$PA" "$IDA" "$PA2" "$IDA2" "$size" "$conns" "$depth" "$AA_PAIRS"
            fi
            first=0
            CEIL_EACH=0
            [ "$mode" = unpinned ] && [ "$size" = 65536 ] && [ "$depth" -gt 1 ] && [ "$CEILING" = 1 ] \
                && CEIL_EACH=1
            pairs "B/A" "$PA" "$IDA" "$PB" "$IDB" "$size" "$conns" "$depth" "$PAIRS"
            CEIL_EACH=0
        done
    done
    if [ "$STRACE" = 1 ] && [ "$mode" = pinned ]; then
        say ""
        say "Syscalls per operation (strace -c -f -p PID over a 2 s run; counts only):"
        say ""
        say "| server | scenario | ops | syscalls/op | top syscalls per op |"
        say "|---|---|---:|---:|---|"
        for sc in "100 16 1" "100 8 8" "65536 8 8"; do
            set -- $sc
            strace_counts memcached "$PA" "$IDA" "$1" "$2" "$3"
            strace_counts "$B_NAME" "$PB" "$IDB" "$1" "$2" "$3"
        done
        say ""
    fi
    if [ "$MEMCASLAP" = 1 ]; then
        for size in 100 4096; do
            caslap_pairs "B/A" "$PA" "$IDA" "$PB" "$IDB" "$size" "$PAIRS"
        done
    fi
    say ""
    say "stats A: $(server_stats "$PA")"
    say "stats B: $(server_stats "$PB")"
    if [ "$TLS" = 1 ]; then
        say "TLS negotiated (loadgen runs so far): $(grep -o 'tls_version=[^ ]* tls_suite=[^ ]*' \
            "$LOG/runs.log" | sort | uniq -c | awk '{ printf "%s%s %s (%d runs)", s, $2, $3, $1; s = "; " }')"
    fi
    cleanup
done

# ---- resident memory per idle connection ----------------------------------------------------
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
idle_test() { # kind -> prints bytes per connection
    local kind=$1 port pid before after out rc=0 lgpid i
    port=$(free_port)
    start_server "$kind" "$port" 2 env
    pid=$STARTED_PID
    timeout 60 "$LOADGEN" --server "127.0.0.1:$port" --populate-only --keys 1 --conns 1 \
        --value-size 65536 "${LG_TLS[@]}" >>"$LOG/runs.log" 2>&1 || say "  !! populate failed against $kind"
    sleep 1
    before=$(rss_kib "$pid")
    "$LOADGEN" --server "127.0.0.1:$port" --idle-conns "$IDLE_CONNS" --no-populate --keys 1 \
        --value-size 65536 --hold 6 "${LG_TLS[@]}" >"$LOG/idle_$kind.out" 2>&1 &
    lgpid=$!
    PIDS+=("$lgpid")
    for i in $(seq 600); do
        grep -q idle_ready "$LOG/idle_$kind.out" && break
        kill -0 "$lgpid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 2 # let the server settle (idle buffers given back)
    after=$(rss_kib "$pid")
    out=$(cat "$LOG/idle_$kind.out")
    wait "$lgpid" || rc=$?
    say "| $kind | $(printf '%s' "$out" | grep -o 'idle_ready.*' || echo "FAILED: $out") | $before KiB | $after KiB | $(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }') B |"
    [ "$rc" = 0 ] || say "  !! idle-connection client exited $rc against $kind"
    cleanup
}
if [ "$IDLE_CONNS" -gt 0 ]; then
    say ""
    say "## Resident memory per idle connection ($IDLE_CONNS connections, each fetched one 64 KiB value; 2 workers)"
    say ""
    say "| server | client | VmRSS before | VmRSS after | per connection |"
    say "|---|---|---:|---:|---:|"
    idle_test memcached
    idle_test "$B"
fi
say ""
say "# done $(date -u '+%H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
