#!/usr/bin/env bash
# The demo: starts the recorder on loopback, sets up a call over the NG protocol exactly as a
# SIP proxy would (offer from the caller, answer from the callee), records it while 10 s of
# 20 ms PCMU RTP flow both ways through it, deletes it, and exports the recording to WAV.
# Output goes to ./demo-output (DEMO_DIR to change). Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p recorder --bin recorder --example demo_call 2>&1 | tail -n 2
NG=127.0.0.1:22230
OUT="${DEMO_DIR:-$PWD/demo-output}"
mkdir -p "$OUT"
./target/release/recorder --listen-ng "$NG" --interface 127.0.0.1 --port-min 32000 --port-max 32999 \
  --recording-dir "$OUT/recordings" --spool-dir "$OUT/spool" --log-level info &
REC=$!
trap 'kill "$REC" 2>/dev/null || true; wait "$REC" 2>/dev/null || true' EXIT
./target/release/examples/demo_call --ng "$NG" --seconds "${DEMO_SECONDS:-10}" --spool-dir "$OUT/spool"
