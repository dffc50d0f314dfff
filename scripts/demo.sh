#!/usr/bin/env bash
# The demo: one phone call recorded end to end on the embedded defaults.
#
#   sipp caller (198.18.0.10) --SIP--> sipctl (198.18.0.1) --SIP--> sipp callee, DN 1001 (198.18.0.20)
#                 \______________RTP______ recorder (198.18.0.1) ______RTP_______/
#
# DN 1001 has `record = true` in sipctl's embedded configuration, so sipctl asks the recorder
# (over NG) to bridge and record the call from the first INVITE. Both parties talk for 10 s
# (two synthetic voices replayed by sipp), the caller hangs up, the recorder finishes the
# file and spools its job, and the recording is exported to WAV. Runs in network namespaces
# that it removes again (also on failure). Output: ./demo-output (DEMO_DIR to change).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh needs root (network namespaces)" >&2
  exit 2
fi
bash scripts/setup.sh
cargo build --release --locked -p recorder -p sipctl 2>&1 | tail -n 1
REC="$ROOT/target/release/recorder"
SIPCTL="$ROOT/target/release/sipctl"
SCEN="$ROOT/sipctl/tests/scenarios"
OUT="${DEMO_DIR:-$ROOT/demo-output}"
export LC_NETNS_PREFIX="${LC_NETNS_PREFIX:-lcdemo}"
P="$LC_NETNS_PREFIX"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  bash scripts/netns.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

rm -rf "$OUT"
mkdir -p "$OUT"
bash scripts/netns.sh up 1
"$SIPCTL" demo-audio "$OUT" --seconds 30 >/dev/null

echo "== recorder and sipctl (embedded defaults) in $P-rec"
ip netns exec "$P-rec" "$REC" --interface 198.18.0.1 \
  --recording-dir "$OUT/recordings" --spool-dir "$OUT/spool" --log-level warn \
  >"$OUT/recorder.log" 2>&1 &
PIDS+=($!)
ip netns exec "$P-rec" "$SIPCTL" --spool-dir "$OUT/spool" >"$OUT/sipctl.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  ip netns exec "$P-rec" "$SIPCTL" calls >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== a 10 s call from 100 to DN 1001"
(cd "$OUT" && ip netns exec "$P-b" sipp -sf "$SCEN/callee.xml" -i 198.18.0.20 -p 5060 -mp 6000 \
  -m 1 -timeout 60s -timeout_error -nostdin -trace_err >/dev/null 2>"$OUT/callee.err") &
CALLEE=$!
sleep 0.5
(cd "$OUT" && ip netns exec "$P-a" sipp -sf "$SCEN/caller_demo.xml" -s 1001 -i 198.18.0.10 -p 5060 \
  -mp 6000 -m 1 -timeout 60s -timeout_error -nostdin -trace_err 198.18.0.1:5060 \
  >/dev/null 2>"$OUT/caller.err") &
CALLER=$!
sleep 3
echo "-- sipctl calls (during the call):"
ip netns exec "$P-rec" "$SIPCTL" calls | sed 's/^/   /'
wait "$CALLER" || { echo "the caller's sipp failed:"; cat "$OUT"/caller*errors.log "$OUT/caller.err" 2>/dev/null; exit 1; }
wait "$CALLEE" || { echo "the callee's sipp failed:"; cat "$OUT"/callee*errors.log "$OUT/callee.err" 2>/dev/null; exit 1; }
echo "== call ended"

JOB=""
for _ in $(seq 1 100); do
  JOB=$(grep -l '"type":"recording"\|"type": "recording"' "$OUT"/spool/new/*.json 2>/dev/null | head -n 1 || true)
  [ -n "$JOB" ] && break
  sleep 0.1
done
[ -n "$JOB" ] || { echo "no recording job appeared in $OUT/spool/new" >&2; exit 1; }
LCR=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['file'])" "$JOB")
"$REC" export "$LCR" --wav "$OUT/call.wav"
echo "== events spooled for the processor:"
python3 - "$OUT/spool/new" <<'EOF'
import json, os, sys
d = sys.argv[1]
evs = [json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.endswith(".json")]
evs = sorted((e for e in evs if e.get("type") == "event"), key=lambda e: e["seq"])
for e in evs:
    print(f"   {e['seq']:>2} {e['kind']:<18} {e.get('reason') or ''}")
EOF
echo
echo "recording: $LCR"
echo "its job:   $JOB"
echo "WAV:       $OUT/call.wav (left: caller, right: callee)"
