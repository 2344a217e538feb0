#!/usr/bin/env bash
# Runs a private Elasticsearch 8.19 node (one JVM, built from Maven Central artifacts) for
# spillway's export tests, bound to 127.0.0.1 only, without security (plain HTTP, no password).
#
#   scripts/services/elasticsearch.sh build    # resolve the jars with Maven, compile the launcher
#   scripts/services/elasticsearch.sh start    # build if needed, wipe the data, start, wait (yellow)
#   scripts/services/elasticsearch.sh stop     # stop the node started by `start`
#   scripts/services/elasticsearch.sh restart  # stop, then start (with empty data again)
#   scripts/services/elasticsearch.sh status   # exit 0 when the node is up and answers HTTP
#   scripts/services/elasticsearch.sh env      # print the export line for the tests
#
# There is no Elasticsearch distribution here (nothing may be downloaded but from the package
# registries). Maven Central has the server jar `org.elasticsearch:elasticsearch`, its HTTP and
# transport module `org.elasticsearch.plugin:transport-netty4`, and the test framework jar; the
# pom in scripts/services/elasticsearch/ lists them, and SpillwayEsNode.java starts a node with
# the netty4 plugin loaded from the classpath (as the test framework's MockNode does). So the
# node has the server's features (indices, mappings, _bulk, _count, search, PIT with slices and
# search_after, aggregations such as date_histogram) but none of the other modules: no painless
# scripts, no analysis-common analyzers, no x-pack (no security, no ILM, no ingest pipelines).
#
# Needs java 17+ and mvn (Debian: openjdk-17-jdk-headless, maven). Override with
# SPILLWAY_ELASTICSEARCH_JAVA_HOME; SPILLWAY_MAVEN_REPO picks the local Maven repository
# (default ~/.m2/repository). Built classpath and classes are cached under
# <repo>/.work/elasticsearch/build/, keyed on the hash of the pom and the launcher source, so a
# second start does no Maven work. Data, logs, pid file and the node's stdout (node.log) live
# under <repo>/.work/elasticsearch/.
# Ports: HTTP on ${SPILLWAY_ELASTICSEARCH_HTTP_PORT:-9280}, transport on
# ${SPILLWAY_ELASTICSEARCH_TRANSPORT_PORT:-9380}. Heap: ${SPILLWAY_ELASTICSEARCH_HEAP:-512m}.
set -euo pipefail
# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="${repo_root}/scripts/services/elasticsearch"
work="${repo_root}/.work"
state="${work}/elasticsearch"
build="${state}/build"
home="${state}/home"
data="${state}/data"
logs="${state}/logs"
tmpdir="${state}/tmp"
pidfile="${state}/node.pid"
logfile="${state}/node.log"

http_port="${SPILLWAY_ELASTICSEARCH_HTTP_PORT:-9280}"
transport_port="${SPILLWAY_ELASTICSEARCH_TRANSPORT_PORT:-9380}"
heap="${SPILLWAY_ELASTICSEARCH_HEAP:-512m}"
start_timeout="${SPILLWAY_ELASTICSEARCH_START_TIMEOUT:-180}"
url="http://127.0.0.1:${http_port}"
main_class="org.elasticsearch.node.SpillwayEsNode"

log_msg() { echo "[elasticsearch] $*" >&2; }
die() { echo "[elasticsearch] ERROR: $*" >&2; exit 1; }

java_bin() {
  if [[ -n "${SPILLWAY_ELASTICSEARCH_JAVA_HOME:-}" ]]; then
    echo "${SPILLWAY_ELASTICSEARCH_JAVA_HOME}/bin/$1"
  elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/$1" ]]; then
    echo "${JAVA_HOME}/bin/$1"
  else
    command -v "$1" 2>/dev/null || echo "$1"
  fi
}

# The cache key: whatever changes the classpath or the compiled launcher.
build_key() {
  cat "${src}/pom.xml" "${src}/SpillwayEsNode.java" | sha256sum | cut -d' ' -f1
}

# True when the cached build matches the sources and every jar it names is still there
# (a wiped ~/.m2 must not leave a classpath of missing files).
build_fresh() {
  [[ -f "${build}/stamp" && -f "${build}/classpath.txt" ]] || return 1
  [[ "$(cat "${build}/stamp")" == "$(build_key)" ]] || return 1
  [[ -f "${build}/classes/org/elasticsearch/node/SpillwayEsNode.class" ]] || return 1
  local jar
  while IFS= read -r jar; do
    [[ -f "${jar}" ]] || return 1
  done < <(tr ':' '\n' <"${build}/classpath.txt")
}

cmd_build() {
  if build_fresh; then
    log_msg "build is up to date (${build})"
    return 0
  fi
  local javac mvn_args=()
  javac="$(java_bin javac)"
  command -v mvn >/dev/null 2>&1 || die "mvn is not installed (Debian: apt-get install maven)"
  command -v "${javac}" >/dev/null 2>&1 || die "javac not found (need a JDK 17+, e.g. apt-get install openjdk-17-jdk-headless)"
  [[ -n "${SPILLWAY_MAVEN_REPO:-}" ]] && mvn_args+=("-Dmaven.repo.local=${SPILLWAY_MAVEN_REPO}")
  rm -rf "${build}"
  mkdir -p "${build}/classes"
  log_msg "resolving the Elasticsearch jars with Maven (${src}/pom.xml)"
  if ! mvn -B -q -f "${src}/pom.xml" "${mvn_args[@]}" dependency:build-classpath \
      -Dmdep.outputFile="${build}/classpath.txt" >"${build}/mvn.log" 2>&1; then
    tail -n 30 "${build}/mvn.log" >&2
    die "Maven could not resolve the Elasticsearch artifacts; full log in ${build}/mvn.log"
  fi
  [[ -s "${build}/classpath.txt" ]] || die "Maven wrote no classpath; see ${build}/mvn.log"
  log_msg "compiling SpillwayEsNode"
  "${javac}" --release 17 -nowarn -d "${build}/classes" -cp "$(cat "${build}/classpath.txt")" \
    "${src}/SpillwayEsNode.java" >"${build}/javac.log" 2>&1 \
    || { cat "${build}/javac.log" >&2; die "javac failed for ${src}/SpillwayEsNode.java"; }
  build_key >"${build}/stamp"
  log_msg "built in ${build}"
}

