#!/usr/bin/env bash
# Runs a private RabbitMQ node as the broker for spillway's queue tests, bound to 127.0.0.1 only.
#
#   scripts/services/rabbitmq.sh start     # install if needed, start, wait until AMQP answers
#   scripts/services/rabbitmq.sh stop      # stop the node started by `start`
#   scripts/services/rabbitmq.sh restart   # really stop, then start again (data is kept)
#   scripts/services/rabbitmq.sh status    # exit 0 when the node is up and AMQP answers
#   scripts/services/rabbitmq.sh env       # print the export line for the tests
#   scripts/services/rabbitmq.sh vhost N   # create virtual host N, print its AMQP URL
#
# Installs the Debian package rabbitmq-server with apt when it is missing (needs root). The node
# is separate from any system RabbitMQ: its own node name, AMQP port, distribution port, epmd
# port, and data, log, pid and plugin files under <repo>/.work/rabbitmq/ (owned by the user
# `rabbitmq`, as the Debian wrapper scripts run the server as that user).
# Ports: AMQP on ${SPILLWAY_AMQP_PORT:-5682}, Erlang distribution on
# ${SPILLWAY_RABBITMQ_DIST_PORT:-25682}, epmd on ${SPILLWAY_RABBITMQ_EPMD_PORT:-4370}.
# The default user guest/guest may only connect from loopback, which is all the tests need.
set -euo pipefail
# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="${repo_root}/.work"
state="${work}/rabbitmq"
mnesia="${state}/mnesia"
logs="${state}/log"
pidfile="${state}/rabbitmq.pid"
plugins_file="${state}/enabled_plugins"
config_base="${state}/rabbitmq"

amqp_port="${SPILLWAY_AMQP_PORT:-5682}"
dist_port="${SPILLWAY_RABBITMQ_DIST_PORT:-25682}"
epmd_port="${SPILLWAY_RABBITMQ_EPMD_PORT:-4370}"
node="${SPILLWAY_RABBITMQ_NODENAME:-spillway-test@localhost}"
url="amqp://guest:guest@127.0.0.1:${amqp_port}/%2f"

log_msg() { echo "[rabbitmq] $*" >&2; }
die() { echo "[rabbitmq] ERROR: $*" >&2; exit 1; }

# Everything the server and the CLI tools read to find this node and its files. `su` (used to
# run the server as the `rabbitmq` user when started by root) keeps these variables.
export RABBITMQ_NODENAME="${node}"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="${amqp_port}"
export RABBITMQ_DIST_PORT="${dist_port}"
# Erlang distribution (used by rabbitmqctl) listens on loopback only, like AMQP.
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export ERL_EPMD_PORT="${epmd_port}"
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_MNESIA_BASE="${mnesia}"
export RABBITMQ_LOG_BASE="${logs}"
export RABBITMQ_PID_FILE="${pidfile}"
export RABBITMQ_ENABLED_PLUGINS_FILE="${plugins_file}"
export RABBITMQ_CONFIG_FILE="${config_base}.conf"

install_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 && return 0
  [[ "$(id -u)" == 0 ]] || die "rabbitmq-server is not installed and installing it needs root: apt-get install rabbitmq-server"
  command -v apt-get >/dev/null 2>&1 || die "rabbitmq-server is not installed and there is no apt-get; install RabbitMQ 3.10+ by hand"
  log_msg "installing rabbitmq-server with apt"
  # The package's post-install tries to start the system service; nothing here needs it.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || die "apt-get update failed (is the Debian mirror reachable?)"
  apt-get install -y -q rabbitmq-server >/dev/null || die "apt-get install rabbitmq-server failed"
  command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server was installed but is not on PATH"
}

# Starts the server as the `rabbitmq` user. Not through the Debian wrapper: its `su` resets
# the open-files soft limit to 1024, and a node with a few hundred quorum queues then runs
# out of file handles and stops accepting connections. The soft limit is raised to the hard.
start_server() {
  local server=/usr/lib/rabbitmq/bin/rabbitmq-server
  [[ -x "${server}" ]] || server="$(command -v rabbitmq-server)"
  local run="ulimit -n \$(ulimit -Hn) 2>/dev/null; exec ${server} -detached"
  if [[ "$(id -u)" == 0 ]]; then
    (cd /var/lib/rabbitmq 2>/dev/null || cd /; su rabbitmq -s /bin/sh -c "${run}")
  else
    sh -c "${run}"
  fi
}

node_pid() {
  [[ -f "${pidfile}" ]] || return 1
  local pid
  pid="$(tr -d '[:space:]' <"${pidfile}")"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
  # Make sure the pid is still our node and not a recycled pid: a BEAM started with our data
  # dir (its environment is readable by root and by the `rabbitmq` user only).
  local cmdline environ
  cmdline="$(proc_cmdline "${pid}")" || return 1
  [[ "${cmdline}" == *beam* ]] || return 1
  if [[ -r "/proc/${pid}/environ" ]]; then
    environ="$(tr '\0' '\n' <"/proc/${pid}/environ")"
    grep -qxF -- "RABBITMQ_MNESIA_BASE=${mnesia}" <<<"${environ}" || return 1
  fi
  echo "${pid}"
}

