#!/usr/bin/env bash
# Bounded fuzzing for CI: each target runs SECONDS (default 60) from the committed seeds plus
# the regression inputs; a crash fails the run and leaves its input under fuzz/artifacts/.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
for target in import plan; do
    corpus="corpus/$target"
    rm -rf "artifacts/$target"
    mkdir -p "$corpus"
    cp -n seeds/"$target"/* regressions/"$target"/* "$corpus"/ 2>/dev/null || true
    cargo +nightly fuzz run -O "$target" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 2>&1 | grep -E "^(Done|stat::number_of_executed_units|==|SUMMARY|thread)" || true
    if [ -n "$(find artifacts/"$target" -type f 2>/dev/null)" ]; then
        echo "fuzz target $target found a failing input:" && ls artifacts/"$target"
        exit 1
    fi
done