node_pid() {
  [[ -f "${pidfile}" ]] || return 1
  local pid
  pid="$(tr -d '[:space:]' <"${pidfile}")"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
  # Not a recycled pid: our launcher class with our home directory on its command line.
  local cmdline
  cmdline="$(proc_cmdline "${pid}")" || return 1
  grep -qxF -- "${main_class}" <<<"${cmdline}" || return 1
  grep -qxF -- "path.home=${home}" <<<"${cmdline}" || return 1
  echo "${pid}"
}

http_code() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${url}$1" 2>/dev/null || true
}

# GET / answers 200 and the cluster is at least yellow.
node_ready() {
  [[ "$(http_code /)" == 200 ]] || return 1
  [[ "$(http_code '/_cluster/health?wait_for_status=yellow&timeout=2s')" == 200 ]]
}


wait_ready() {
  local pid="$1" deadline=$((SECONDS + start_timeout))
  until node_ready; do
    if ! kill -0 "${pid}" 2>/dev/null; then
      tail -n 40 "${logfile}" >&2 || true
      rm -f "${pidfile}"
      die "the node (pid ${pid}) exited during start-up; log in ${logfile}"
    fi
    if (( SECONDS >= deadline )); then
      tail -n 40 "${logfile}" >&2 || true
      die "Elasticsearch at ${url} was not up (GET / 200, health yellow) within ${start_timeout}s; pid ${pid} left running for inspection, log in ${logfile}; run '$0 stop'"
    fi
    sleep 0.5
  done
}

cmd_start() {
  local pid
  if pid="$(node_pid)"; then
    if node_ready; then
      log_msg "already running (pid ${pid}) at ${url}"
      return 0
    fi
    log_msg "pid ${pid} is running but does not answer yet; waiting"
    wait_ready "${pid}"
    log_msg "ready at ${url} (pid ${pid})"
    return 0
  fi
  command -v curl >/dev/null 2>&1 || die "curl is needed to check the node (apt-get install curl)"
  cmd_build
  for p in "${http_port}" "${transport_port}"; do
    if port_busy "${p}"; then
      die "port ${p} on 127.0.0.1 is in use; set SPILLWAY_ELASTICSEARCH_HTTP_PORT / SPILLWAY_ELASTICSEARCH_TRANSPORT_PORT to free ports"
    fi
  done
  local java
  java="$(java_bin java)"
  command -v "${java}" >/dev/null 2>&1 || die "java not found (need Java 17+)"

  # Every start is a fresh, empty cluster.
  rm -rf "${data}" "${logs}" "${tmpdir}" "${home}"
  mkdir -p "${data}" "${logs}" "${tmpdir}" "${home}/config"
  cp "${src}/log4j2.properties" "${home}/config/log4j2.properties"
  rm -f "${pidfile}"

  log_msg "starting Elasticsearch (HTTP ${url}, transport 127.0.0.1:${transport_port}), log in ${logfile}"
  # Detached (spawn_detached): the node does not get the caller's terminal signals (Ctrl-C in
  # a test run). log4j.shutdownHookEnabled=false: log4j stays up while the node's shutdown
  # hook closes it.
  pid="$(spawn_detached "${pidfile}" "${logfile}" "${java}" \
    "-Xms${heap}" "-Xmx${heap}" -XX:+UseG1GC -Xss1m \
    -XX:+ExitOnOutOfMemoryError \
    -Djava.io.tmpdir="${tmpdir}" -Djava.awt.headless=true -Dfile.encoding=UTF-8 \
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true \
    -Des.networkaddress.cache.ttl=60 -Des.networkaddress.cache.negative.ttl=10 \
    -cp "${build}/classes:$(cat "${build}/classpath.txt")" \
    "${main_class}" \
    "path.home=${home}" "path.data=${data}" "path.logs=${logs}" \
    "http.port=${http_port}" "transport.port=${transport_port}")"
  local started=${SECONDS}
  wait_ready "${pid}"
  log_msg "ready at ${url} (pid ${pid}, $((SECONDS - started))s)"
}

cmd_stop() {
  local pid
  if pid="$(node_pid)"; then
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 300); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      log_msg "node did not stop within 30s; killing pid ${pid}"
      kill -9 "${pid}" 2>/dev/null || true
    fi
    log_msg "stopped (pid ${pid})"
  else
    log_msg "not running"
  fi
  rm -f "${pidfile}"
}

cmd_status() {
  local pid
  if pid="$(node_pid)" && node_ready; then
    echo "running (pid ${pid}) at ${url}"
  else
    echo "not running"
    return 1
  fi
}

cmd_env() {
  echo "export SPILLWAY_ELASTICSEARCH_URL=${url}"
}

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 build|start|stop|restart|status|env" >&2; exit 2 ;;
esac
