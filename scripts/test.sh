#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, and integration tests that start the real
# daemons. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets --locked 2>&1 | tail -n 3
cargo test --workspace --locked "$@" 2>&1
# A bounded smoke run of every fuzz target (docs/fuzzing.md); the corpus and every crash ever
# found already ran in `cargo test` above.
bash scripts/fuzz.sh --seconds 10
