#!/usr/bin/env bash
# Runs spillway's whole test suite on a fresh machine: installs what the tests need (Python
# clients and chart tools, elasticdump, the benchmark's tools, SeaweedFS, RabbitMQ, OpenSearch
# 2.19 and 3.x nodes from Maven artifacts), starts the services on
# 127.0.0.1, checks formatting and
# lints, then runs every test with cargo-nextest. The last line is nextest's summary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf '==> %s\n' "$*" >&2; }

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export SPILLWAY_SHARED_DIR=${SPILLWAY_SHARED_DIR:-$(cd "$root/.." && pwd)/shared}
if [ ! -d "$SPILLWAY_SHARED_DIR/conformance" ]; then
  echo "error: the upstream conformance suite is missing at $SPILLWAY_SHARED_DIR/conformance (set SPILLWAY_SHARED_DIR)" >&2
  exit 1
fi

# Disk: a cold run needs about 5 GiB for target/ plus 1.7 GiB for .work/. Incremental
# compilation would add another 5 GiB of caches that a whole-suite run never reuses, so it is
# off unless asked for (the inner loop, plain `cargo nextest run`, keeps it).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
target_dir=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$target_dir"
free_kib=$(df -Pk "$target_dir" | awk 'NR == 2 { print $4 }')
log "disk: $((free_kib / 1024 / 1024)) GiB free for $target_dir"
if [ "${free_kib:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: less than 8 GiB free where the build goes ($target_dir); a cold run needs about 7 GiB." >&2
  echo "warning: free space (cargo clean in other checkouts, old target dirs) if the build stops with 'No space left on device'." >&2
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

log "installing test dependencies"
scripts/deps/python.sh
scripts/deps/node.sh
scripts/deps/bench.sh

log "starting SeaweedFS (S3), RabbitMQ, real OpenSearch 2.19 and 3.x nodes and a real Elasticsearch 8 node on 127.0.0.1"
stop_services() {
  scripts/services/seaweedfs.sh stop >/dev/null 2>&1 || true
  scripts/services/rabbitmq.sh stop >/dev/null 2>&1 || true
  scripts/services/opensearch.sh stop 2 >/dev/null 2>&1 || true
  scripts/services/opensearch.sh stop 3 >/dev/null 2>&1 || true
  scripts/services/elasticsearch.sh stop >/dev/null 2>&1 || true
  scripts/services/kube-apiserver.sh stop >/dev/null 2>&1 || true
}
trap stop_services EXIT
# The real kube-apiserver and etcd build from Go modules (cached in ~/.cache/spillway/kube; a
# cold build takes 5-11 minutes) while the lints and the Rust build run; the tests wait for it.
mkdir -p .work
scripts/services/kube-apiserver.sh start > .work/kube-apiserver-start.log 2>&1 &
kube=$!
# The OpenSearch and Elasticsearch nodes build from Maven artifacts on first use (about 25 s
# each, cached in ~/.m2 and .work/) and start in the background while the other services
# come up.
scripts/services/opensearch.sh start 2 &
os2=$!
scripts/services/opensearch.sh start 3 &
os3=$!
scripts/services/elasticsearch.sh start &
es=$!
scripts/services/seaweedfs.sh start
scripts/services/rabbitmq.sh start
wait "$os2" || { echo "error: the OpenSearch 2.19 test node did not start (see above)" >&2; exit 1; }
wait "$os3" || { echo "error: the OpenSearch 3.x test node did not start (see above)" >&2; exit 1; }
wait "$es" || { echo "error: the Elasticsearch test node did not start (see above)" >&2; exit 1; }
eval "$(scripts/services/seaweedfs.sh env)"
eval "$(scripts/services/rabbitmq.sh env)"
eval "$(scripts/services/opensearch.sh env 2)"
eval "$(scripts/services/opensearch.sh env 3)"
eval "$(scripts/services/elasticsearch.sh env)"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "building binaries (the end-to-end tests run them)"
cargo build --workspace --bins --locked -q
# The end-to-end tests run these binaries as they are (tests/support/lib.rs `bin`).
export SPILLWAY_BIN_DIR="$PWD/target/debug"
log "doc tests"
cargo test --workspace --doc --locked -q
log "waiting for the real kube-apiserver"
wait "$kube" || { cat .work/kube-apiserver-start.log >&2; echo "error: the kube-apiserver test server did not start (log above)" >&2; exit 1; }
tail -n 1 .work/kube-apiserver-start.log
eval "$(scripts/services/kube-apiserver.sh env)"
log "tests"
cargo nextest run --workspace --locked --profile ci
