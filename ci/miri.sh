#!/usr/bin/env bash
# Runs the test suite under Miri with strict provenance, then the byte-order-sensitive tests
# (unit tests, tests/format.rs, tests/prop_model.rs) on a big-endian target: cheap coverage for
# `put_u16` vs `put_u16_le`. Tests on real sockets are `#[cfg_attr(miri, ignore)]`.
# About 25 minutes on the project's 2-core machine.
#
#   ci/miri.sh                       # everything
#   ci/miri.sh --test prop_model     # extra arguments go to the host `cargo miri test`
set -euo pipefail
cd "$(dirname "$0")/.."

installed=$(rustup +nightly component list --installed 2>/dev/null || true)
if ! grep -q '^miri' <<<"$installed" || ! grep -q '^rust-src' <<<"$installed"; then
    rustup component add --toolchain nightly miri rust-src ||
        rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
cargo +nightly miri setup

export MIRIFLAGS="-Zmiri-strict-provenance ${MIRIFLAGS:-}"

cargo +nightly miri test "$@"

if [ "$#" -eq 0 ]; then
    big_endian=s390x-unknown-linux-gnu
    cargo +nightly miri setup --target "$big_endian"
    cargo +nightly miri test --target "$big_endian" --lib --test format --test prop_model
fi
