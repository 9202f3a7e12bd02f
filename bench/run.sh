#!/usr/bin/env bash
# The one benchmark command: builds the release binary and the harness, prepares the Python
# baseline's venv (requests + cryptography), runs every benchmark, prints the table and
# rewrites the results block of BENCHMARKS.md. Takes about 15 minutes on 2 cores the first
# time (the 10M-row ledger is generated once and cached in target/bench-data/).
# Usage: bench/run.sh [--quick]     (--quick: smaller sizes, for trying a change)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }

venv=target/bench-venv
if ! "$venv/bin/python" -c 'import requests, cryptography' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet requests cryptography
fi

cargo build --locked --release --bin checus-reconciler --example bench
exec target/release/examples/bench run --python "$venv/bin/python" "$@"
