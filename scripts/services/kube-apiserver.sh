#!/usr/bin/env bash
# Runs a real Kubernetes API server (kube-apiserver + etcd, built from the upstream Go modules)
# for spillway's operator tests: TLS, client-certificate and ServiceAccount-token
# authentication, RBAC enforced, bound to 127.0.0.1 only. No controller-manager, scheduler or
# kubelet runs (see "Without a controller-manager" below).
#
#   scripts/services/kube-apiserver.sh build     # build kube-apiserver + etcd if not cached, print the dir
#   scripts/services/kube-apiserver.sh start     # build if needed, start etcd + apiserver, wait for /readyz
#   scripts/services/kube-apiserver.sh stop      # stop both (idempotent)
#   scripts/services/kube-apiserver.sh restart   # stop, then start (etcd data is wiped on start)
#   scripts/services/kube-apiserver.sh status    # exit 0 when both run and /readyz answers ok
#   scripts/services/kube-apiserver.sh env       # print the export lines for the tests
#   scripts/services/kube-apiserver.sh sa-kubeconfig NAMESPACE SA OUT
#                                                # kubeconfig at OUT authenticating as ServiceAccount
#                                                # NAMESPACE/SA (created if missing) via TokenRequest
#
# Build: the Go module in scripts/services/kube/ (go.mod pins k8s.io/kubernetes, every k8s.io/*
# staging module and etcd). Needs `go` (>= the go.mod `go` line) and the Go module proxy. The
# binaries are cached in ${XDG_CACHE_HOME:-$HOME/.cache}/spillway/kube/<k8s-version>/ with a
# stamp of go.mod, go.sum, the main.go files and the Go version: change any and `build`/`start`
# rebuild. A cold build (empty module and build caches) takes several minutes on 2 cores.
# State under <repo>/.work/kube/: pki/ (CA, serving cert, admin client cert, ServiceAccount key;
# kept across restarts so kubeconfigs stay valid), etcd/ (data, wiped on every start), logs and
# pid files, admin.kubeconfig (user spillway-admin in group system:masters).
# Ports: apiserver https on ${SPILLWAY_KUBE_PORT:-6543}; etcd client on
# ${SPILLWAY_ETCD_PORT:-2479}, peer on ${SPILLWAY_ETCD_PEER_PORT:-2480} (plain http, loopback).
# Needs openssl, curl and kubectl (kubectl only for sa-kubeconfig).
#
# Without a controller-manager: namespaces are never finalized after deletion (they stay
# Terminating; use fresh names), no "default" ServiceAccount is created in new namespaces (so
# Pods without an existing ServiceAccount are refused by the ServiceAccount admission plugin),
# Deployments/Jobs/... never get Pods, garbage collection (ownerReferences) does not run, and no
# ServiceAccount token Secrets are populated. TokenRequest (`kubectl create token`) works.
set -euo pipefail
# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
module="${repo_root}/scripts/services/kube"
work="${repo_root}/.work"
state="${work}/kube"
pki="${state}/pki"
etcd_data="${state}/etcd"
etcd_log="${state}/etcd.log"
etcd_pidfile="${state}/etcd.pid"
api_log="${state}/kube-apiserver.log"
api_pidfile="${state}/kube-apiserver.pid"
admin_kubeconfig="${state}/admin.kubeconfig"

api_port="${SPILLWAY_KUBE_PORT:-6543}"
etcd_port="${SPILLWAY_ETCD_PORT:-2479}"
etcd_peer_port="${SPILLWAY_ETCD_PEER_PORT:-2480}"
start_timeout="${SPILLWAY_KUBE_START_TIMEOUT:-120}"
server="https://127.0.0.1:${api_port}"

log_msg() { echo "[kube-apiserver] $*" >&2; }
die() { echo "[kube-apiserver] ERROR: $*" >&2; exit 1; }

# --- build -----------------------------------------------------------------------------------

k8s_version() {
  awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "${module}/go.mod"
}

cache_dir() {
  local version
  version="$(k8s_version)"
  [[ -n "${version}" ]] || die "no k8s.io/kubernetes requirement in ${module}/go.mod"
  echo "${XDG_CACHE_HOME:-${HOME}/.cache}/spillway/kube/${version}"
}