# The AMQP listener answers the protocol header with a Connection.Start frame (type 1).
amqp_ready() {
  python3 - "${amqp_port}" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
try:
    s.sendall(b"AMQP\x00\x00\x09\x01")
    first = s.recv(1)
    sys.exit(0 if first == b"\x01" else 1)
finally:
    s.close()
PY
}


prepare_dirs() {
  mkdir -p "${mnesia}" "${logs}"
  [[ -f "${plugins_file}" ]] || echo "[]." >"${plugins_file}"
  cat >"${config_base}.conf" <<CONF
loopback_users.guest = true
# Tests restart the broker: keep the disk alarm from blocking publishers on small disks.
disk_free_limit.absolute = 50MB
CONF
  if [[ "$(id -u)" == 0 ]]; then
    chown -R rabbitmq:rabbitmq "${state}"
  fi
}

wait_ready() {
  local deadline=$((SECONDS + ${SPILLWAY_RABBITMQ_START_TIMEOUT:-90}))
  until node_pid >/dev/null && amqp_ready; do
    if (( SECONDS >= deadline )); then
      tail -n 30 "${logs}"/*.log >&2 2>/dev/null || true
      die "RabbitMQ at amqp://127.0.0.1:${amqp_port} did not answer within ${SPILLWAY_RABBITMQ_START_TIMEOUT:-90}s; logs in ${logs}"
    fi
    sleep 0.3
  done
}

cmd_start() {
  install_rabbitmq
  if pid="$(node_pid)"; then
    if amqp_ready; then
      log_msg "already running (pid ${pid}) at amqp://127.0.0.1:${amqp_port}"
      return 0
    fi
    log_msg "pid ${pid} is running but AMQP does not answer yet; waiting"
  else
    for p in "${amqp_port}" "${dist_port}"; do
      if port_busy "${p}"; then
        die "port ${p} on 127.0.0.1 is in use; set SPILLWAY_AMQP_PORT / SPILLWAY_RABBITMQ_DIST_PORT to free ports"
      fi
    done
    prepare_dirs
    rm -f "${pidfile}"
    log_msg "starting node ${node} (AMQP 127.0.0.1:${amqp_port}), logs in ${logs}"
    # -detached returns at once; the node writes its pid file while booting.
    start_server >"${state}/start.out" 2>&1 </dev/null \
      || { cat "${state}/start.out" >&2; die "rabbitmq-server -detached failed"; }
  fi
  wait_ready
  log_msg "ready at amqp://127.0.0.1:${amqp_port} (pid $(node_pid))"
}

cmd_stop() {
  local pid
  if pid="$(node_pid)"; then
    # A hung node does not answer the CLI either: bound the polite stop, then kill.
    timeout 30 rabbitmqctl -q -n "${node}" stop "${pidfile}" >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      log_msg "node did not stop within 10s; killing pid ${pid}"
      kill -9 "${pid}" 2>/dev/null || true
    fi
    log_msg "stopped (pid ${pid})"
  else
    log_msg "not running"
  fi
  # The node's private epmd (own port) has no other users.
  if command -v epmd >/dev/null 2>&1; then
    epmd -port "${epmd_port}" -kill >/dev/null 2>&1 || true
  fi
  rm -f "${pidfile}"
}

cmd_restart() {
  cmd_stop
  cmd_start
}

cmd_status() {
  if pid="$(node_pid)" && amqp_ready; then
    echo "running (pid ${pid}) at amqp://127.0.0.1:${amqp_port}, node ${node}"
  else
    echo "not running"
    return 1
  fi
}

cmd_env() {
  echo "export SPILLWAY_TEST_AMQP=${url}"
}

# (Re)creates virtual host NAME, empty, with full rights for guest, and prints its AMQP URL:
# tests that run coordinators and workers each get their own queues this way.
cmd_vhost() {
  local name="${1:-}"
  [[ "${name}" =~ ^[A-Za-z0-9._-]+$ ]] || die "usage: $0 vhost NAME (letters, digits, . _ -)"
  node_pid >/dev/null && amqp_ready || die "the node is not running; run $0 start first"
  # A fresh vhost each time: nothing left over from an earlier run.
  rabbitmqctl -q -n "${node}" delete_vhost "${name}" >/dev/null 2>&1 || true
  rabbitmqctl -q -n "${node}" add_vhost "${name}" >/dev/null 2>&1 || true
  rabbitmqctl -q -n "${node}" set_permissions -p "${name}" guest ".*" ".*" ".*" >/dev/null \
    || die "could not grant guest access to vhost ${name}"
  echo "amqp://guest:guest@127.0.0.1:${amqp_port}/${name}"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_restart ;;
  status) cmd_status ;;
  env) cmd_env ;;
  vhost) shift; cmd_vhost "$@" ;;
  *) echo "usage: $0 start|stop|restart|status|env|vhost NAME" >&2; exit 2 ;;
esac
