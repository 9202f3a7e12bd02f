#!/usr/bin/env bash
# Idle CPU of the daemon with and without [webhook]: same ledger shape, sandbox gateway,
# default 30 s cron; CPU ticks (utime+stime) over $SECS seconds after "daemon ready".
set -euo pipefail
BIN=${BIN:-$(dirname "$0")/../target/release/checus-reconciler}
KEYS=$(cd "$(dirname "$0")/.." && pwd)/testdata/INSECURE-test-keys
SECS=${SECS:-60}
D=$(mktemp -d)
cp $KEYS/merchant_private.b64 $KEYS/gateway_public.b64 $D/; chmod 600 $D/merchant_private.b64
printf 'whsec-0123456789abcdef-0123456789\n' > $D/secret; chmod 600 $D/secret
$BIN sandbox --listen 127.0.0.1:0 > $D/sandbox.log 2>&1 & SB=$!
until grep -q "listening on" $D/sandbox.log; do sleep 0.1; done
URL=$(grep -o 'http://[^ ]*' $D/sandbox.log | head -1)
for mode in off on; do
  mkdir -p $D/$mode
  cat > $D/$mode/config.toml <<EOT
[ledger]
path = "$D/$mode/ledger.sqlite"
[gateway]
base_url = "$URL"
app_id = "SANDBOX-APP"
merchant_no = "SANDBOX-MERCHANT"
[keys]
merchant_private_key = "file:$D/merchant_private.b64"
gateway_public_key = "file:$D/gateway_public.b64"
EOT
  if [ $mode = on ]; then
    printf '[webhook]\nurl = "http://127.0.0.1:9/hooks"\nsecret = "file:%s/secret"\n' $D >> $D/$mode/config.toml
  fi
  $BIN run --config $D/$mode/config.toml > $D/$mode/log 2>&1 & echo $! > $D/$mode/pid
done
for mode in off on; do until grep -q "daemon ready" $D/$mode/log; do sleep 0.1; done; done
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
declare -A start
for mode in off on; do start[$mode]=$(ticks $(cat $D/$mode/pid)); done
sleep $SECS
hz=$(getconf CLK_TCK)
for mode in off on; do
  t=$(( $(ticks $(cat $D/$mode/pid)) - ${start[$mode]} ))
  echo "webhook $mode: $t ticks ($hz/s) = $(awk -v t=$t -v h=$hz -v s=$SECS 'BEGIN{printf "%.2f ms CPU per second idle", 1000*t/h/s}')"
  kill $(cat $D/$mode/pid)
done
kill $SB