# The release's version for /version and the discovery documents (kubectl, client libraries
# and feature gating read it). Upstream's build (hack/lib/version.sh) sets the same variables;
# without them the server reports v0.0.0-master+$Format:%H$, which clients cannot parse.
version_ldflags() {
  local version major minor key
  version="$(k8s_version)"
  major="${version#v}"; major="${major%%.*}"
  minor="${version#v*.}"; minor="${minor%%.*}"
  for key in client-go/pkg/version component-base/version; do
    printf -- "-X k8s.io/%s.gitVersion=%s -X k8s.io/%s.gitMajor=%s -X k8s.io/%s.gitMinor=%s -X k8s.io/%s.gitTreeState=clean " \
      "${key}" "${version}" "${key}" "${major}" "${key}" "${minor}" "${key}"
  done
}

# Everything that changes the binaries: the module files, the commands, the link flags and the
# Go toolchain.
build_key() {
  {
    go version
    version_ldflags
    go env GOOS GOARCH
    cat "${module}/go.mod" "${module}/go.sum" "${module}"/cmd/*/main.go
  } | sha256sum | cut -c1-32
}

built() {
  local dir="$1" key="$2"
  [[ -x "${dir}/kube-apiserver" && -x "${dir}/etcd" && -f "${dir}/.stamp" ]] \
    && [[ "$(cat "${dir}/.stamp")" == "${key}" ]]
}

check_go() {
  command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go >= $(awk '$1 == "go" {print $2; exit}' "${module}/go.mod") to build kube-apiserver and etcd"
}

# Prints the directory holding kube-apiserver and etcd, building them first when needed.
cmd_build() {
  check_go
  local dir key
  dir="$(cache_dir)"
  key="$(build_key)"
  if built "${dir}" "${key}"; then
    echo "${dir}"
    return 0
  fi
  mkdir -p "${dir}"
  # One build at a time (parallel `start`s from several test runs share the cache).
  exec 9>"${dir}.lock"
  flock 9
  if ! built "${dir}" "${key}"; then
    log_msg "building kube-apiserver and etcd $(k8s_version) into ${dir} (a cold build takes minutes)"
    local tmp started=${SECONDS}
    tmp="$(mktemp -d "${dir}.tmp.XXXXXX")"
    if ! (cd "${module}" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
      go build -trimpath -ldflags="-s -w $(version_ldflags)" -o "${tmp}/" ./cmd/kube-apiserver ./cmd/etcd) >&2; then
      rm -rf "${tmp}"
      die "go build failed in ${module} (see the errors above)"
    fi
    mv -f "${tmp}/kube-apiserver" "${tmp}/etcd" "${dir}/"
    rm -rf "${tmp}"
    echo "${key}" >"${dir}/.stamp"
    log_msg "built in $((SECONDS - started))s"
  fi
  flock -u 9
  exec 9>&-
  echo "${dir}"
}

# --- certificates ----------------------------------------------------------------------------

# CA, serving cert for 127.0.0.1/localhost (and the in-cluster names), admin client cert, and
# the ServiceAccount token signing key. Generated once; kept so kubeconfigs survive restarts.
make_pki() {
  command -v openssl >/dev/null 2>&1 || die "openssl is not on PATH (apt-get install openssl)"
  if [[ -f "${pki}/ca.crt" && -f "${pki}/apiserver.crt" && -f "${pki}/admin.crt" && -f "${pki}/sa.key" ]]; then
    return 0
  fi
  rm -rf "${pki}"
  mkdir -p "${pki}"
  (
    cd "${pki}"
    umask 077
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=spillway-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    openssl req "${ec[@]}" -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    cat >apiserver.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -extfile apiserver.ext -out apiserver.crt
    # Admin: group system:masters (superuser; RBAC is bypassed for it by design).
    openssl req "${ec[@]}" -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=spillway-admin"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -extfile client.ext -out admin.crt
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
    openssl pkey -in sa.key -pubout -out sa.pub
    rm -f ./*.csr ./*.ext ca.srl
  ) >"${state}/pki.log" 2>&1 || { cat "${state}/pki.log" >&2; die "certificate generation with openssl failed"; }
}

# write_kubeconfig OUT USER NAMESPACE CREDENTIALS: a kubeconfig for this API server, readable by
# its owner only; CREDENTIALS are the lines under `user:` (already indented by four spaces).
write_kubeconfig() {
  local out="$1" user="$2" namespace="$3" credentials="$4" tmp="$1.tmp"
  mkdir -p "$(dirname "${out}")"
  (
    umask 077
    cat >"${tmp}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: spillway-test
  cluster:
    server: ${server}
    certificate-authority-data: $(base64 -w0 <"${pki}/ca.crt")
users:
- name: ${user}
  user:
${credentials}
contexts:
- name: ${user}
  context:
    cluster: spillway-test
    user: ${user}
    namespace: ${namespace}
current-context: ${user}
EOF
  )
  mv -f "${tmp}" "${out}"
}

write_admin_kubeconfig() {
  write_kubeconfig "${admin_kubeconfig}" spillway-admin default \
    "    client-certificate-data: $(base64 -w0 <"${pki}/admin.crt")
    client-key-data: $(base64 -w0 <"${pki}/admin.key")"
}

# --- processes -------------------------------------------------------------------------------

# Prints the pid in PIDFILE when that process is alive and is still BINARY (not a recycled pid).
live_pid() {
  local pidfile="$1" binary="$2" pid
  [[ -f "${pidfile}" ]] || return 1
  pid="$(tr -d '[:space:]' <"${pidfile}")"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
  local cmdline
  cmdline="$(proc_cmdline "${pid}")" || return 1
  [[ "${cmdline%%$'\n'*}" == */"${binary}" ]] || return 1
  echo "${pid}"
}

