#!/usr/bin/env bash
# Installs the Python clients that the searchsim and kubesim client tests drive (opensearch-py,
# the Elasticsearch 8.x client, PyYAML, the Kubernetes client) and the chart tests' tools
# (helm-python-sdk: Helm's renderer and linter without a helm binary; kubernetes-validate;
# check-jsonschema) into a virtualenv at <repo>/.work/venv.
#
# Idempotent: when the venv already holds exactly the pinned versions it only says so
# and exits. Needs a Python 3 interpreter (override with PYTHON=...) and PyPI access.
# Usage: scripts/deps/python.sh
set -euo pipefail

OPENSEARCH_PY_VERSION="3.2.0"
ELASTICSEARCH_PY_VERSION="8.19.3"
PYYAML_VERSION="6.0.3"
KUBERNETES_PY_VERSION="37.0.2"
HELM_PYTHON_SDK_VERSION="0.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECK_JSONSCHEMA_VERSION="0.39.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${repo_root}/.work/venv"
python="${PYTHON:-python3}"

log() { echo "[deps/python] $*"; }
die() { echo "[deps/python] ERROR: $*" >&2; exit 1; }

wanted=(
  "opensearch-py==${OPENSEARCH_PY_VERSION}"
  "elasticsearch==${ELASTICSEARCH_PY_VERSION}"
  "PyYAML==${PYYAML_VERSION}"
  "kubernetes==${KUBERNETES_PY_VERSION}"
  "helm-python-sdk==${HELM_PYTHON_SDK_VERSION}"
  "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
  "check-jsonschema==${CHECK_JSONSCHEMA_VERSION}"
)

# Succeeds silently when every pinned distribution is installed at its pin.
installed_ok() {
  "${venv}/bin/python" "${repo_root}/scripts/deps/pinned.py" "${wanted[@]}"
}

# A venv whose interpreter no longer runs (e.g. the base Python was removed) is rebuilt.
if [[ -e "${venv}" ]] && ! "${venv}/bin/python" -c 'pass' >/dev/null 2>&1; then
  log "the virtualenv at ${venv} is broken; recreating it"
  rm -rf "${venv}"
fi

if [[ -x "${venv}/bin/python" ]] && installed_ok; then
  log "already installed in ${venv}: ${wanted[*]}"
  exit 0
fi

command -v "${python}" >/dev/null 2>&1 || die "no Python interpreter '${python}' on PATH; install python3 (with the venv module) or set PYTHON=/path/to/python3"

if [[ ! -x "${venv}/bin/python" ]]; then
  log "creating virtualenv ${venv} with $("${python}" --version 2>&1)"
  mkdir -p "$(dirname "${venv}")"
  "${python}" -m venv "${venv}" || die "could not create the virtualenv at ${venv}; on Debian install python3-venv"
fi

log "installing ${wanted[*]} into ${venv}"
"${venv}/bin/python" -m pip install --disable-pip-version-check --quiet "${wanted[@]}" \
  || die "pip install failed for ${wanted[*]} (is PyPI reachable?)"

installed_ok || die "after pip install, ${venv} still does not hold ${wanted[*]}"
"${venv}/bin/python" -c 'import opensearchpy, elasticsearch, yaml, kubernetes, helm_python, kubernetes_validate, check_jsonschema' \
  || die "the installed clients cannot be imported from ${venv}/bin/python"
log "done: ${wanted[*]} in ${venv}"
