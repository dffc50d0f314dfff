#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, and integration tests that start the real
# daemons. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets --locked 2>&1 | tail -n 3
cargo test --workspace --locked "$@" 2>&1
