#!/usr/bin/env bash
# Instructions per call through the full stack, counted by valgrind's callgrind: the same count
# for the same binary whatever else the machine does, unlike timings. Runs `bench-report
# --memory requests` (1,000,000 calls through retry, breaker, rate limit and classify over an
# in-memory service) and `--memory idle` (the same process without the calls), and prints the
# difference per call. About three minutes. Needs valgrind (Debian package `valgrind`).
#
#   scripts/instructions-per-call.sh [path/to/bench-report]
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-target/release/bench-report}"
if [ "$#" -eq 0 ]; then
    cargo build --release -q -p tollgate-bench --bin bench-report
fi
out="$(mktemp -d)"
for case in idle requests; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$case.out" "$binary" --memory "$case" >/dev/null 2>&1
done
idle=$(grep '^summary:' "$out/idle.out" | awk '{print $2}')
requests=$(grep '^summary:' "$out/requests.out" | awk '{print $2}')
echo "instructions per full-stack call: $(( (requests - idle) / 1000000 ))"
rm -rf "$out"
