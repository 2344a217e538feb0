#!/usr/bin/env bash
# Installs elasticdump (a third-party export tool used as a peer in the searchsim client
# tests and benchmarks) with npm into <repo>/.work/node.
#
# Idempotent: when the pinned version is already there it only says so and exits.
# Needs node and npm on PATH and access to the npm registry.
# Usage: scripts/deps/node.sh
set -euo pipefail

ELASTICDUMP_VERSION="6.125.1"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
prefix="${repo_root}/.work/node"
bin="${prefix}/node_modules/.bin/elasticdump"
pkg_json="${prefix}/node_modules/elasticdump/package.json"

log() { echo "[deps/node] $*"; }
die() { echo "[deps/node] ERROR: $*" >&2; exit 1; }

installed_version() {
  [[ -f "${pkg_json}" ]] || return 1
  node -e 'process.stdout.write(require(process.argv[1]).version)' "${pkg_json}"
}

command -v node >/dev/null 2>&1 || die "node is not on PATH; install Node.js 18+ (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is not on PATH; install it (Debian: apt-get install npm)"

if [[ -x "${bin}" ]] && [[ "$(installed_version || true)" == "${ELASTICDUMP_VERSION}" ]]; then
  log "already installed: elasticdump ${ELASTICDUMP_VERSION} at ${bin}"
  exit 0
fi

log "installing elasticdump@${ELASTICDUMP_VERSION} into ${prefix} with $(node --version) / npm $(npm --version 2>/dev/null)"
mkdir -p "${prefix}"
npm install --prefix "${prefix}" --no-audit --no-fund --loglevel=error \
  "elasticdump@${ELASTICDUMP_VERSION}" \
  || die "npm install elasticdump@${ELASTICDUMP_VERSION} failed (is the npm registry reachable?)"

[[ -x "${bin}" ]] || die "npm finished but ${bin} does not exist"
have="$(installed_version || true)"
[[ "${have}" == "${ELASTICDUMP_VERSION}" ]] || die "expected elasticdump ${ELASTICDUMP_VERSION}, found '${have}'"
log "done: elasticdump ${have} at ${bin}"
