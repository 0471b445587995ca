#!/usr/bin/env bash
# Fuzz smoke: runs each cargo-fuzz target for SECONDS (default 60) and fails on the first crash.
# New inputs go to a scratch directory; the committed seeds in fuzz/corpus/ are only read.
#
#   ci/fuzz.sh                     # every target, 60 s each
#   ci/fuzz.sh 600 partial_writes  # one target, 10 minutes
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true

if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "$scratch/$target" "corpus/$target"
    # A crash makes libFuzzer exit non-zero (and leaves the input in fuzz/artifacts/$target/).
    cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds"
done
