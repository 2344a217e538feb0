#!/usr/bin/env bash
# Builds spillway and runs the demo export: an embedded test cluster with generated log
# events, exported to Parquet files under ./spillway-demo/. Needs only a Rust toolchain.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
echo "==> building spillway (release; the first build takes a few minutes)" >&2
cargo build --release --locked -p spillway -q
exec "${CARGO_TARGET_DIR:-$root/target}/release/spillway" demo "$@"
