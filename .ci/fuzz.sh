#!/usr/bin/env bash
# Fuzz smoke: runs each cargo-fuzz target (`cargo fuzz list`: partial_writes, read_buffer, ...)
# for SECONDS (default 60), one after the other, fails on the first crash, and prints the
# executions of each.
# New inputs go to a scratch directory; the committed seeds in fuzz/corpus/ are only read.
#
#   .ci/fuzz.sh                     # every target, 60 s each
#   .ci/fuzz.sh 600 partial_writes  # one target, 10 minutes
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

summary=()
for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "$scratch/$target" "corpus/$target"
    # A crash makes libFuzzer exit non-zero (and leaves the input in fuzz/artifacts/$target/);
    # `set -e` and `pipefail` stop the script there.
    cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>&1 | tee "$scratch/$target.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log")
    summary+=("$target: ${runs:-?} runs in ${seconds}s, no failure")
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
