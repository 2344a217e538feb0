#!/usr/bin/env bash
# Installs what the benchmark suite (bench/run.sh, bench/peers/*, bench/verify_output.py)
# needs: elasticdump into <repo>/.work/node (scripts/deps/node.sh), and a virtualenv of its own,
# <repo>/.work/bench-venv, with pinned opensearch-py, pandas, pyarrow, zstandard, matplotlib and
# boto3. It is separate from the test venv (.work/venv) because botocore needs
# python-dateutil<3 while the Kubernetes client the tests use declares >=3.
#
# Idempotent: when the venv already holds exactly the pinned versions it only says so and exits.
# Needs Python 3.11+ with the venv module (override with PYTHON=...), Node.js with npm, and
# access to PyPI and npm.
# Usage: scripts/deps/bench.sh
set -euo pipefail

PANDAS_VERSION="3.1.1"
PYARROW_VERSION="26.0.1"
ZSTANDARD_VERSION="0.25.0"
MATPLOTLIB_VERSION="3.11.2"
BOTO3_VERSION="1.44.5"
# the same opensearch-py as the client tests (scripts/deps/python.sh)
OPENSEARCH_PY_VERSION="3.2.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${repo_root}/.work/bench-venv"
python="${PYTHON:-python3}"

log() { echo "[deps/bench] $*"; }
die() { echo "[deps/bench] ERROR: $*" >&2; exit 1; }

"${repo_root}/scripts/deps/node.sh" || die "scripts/deps/node.sh failed (see its message above)"

# A venv whose interpreter no longer runs (e.g. the base Python was removed) is rebuilt.
if [[ -e "${venv}" ]] && ! "${venv}/bin/python" -c 'pass' >/dev/null 2>&1; then
  log "the virtualenv at ${venv} is broken; recreating it"
  rm -rf "${venv}"
fi
if [[ ! -x "${venv}/bin/python" ]]; then
  command -v "${python}" >/dev/null 2>&1 || die "no Python interpreter '${python}' on PATH; install python3 (with the venv module) or set PYTHON=/path/to/python3"
  log "creating virtualenv ${venv} with $("${python}" --version 2>&1)"
  mkdir -p "$(dirname "${venv}")"
  "${python}" -m venv "${venv}" || die "could not create the virtualenv at ${venv}; on Debian install python3-venv"
fi

wanted=(
  "pandas==${PANDAS_VERSION}"
  "pyarrow==${PYARROW_VERSION}"
  "zstandard==${ZSTANDARD_VERSION}"
  "matplotlib==${MATPLOTLIB_VERSION}"
  "boto3==${BOTO3_VERSION}"
  "opensearch-py==${OPENSEARCH_PY_VERSION}"
)

# Succeeds silently when every pinned distribution is installed at its pin.
installed_ok() {
  "${venv}/bin/python" "${repo_root}/scripts/deps/pinned.py" "${wanted[@]}"
}

if installed_ok; then
  log "already installed in ${venv}: ${wanted[*]}"
  exit 0
fi

log "installing ${wanted[*]} into ${venv}"
"${venv}/bin/python" -m pip install --disable-pip-version-check --quiet "${wanted[@]}" \
  || die "pip install failed for ${wanted[*]} (is PyPI reachable? pandas ${PANDAS_VERSION} needs Python 3.11+; the venv has $("${venv}/bin/python" --version 2>&1))"

installed_ok || die "after pip install, ${venv} still does not hold ${wanted[*]}"
MPLBACKEND=Agg "${venv}/bin/python" -c 'import pandas, pyarrow, pyarrow.parquet, zstandard, matplotlib.pyplot, boto3, opensearchpy' \
  || die "the benchmark libraries cannot be imported from ${venv}/bin/python"
log "done: ${wanted[*]} in ${venv}"
