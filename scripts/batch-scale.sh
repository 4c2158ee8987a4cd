#!/usr/bin/env bash
# `tollgate batch` at scale: peak memory and prompts per second for 100,000 and 1,000,000
# prompts against the embedded mock provider (no key, no network), with the defaults a user
# gets (adaptive rate found from nothing, 64 tasks). Then the same 100,000 resumed when all are
# done (the index alone). About three minutes. Needs GNU time (/usr/bin/time, Debian `time`).
#
#   scripts/batch-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tollgate-cli
binary=target/release/tollgate
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
echo "| prompts | wall time | prompts/s | peak RSS |"
echo "|---|---|---|---|"
for count in 100000 1000000; do
    python3 -c "
import sys
with open('$dir/in-$count.jsonl', 'w') as f:
    for i in range($count):
        f.write('{\"id\": \"p%d\", \"prompt\": \"Classify email %d\"}\n' % (i, i))
"
    /usr/bin/time -f "%e %M" -o "$dir/time-$count" \
        env -u OPENAI_API_KEY -u TOLLGATE_API_KEY "$binary" batch \
        --input "$dir/in-$count.jsonl" --output "$dir/out-$count.jsonl" --max-tokens 16 \
        --summary-json "$dir/summary-$count.json" >/dev/null 2>"$dir/err-$count" || true
    read -r seconds kib < "$dir/time-$count"
    lines=$(wc -l < "$dir/out-$count.jsonl")
    echo "| $count ($lines written) | ${seconds} s | $(python3 -c "print(round($count / $seconds))") | $((kib / 1024)) MiB |"
done
/usr/bin/time -f "%e %M" -o "$dir/time-resume" \
    env -u OPENAI_API_KEY -u TOLLGATE_API_KEY "$binary" batch \
    --input "$dir/in-1000000.jsonl" --output "$dir/out-1000000.jsonl" --max-tokens 16 \
    >/dev/null 2>"$dir/err-resume" || true
grep -q "1000000 of 1000000 lines already" "$dir/err-resume" || { echo "the resume sent again"; cat "$dir/err-resume"; }
read -r seconds kib < "$dir/time-resume"
echo "| 1000000 already done (resume: plan and index only) | ${seconds} s | | $((kib / 1024)) MiB |"
