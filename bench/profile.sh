#!/usr/bin/env bash
# Where a reconciled refund's CPU goes on this machine (BENCHMARKS.md, "Figure 1 per machine"):
# runs `bench run --only 1` (or the scenario given, e.g. `bench/profile.sh 2` for figure 1b), records the first run's daemon with perf for 4 s of steady work
# (software clock, DWARF call stacks), and buckets the samples with bench/breakdown.py.
# Needs perf (Debian: linux-perf); hardware counters are not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is missing (Debian: apt-get install linux-perf)" >&2; exit 1; }
cargo build --locked --release --bin checus-reconciler --example bench
work=$(mktemp -d)
bin="$PWD/target/release/checus-reconciler"
scenario="${1:-1}"
target/release/examples/bench run --only "$scenario" >"$work/bench.log" 2>&1 &
bench=$!
pid=""
for _ in $(seq 1 600); do
  pid=$(pgrep -f "^$bin run -c" | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.05
done
[ -n "$pid" ] || { echo "the daemon did not start; see $work/bench.log" >&2; exit 1; }
sleep 1.5
perf record -q -F 1999 -e cpu-clock --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" -- sleep 4
wait "$bench"
grep -E "^Machine|^\| 1b? " "$work/bench.log" || true
perf script -i "$work/perf.data" -F comm,tid,ip,sym --no-inline 2>/dev/null >"$work/perf.txt"
python3 bench/breakdown.py "$work/perf.txt"
echo "perf data kept in $work"
