#!/usr/bin/env bash
# The robustness matrix through the command line, as a user would meet it: `tollgate batch` with
# nothing but `--rpm X` (or nothing at all) against `tollgate mock` allowing 50 requests/s with a
# burst of 10 and no rate-limit headers, 500 prompts per cell, for both hint styles. Ideal 9.8 s.
# Prints a Markdown table; about three minutes. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p tollgate-cli
bin=target/release/tollgate
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT

for i in $(seq 1 500); do
    printf '{"id": "p%d", "prompt": "Say hello to number %d."}\n' "$i" "$i"
done >"$work/prompts.jsonl"

echo "| hints | told | succeeded | failed | 429s (% of requests) | wall time | vs ideal |"
echo "|---|---|---|---|---|---|---|"
for hints in retry-after-only retry-after-ms; do
    for rpm in none 3000 6000 12000 1500; do
        "$bin" mock --rpm 3000 --burst 10 --hints "$hints" >"$work/mock.out" 2>/dev/null &
        mock=$!
        for _ in $(seq 1 50); do
            [ -s "$work/mock.out" ] && break
            sleep 0.1
        done
        url=$(head -n 1 "$work/mock.out")
        flags=()
        [ "$rpm" != none ] && flags=(--rpm "$rpm")
        rm -f "$work/out.jsonl"
        TOLLGATE_API_KEY=sk-bench "$bin" batch --input "$work/prompts.jsonl" \
            --output "$work/out.jsonl" --endpoint "$url" --summary-json "$work/summary.json" \
            "${flags[@]}" >/dev/null 2>&1 || true
        kill "$mock" 2>/dev/null || true
        wait "$mock" 2>/dev/null || true
        python3 - "$work/summary.json" "$hints" "$rpm" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
rpm = sys.argv[3]
told = {"none": "nothing", "3000": "--rpm 3000 (right)", "6000": "--rpm 6000 (2x)",
        "12000": "--rpm 12000 (4x)", "1500": "--rpm 1500 (2x too low)"}[rpm]
ideal = 500 / 25 if rpm == "1500" else (500 - 10) / 50
n = s["lines"]
ok = s["successes"]
limited = s["rate_limited_429"]
wall = s["wall_time_s"]
print(f"| {sys.argv[2]} | {told} | {ok}/{n} | {n - ok} | {limited} ({100 * limited / n:.1f}%) "
      f"| {wall:.2f} s | {wall / ideal:.3f}x |")
EOF
    done
done
