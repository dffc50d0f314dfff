#!/usr/bin/env bash
# The demo: starts the recorder on loopback, sets up a call over the NG protocol exactly as a
# SIP proxy would (offer from the caller, answer from the callee), sends 10 s of 20 ms RTP
# both ways through it, queries the call's counters and deletes it. Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p recorder --bin recorder --example demo_call 2>&1 | tail -n 2
NG=127.0.0.1:22230
./target/release/recorder --listen-ng "$NG" --interface 127.0.0.1 --port-min 32000 --port-max 32999 --log-level info &
REC=$!
trap 'kill "$REC" 2>/dev/null || true; wait "$REC" 2>/dev/null || true' EXIT
./target/release/examples/demo_call --ng "$NG" --seconds "${DEMO_SECONDS:-10}"
