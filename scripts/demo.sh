#!/usr/bin/env bash
# The demo: one phone call recorded end to end on the embedded defaults.
#
#   sipp caller (198.18.0.10) --SIP--> sipctl (198.18.0.1) --SIP--> sipp callee, DN 1001 (198.18.0.20)
#                 \______________RTP______ recorder (198.18.0.1) ______RTP_______/
#
# DN 1001 has `record = true` in sipctl's embedded configuration, so sipctl asks the recorder
# (over NG) to bridge and record the call from the first INVITE. Both parties talk for 10 s
# (two synthetic voices replayed by sipp), the caller hangs up, the recorder finishes the
# file and spools its job, the processor indexes the call (recording + events) and serves it
# in its web UI; the recording is also exported to WAV. Runs in network namespaces that it
# removes again (also on failure). Output: ./demo-output (DEMO_DIR to change). Run from a
# terminal, the processor keeps serving the UI until Ctrl-C (DEMO_KEEP=0 to stop at once).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh needs root (network namespaces)" >&2
  exit 2
fi
bash scripts/setup.sh
cargo build --release --locked -p recorder -p sipctl -p processor 2>&1 | tail -n 1
REC="$ROOT/target/release/recorder"
SIPCTL="$ROOT/target/release/sipctl"
PROCESSOR="$ROOT/target/release/processor"
UI="${DEMO_UI:-127.0.0.1:8090}"
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


LCR=""
for _ in $(seq 1 100); do
  LCR=$(find "$OUT/recordings" -name '*.lcr' 2>/dev/null | head -n 1)
  [ -n "$LCR" ] && [ -e "${LCR%.lcr}.json" ] && break
  sleep 0.1
done
[ -n "$LCR" ] || { echo "no recording appeared in $OUT/recordings" >&2; exit 1; }
"$REC" export "$LCR" --wav "$OUT/call.wav"
GLOBAL=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['call_id'])" "${LCR%.lcr}.json")

echo "== processor: indexing the call from $OUT/spool, UI on http://$UI/"
"$PROCESSOR" --spool-dir "$OUT/spool" --storage-dir "$OUT/store" --db "$OUT/index.sqlite" \
  --listen "$UI" >"$OUT/processor.log" 2>&1 &
PROC=$!
PIDS+=("$PROC")
python3 - "$UI" "$GLOBAL" <<'PY'
import json, sys, time, urllib.request
ui, gid = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"http://{ui}/v1/interactions/{gid}",
                             headers={"Authorization": "Bearer admin-token"})
deadline = time.time() + 20
while True:
    try:
        d = json.load(urllib.request.urlopen(req, timeout=2))
        if d["segments"] and len(d["events"]) >= 6:
            break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("the processor did not index the call in 20 s (see processor.log)")
    time.sleep(0.2)
i = d["interaction"]
print(f"   interaction {i['id']}: {i['caller']} -> {i['callee']}, {i['duration_ms'] / 1000:.1f} s, MOS {i['mos']}")
for e in d["events"]:
    print(f"   {e['time']}  {e['kind']:<18} {e.get('reason') or ''}")
for s in d["segments"]:
    a = s["analysis"]
    print(f"   recording {s['recording_id']}: {s['duration_ms'] / 1000:.1f} s, talk {a['talk_ms']} ms, MOS {a['mos']}")
PY
echo
echo "recording: $LCR"
echo "WAV:       $OUT/call.wav (left: caller, right: callee)"
echo "UI:        http://$UI/#/interactions/$GLOBAL   (token: admin-token)"
if [ -t 0 ] && [ "${DEMO_KEEP:-1}" != 0 ]; then
  echo "The processor keeps serving the UI; press Ctrl-C to stop it."
  wait "$PROC" || true
fi