ready() {
  curl -fsS --max-time 3 --cacert "${pki}/ca.crt" --cert "${pki}/admin.crt" --key "${pki}/admin.key" \
    "${server}/readyz" 2>/dev/null | grep -qx ok
}

etcd_healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:${etcd_port}/health" 2>/dev/null | grep -q '"health":"true"'
}

show_logs_and_die() {
  echo "----- tail of ${etcd_log}" >&2
  tail -n 25 "${etcd_log}" >&2 2>/dev/null || true
  echo "----- tail of ${api_log}" >&2
  tail -n 40 "${api_log}" >&2 2>/dev/null || true
  cmd_stop >/dev/null 2>&1 || true
  die "$*"
}

start_etcd() {
  local bin="$1"
  rm -rf "${etcd_data}"
  mkdir -p "${etcd_data}"
  # --unsafe-no-fsync: a throw-away test store; fsync only slows the tests down.
  spawn_detached "${etcd_pidfile}" "${etcd_log}" "${bin}/etcd" \
    --name spillway-test \
    --data-dir "${etcd_data}" \
    --listen-client-urls "http://127.0.0.1:${etcd_port}" \
    --advertise-client-urls "http://127.0.0.1:${etcd_port}" \
    --listen-peer-urls "http://127.0.0.1:${etcd_peer_port}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${etcd_peer_port}" \
    --initial-cluster "spillway-test=http://127.0.0.1:${etcd_peer_port}" \
    --initial-cluster-state new \
    --unsafe-no-fsync \
    --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) >/dev/null
  local deadline=$((SECONDS + 30))
  until etcd_healthy; do
    live_pid "${etcd_pidfile}" etcd >/dev/null || show_logs_and_die "etcd exited during start-up"
    (( SECONDS < deadline )) || show_logs_and_die "etcd did not become healthy within 30s"
    sleep 0.2
  done
}

start_apiserver() {
  local bin="$1"
  # No controller-manager/scheduler/kubelet: nothing else is needed for the API itself.
  # --endpoint-reconciler-type none: the default (lease) reconciler refuses a loopback
  # --advertise-address ("may not be in the loopback range"); with none, the `kubernetes`
  # Service in `default` exists but gets no Endpoints/EndpointSlice (nothing in-cluster uses it).
  # --cert-dir is only a fallback (the serving cert is given); keep it out of /var/run.
  spawn_detached "${api_pidfile}" "${api_log}" "${bin}/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:${etcd_port}" \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --endpoint-reconciler-type none \
    --secure-port "${api_port}" \
    --cert-dir "${pki}" \
    --tls-cert-file "${pki}/apiserver.crt" \
    --tls-private-key-file "${pki}/apiserver.key" \
    --client-ca-file "${pki}/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "${pki}/sa.pub" \
    --service-account-signing-key-file "${pki}/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged=true \
    --profiling=false >/dev/null
}

