#!/usr/bin/env bash
# The crash soak: the crash suite's audit (SIGKILL the real daemon at seeded random moments,
# restart it, audit the ledger file after every kill and at the end), round after round, with
# more refunds and more kills, for as long as asked. See docs/reliability.md.
#
#   bench/soak.sh                      # 10 minutes, 10,000 refunds and 100 kills per round
#   SOAK_SECONDS=3600 bench/soak.sh    # an hour
#   SOAK_REFUNDS=20000 SOAK_KILLS=300 SOAK_SEED=42 bench/soak.sh
#   SOAK_PROFILE=dev bench/soak.sh     # reuse the debug build instead of building release
#
# Every round prints its seed and figures; a failure names the seed to replay it with.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS="${SOAK_SECONDS:-600}"
export SOAK_REFUNDS="${SOAK_REFUNDS:-10000}"
export SOAK_KILLS="${SOAK_KILLS:-100}"
profile="${SOAK_PROFILE:-release}"
# nextest only warns about slow tests (no kill timeout is configured), so the soak runs on.
exec cargo nextest run --locked --cargo-profile "$profile" --test it \
  --run-ignored only --no-capture crash::soak
