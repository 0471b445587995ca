#!/usr/bin/env bash
# Payload bytes copied per payload byte sent on the TLS send side, for each design of
# benches/tls.rs (own records, rustls's records through the session, rustls's buffered
# connection): an LD_PRELOAD shim counts the bytes every memcpy and memmove call moves, and the
# difference between 300 and 100 batches (SENDBUF_TLS_PROFILE), divided by the payload of 200
# batches, leaves setup out. Copies the compiler inlines (a few bytes at a time) are not
# counted, so small values read a little under their true figure.
#
#   bash benches/tls_copies.sh        # needs gcc; about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
shim="$target/tls_copies/libcount.so"
mkdir -p "$(dirname "$shim")"
cat >"$target/tls_copies/count.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
static unsigned long long bytes;
void *memcpy(void *d, const void *s, size_t n) {
    static void *(*real)(void *, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "memcpy");
    bytes += n;
    return real(d, s, n);
}
void *memmove(void *d, const void *s, size_t n) {
    static void *(*real)(void *, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "memmove");
    bytes += n;
    return real(d, s, n);
}
__attribute__((destructor)) static void report(void) { fprintf(stderr, "memcpy_bytes=%llu\n", bytes); }
C
gcc -O2 -shared -fPIC -o "$shim" "$target/tls_copies/count.c" -ldl
exe=$(cargo bench --bench tls --features rustls --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "tls" and m.get("executable"):
        print(m["executable"])')
copied() { # design size batch rounds
    SENDBUF_TLS_PROFILE="$1:$2:$3:$4" LD_PRELOAD="$shim" "$exe" 2>&1 >/dev/null |
        sed -n 's/^memcpy_bytes=//p'
}
echo "| value | batch | own | unbuffered | buffered |"
echo "|---|---:|---:|---:|---:|"
for size in 100 4096 65536; do
    for batch in 16 1; do
        row="| $size B | $batch |"
        for design in own unbuffered buffered; do
            a=$(copied "$design" "$size" "$batch" 100)
            b=$(copied "$design" "$size" "$batch" 300)
            row="$row $(python3 -c "print('%.2f' % (($b - $a) / (200 * $batch * $size)))") |"
        done
        echo "$row"
    done
done