cmd_start() {
  local bin api_pid etcd_pid
  if api_pid="$(live_pid "${api_pidfile}" kube-apiserver)" && etcd_pid="$(live_pid "${etcd_pidfile}" etcd)" && ready; then
    log_msg "already running (apiserver pid ${api_pid}, etcd pid ${etcd_pid}) at ${server}"
    return 0
  fi
  command -v curl >/dev/null 2>&1 || die "curl is not on PATH (apt-get install curl)"
  bin="$(cmd_build)"
  cmd_stop >/dev/null 2>&1 || true
  for p in "${api_port}" "${etcd_port}" "${etcd_peer_port}"; do
    if port_busy "${p}"; then
      die "port ${p} on 127.0.0.1 is in use; set SPILLWAY_KUBE_PORT / SPILLWAY_ETCD_PORT / SPILLWAY_ETCD_PEER_PORT to free ports"
    fi
  done
  mkdir -p "${state}"
  make_pki
  write_admin_kubeconfig
  local started=${SECONDS} t0
  t0="$(date +%s%N)"
  log_msg "starting etcd (127.0.0.1:${etcd_port}) and kube-apiserver (${server}), logs in ${state}"
  start_etcd "${bin}"
  start_apiserver "${bin}"
  until ready; do
    live_pid "${api_pidfile}" kube-apiserver >/dev/null || show_logs_and_die "kube-apiserver exited during start-up"
    live_pid "${etcd_pidfile}" etcd >/dev/null || show_logs_and_die "etcd exited during start-up"
    if (( SECONDS - started >= start_timeout )); then
      show_logs_and_die "kube-apiserver at ${server} was not ready within ${start_timeout}s (SPILLWAY_KUBE_START_TIMEOUT)"
    fi
    sleep 0.3
  done
  log_msg "ready at ${server} in $(( ($(date +%s%N) - t0) / 1000000 )) ms (admin kubeconfig ${admin_kubeconfig})"
}

stop_one() {
  local pidfile="$1" binary="$2" pid
  if pid="$(live_pid "${pidfile}" "${binary}")"; then
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      log_msg "${binary} did not stop within 10s; killing pid ${pid}"
      kill -KILL "${pid}" 2>/dev/null || true
    fi
    log_msg "stopped ${binary} (pid ${pid})"
  else
    log_msg "${binary} not running"
  fi
  rm -f "${pidfile}"
}

cmd_stop() {
  stop_one "${api_pidfile}" kube-apiserver
  stop_one "${etcd_pidfile}" etcd
}

cmd_restart() {
  cmd_stop
  cmd_start
}

cmd_status() {
  local api_pid etcd_pid
  if api_pid="$(live_pid "${api_pidfile}" kube-apiserver)" && etcd_pid="$(live_pid "${etcd_pidfile}" etcd)" && ready; then
    echo "running at ${server} (apiserver pid ${api_pid}, etcd pid ${etcd_pid} on 127.0.0.1:${etcd_port})"
  else
    echo "not running"
    return 1
  fi
}

cmd_env() {
  echo "export SPILLWAY_KUBE_APISERVER=${server}"
  echo "export SPILLWAY_KUBE_ADMIN_KUBECONFIG=${admin_kubeconfig}"
  echo "export SPILLWAY_KUBE_CA=${pki}/ca.crt"
}

# Writes a kubeconfig at OUT that authenticates as ServiceAccount NAMESPACE/SA with a token from
# the TokenRequest API (lifetime ${SPILLWAY_KUBE_SA_TOKEN_DURATION:-2h}), so a test can run a
# process under that account with RBAC enforced. Creates the ServiceAccount when missing; the
# namespace must exist.
cmd_sa_kubeconfig() {
  local ns="${1:-}" sa="${2:-}" out="${3:-}"
  [[ -n "${ns}" && -n "${sa}" && -n "${out}" ]] || die "usage: $0 sa-kubeconfig NAMESPACE SA OUT"
  command -v kubectl >/dev/null 2>&1 || die "kubectl is not on PATH"
  ready || die "the API server is not running; run $0 start first"
  local k=(kubectl --kubeconfig "${admin_kubeconfig}")
  "${k[@]}" get namespace "${ns}" >/dev/null || die "namespace ${ns} does not exist"
  if ! "${k[@]}" -n "${ns}" get serviceaccount "${sa}" >/dev/null 2>&1; then
    "${k[@]}" -n "${ns}" create serviceaccount "${sa}" >/dev/null || die "could not create ServiceAccount ${ns}/${sa}"
  fi
  local token
  token="$("${k[@]}" -n "${ns}" create token "${sa}" --duration="${SPILLWAY_KUBE_SA_TOKEN_DURATION:-2h}")" \
    || die "TokenRequest for ${ns}/${sa} failed"
  write_kubeconfig "${out}" "${ns}-${sa}" "${ns}" "    token: ${token}"
  echo "${out}"
}

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_restart ;;
  status) cmd_status ;;
  env) cmd_env ;;
  sa-kubeconfig) shift; cmd_sa_kubeconfig "$@" ;;
  *) echo "usage: $0 build|start|stop|restart|status|env|sa-kubeconfig NAMESPACE SA OUT" >&2; exit 2 ;;
esac
