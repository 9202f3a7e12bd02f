#!/usr/bin/env bash
# The PostgreSQL ledger's figures (issue 14, part 5; BENCHMARKS.md "PostgreSQL ledger"): builds
# the release binary and the harness, then runs
#   bench pg-claim   the claim of 1,000 due refunds at 100k and 10M refunds (1 % pending), the
#                    ratio, and the claim's plan at 10M (the 10M load: 3 to 4 min on 2 cores)
#   bench pg-nodes   refunds/s of one daemon and of two on one ledger, 50 ms latency,
#                    concurrency 32 each, and the ratio (about 3 min)
# Each on a database of its own, created on the server and dropped at the end. The server:
# CHECUS_TEST_POSTGRES_URL (a role that may create databases, trusted: no password), else
# postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable, as the tests.
# Usage: bench/pg.sh [claim|nodes]     (no argument: both)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }

cargo build --locked --release --bin checus-reconciler --example bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/bench"
case "${1:-both}" in
  claim) "$bench" pg-claim ;;
  nodes) "$bench" pg-nodes ;;
  both) "$bench" pg-claim && "$bench" pg-nodes ;;
  *) echo "usage: bench/pg.sh [claim|nodes]" >&2; exit 2 ;;
esac
