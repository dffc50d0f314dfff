#!/usr/bin/env bash
# sipctl call-rate benchmark (docs/benchmarks.md): sipp calls through sipctl at increasing
# rates, every call recorded from the start (DN record = true: NG offer/answer/delete with
# the recorder, a recording file opened, finished and spooled per call). Each step runs
# RATE calls/s for STEP_SECONDS with 1 s calls; a step passes when every call succeeds.
# Prints a table and writes results/<date>-sipctl-cps.json. Runs in network namespaces that it
# removes again, also on failure. About 1-2 minutes.
#
# Environment: RATES (default "100 200 400 800"), STEP_SECONDS (10), RESULTS (output folder).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-sipctl.sh needs root (network namespaces)" >&2
  exit 2
fi
RATES="${RATES:-100 200 400 800}"
STEP_SECONDS="${STEP_SECONDS:-10}"
RESULTS="${RESULTS:-$ROOT/results}"
export LC_NETNS_PREFIX="${LC_NETNS_PREFIX:-lccps}"
P="$LC_NETNS_PREFIX"
WORK="$(mktemp -d /tmp/linecord-cps.XXXXXX)"
SCEN="$ROOT/sipctl/tests/scenarios"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  bash scripts/netns.sh down >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

bash scripts/setup.sh
cargo build --release --locked -p recorder -p sipctl 2>&1 | tail -n 1
bash scripts/netns.sh up 1
cat >"$WORK/sipctl.toml" <<EOF
[sip]
listen = ["udp:198.18.0.1:5060"]
advertise = "198.18.0.1"
[api]
listen = "127.0.0.1:18099"
[recorder]
ng = "127.0.0.1:22239"
[events]
spool-dir = "$WORK/spool"
[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
record = true
EOF
ip netns exec "$P-rec" "$ROOT/target/release/recorder" --interface 198.18.0.1 --listen-ng 127.0.0.1:22239 \
  --port-min 30000 --port-max 59999 --recording-dir "$WORK/recordings" --spool-dir "$WORK/spool" \
  --log-level warn >"$WORK/recorder.log" 2>&1 &
PIDS+=($!)
ip netns exec "$P-rec" "$ROOT/target/release/sipctl" --config "$WORK/sipctl.toml" --log-level warn \
  >"$WORK/sipctl.log" 2>&1 &
PIDS+=($!)
sleep 1

mkdir -p "$RESULTS"
OUTJSON="$RESULTS/$(date -u +%Y%m%dT%H%M%SZ)-sipctl-cps.json"
echo "| offered calls/s | calls | successful | failed | recordings spooled so far |"
echo "| --- | --- | --- | --- | --- |"
rows=()
for rate in $RATES; do
  calls=$((rate * STEP_SECONDS))
  (cd "$WORK" && ip netns exec "$P-b" sipp -sf "$SCEN/cps_callee.xml" -i 198.18.0.20 -p 5060 \
    -m "$calls" -timeout $((STEP_SECONDS + 40))s -nostdin -trace_stat -stf "callee-$rate.csv" \
    >/dev/null 2>&1) &
  callee=$!
  sleep 0.3
  (cd "$WORK" && ip netns exec "$P-a" sipp -sf "$SCEN/cps_caller.xml" -s 1001 -i 198.18.0.10 -p 5060 \
    -r "$rate" -m "$calls" -l $((rate * 3)) -timeout $((STEP_SECONDS + 30))s -nostdin -trace_stat \
    -stf "caller-$rate.csv" 198.18.0.1:5060 >/dev/null 2>&1) || true
  kill "$callee" 2>/dev/null || true
  wait "$callee" 2>/dev/null || true
  sleep 2
  read -r ok failed recs < <(python3 - "$WORK/caller-$rate.csv" "$WORK/spool/new" <<'PY'
import csv, json, os, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=";"))
head, last = rows[0], rows[-1]
get = lambda name: int(last[head.index(name)])
d = sys.argv[2]
recs = sum(1 for f in os.listdir(d) if json.load(open(os.path.join(d, f))).get("type") == "recording")
print(get("SuccessfulCall(C)"), get("FailedCall(C)"), recs)
PY
)
  echo "| $rate | $calls | $ok | $failed | $recs |"
  rows+=("{\"rate\": $rate, \"calls\": $calls, \"successful\": $ok, \"failed\": $failed}")
  [ "$failed" -eq 0 ] || break
done
# Recordings are finished (fsync) and spooled after each call; wait until all are there.
total=$(python3 -c "import json,sys; print(sum(json.loads(r)['successful'] for r in sys.argv[1:]))" "${rows[@]}")
for _ in $(seq 1 120); do
  recs=$(python3 -c "import json,os,sys; d=sys.argv[1]; print(sum(1 for f in os.listdir(d) if json.load(open(os.path.join(d,f))).get('type')=='recording'))" "$WORK/spool/new")
  [ "$recs" -ge "$total" ] && break
  sleep 1
done
echo "recordings spooled: $recs of $total calls"
printf '{"steps": [%s], "calls": %s, "recordings": %s}\n' "$(IFS=,; echo "${rows[*]}")" "$total" "$recs" >"$OUTJSON"
echo "written: $OUTJSON"
