#!/usr/bin/env bash
# Runs the test suite under Miri with strict provenance, then the byte-order-sensitive tests
# (unit tests, tests/format.rs, tests/prop_model.rs) on a big-endian target: cheap coverage for
# `put_u16` vs `put_u16_le`. Tests on real sockets are `#[cfg_attr(miri, ignore)]` or
# `#[cfg(not(miri))]`.
#
# Miri interprets on one core, so the suite runs as two halves at once, each in its own target
# directory (cargo holds a target directory's lock while its tests run): the heaviest test files
# in one, everything else (unit tests, the other test files, doctests) in the other. Every file
# in tests/ is in exactly one half, so a new test file is covered without editing this script.
#
#   .ci/miri.sh                       # everything, two halves in parallel
#   .ci/miri.sh --test prop_model     # extra arguments go to one host `cargo miri test`
set -euo pipefail
cd "$(dirname "$0")/.."

installed=$(rustup +nightly component list --installed 2>/dev/null || true)
if ! grep -q '^miri' <<<"$installed" || ! grep -q '^rust-src' <<<"$installed"; then
    rustup component add --toolchain nightly miri rust-src ||
        rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
cargo +nightly miri setup

export MIRIFLAGS="-Zmiri-strict-provenance ${MIRIFLAGS:-}"

if [ "$#" -gt 0 ]; then
    exec cargo +nightly miri test "$@"
fi

target=${CARGO_TARGET_DIR:-target}
big_endian=s390x-unknown-linux-gnu
cargo +nightly miri setup --target "$big_endian"

# The heavy half: the slowest test files, then the big-endian run.
heavy=(split_points pinned_kinds)
heavy_args=()
for t in "${heavy[@]}"; do heavy_args+=(--test "$t"); done

light_args=(--lib)
for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    [[ " ${heavy[*]} " == *" $t "* ]] || light_args+=(--test "$t")
done

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

(
    CARGO_TARGET_DIR="$target/miri-heavy" cargo +nightly miri test "${heavy_args[@]}" &&
        CARGO_TARGET_DIR="$target/miri-heavy" cargo +nightly miri test \
            --target "$big_endian" --lib --test format --test prop_model
) >"$log/heavy" 2>&1 &
heavy_pid=$!

light_status=0
{
    cargo +nightly miri test "${light_args[@]}" && cargo +nightly miri test --doc &&
        # The `bytes` integration has unsafe of its own (`BufMut` for `FormatGuard`): its tests
        # and the unit tests again with the feature on. (tests/bytes_impl.rs, safe code over
        # `Buf`, checks every split point and would take Miri over ten minutes.)
        cargo +nightly miri test --features bytes --lib --test bufmut
} || light_status=$?

heavy_status=0
wait "$heavy_pid" || heavy_status=$?
echo "---- Miri, heavy half (${heavy[*]}, big-endian) ----"
cat "$log/heavy"

if [ "$light_status" -ne 0 ] || [ "$heavy_status" -ne 0 ]; then
    echo "Miri failed (light half: $light_status, heavy half: $heavy_status)" >&2
    exit 1
fi
echo "Miri: both halves passed."
