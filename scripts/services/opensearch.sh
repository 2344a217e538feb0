#!/usr/bin/env bash
# Runs a real OpenSearch node for spillway's tests: the server and its modules come from Maven
# Central as jars, and one JVM runs them as a single-node cluster bound to 127.0.0.1 only.
#
#   scripts/services/opensearch.sh start  [VERSION]  # build if needed, start a FRESH node, wait
#                                                    # until HTTP answers and health is yellow+
#   scripts/services/opensearch.sh stop   [VERSION]  # SIGTERM, then SIGKILL after 40s; idempotent
#   scripts/services/opensearch.sh status [VERSION]  # exit 0 when the node is up and answers
#   scripts/services/opensearch.sh env    [VERSION]  # print the export line for the tests (only)
#   scripts/services/opensearch.sh build  [VERSION]  # resolve jars and compile the launcher only
#
# VERSION is 2 (OpenSearch 2.19.6, on Java 17) or 3 (OpenSearch 3.9.0, on JDK 25); default 2.
# The two can run at the same time:
#   2: HTTP http://127.0.0.1:9219, transport 127.0.0.1:9319, state in <repo>/.work/opensearch-2.19.6/
#   3: HTTP http://127.0.0.1:9239, transport 127.0.0.1:9339, state in <repo>/.work/opensearch-3.9.0/
# (ports can be moved with SPILLWAY_OPENSEARCH{2,3}_HTTP_PORT / _TRANSPORT_PORT).
#
# `start` ALWAYS WIPES THE DATA DIRECTORY and gives a fresh, empty node: a node still running is
# stopped first. SPILLWAY_OPENSEARCH_KEEP_DATA=1 keeps the data, and keeps a running node as it is.
#
# Extra node settings: SPILLWAY_OPENSEARCH_SETTINGS (both versions) and
# SPILLWAY_OPENSEARCH2_SETTINGS / SPILLWAY_OPENSEARCH3_SETTINGS (one version), each a
# whitespace-separated list of KEY=VALUE, read by `start`; they override the defaults, e.g.
#   SPILLWAY_OPENSEARCH_SETTINGS="indices.id_field_data.enabled=false" scripts/services/opensearch.sh start 2
# (indices.id_field_data.enabled is also a dynamic cluster setting on 2.19 and 3.x, so a
# `PUT _cluster/settings {"persistent":{"indices.id_field_data.enabled":false}}` does the same
# on a running node.)
#
# How it runs: scripts/services/opensearch/pom.xml lists the jars (server, transport-netty4,
# lang-painless, analysis-common, mapper-extras, reindex, parent-join, log4j-core); `build` asks
# Maven for their classpath (into ~/.m2) and compiles SpillwayTestNode.java, which starts an
# org.opensearch.node.Node with those modules as classpath plugins, as OpenSearch's own
# integration tests do (no bootstrap checks, no security manager). A stamp file keyed on the
# pom, the launcher sources, the version and the JDK makes a second `build`/`start` skip Maven
# and javac. Node output (log4j, quiet: info and up) goes to <state>/node.log.
# Other knobs: SPILLWAY_OPENSEARCH_HEAP (512m), SPILLWAY_OPENSEARCH_START_TIMEOUT (180 s),
# SPILLWAY_OPENSEARCH2_JAVA_HOME / SPILLWAY_OPENSEARCH3_JAVA_HOME (the JDK to run each with).
set -euo pipefail
# shellcheck source=scripts/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="${repo_root}/.work"
src="${repo_root}/scripts/services/opensearch"

log_msg() { echo "[opensearch${line:-}] $*" >&2; }
die() { echo "[opensearch${line:-}] ERROR: $*" >&2; exit 1; }

# Selects the version: sets line, version, log4j_version, java_home, ports, plugins, state paths.
select_version() {
  case "${1:-2}" in
    2 | 2.19.6)
      line=2
      version=2.19.6
      log4j_version=2.25.4
      java_home="${SPILLWAY_OPENSEARCH2_JAVA_HOME:-}"
      http_port="${SPILLWAY_OPENSEARCH2_HTTP_PORT:-9219}"
      transport_port="${SPILLWAY_OPENSEARCH2_TRANSPORT_PORT:-9319}"
      min_java=17
      plugins="org.opensearch.transport.Netty4Plugin,org.opensearch.painless.PainlessPlugin,org.opensearch.analysis.common.CommonAnalysisPlugin,org.opensearch.index.mapper.MapperExtrasPlugin,org.opensearch.index.reindex.ReindexPlugin,org.opensearch.join.ParentJoinPlugin"
      extra_settings="${SPILLWAY_OPENSEARCH2_SETTINGS:-}"
      ;;
    3 | 3.9.0)
      line=3
      version=3.9.0
      log4j_version=2.25.5
      java_home="${SPILLWAY_OPENSEARCH3_JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
      http_port="${SPILLWAY_OPENSEARCH3_HTTP_PORT:-9239}"
      transport_port="${SPILLWAY_OPENSEARCH3_TRANSPORT_PORT:-9339}"
      min_java=21
      plugins="org.opensearch.transport.Netty4ModulePlugin,org.opensearch.painless.PainlessModulePlugin,org.opensearch.analysis.common.CommonAnalysisModulePlugin,org.opensearch.index.mapper.MapperExtrasModulePlugin,org.opensearch.index.reindex.ReindexModulePlugin,org.opensearch.join.ParentJoinModulePlugin"
      extra_settings="${SPILLWAY_OPENSEARCH3_SETTINGS:-}"
      ;;
    *) die "unknown version '$1': use 2 (OpenSearch 2.19.6) or 3 (OpenSearch 3.9.0)" ;;
  esac
  state="${work}/opensearch-${version}"
  classes="${state}/classes"
  classpath_file="${state}/classpath.txt"
  stamp="${state}/build.stamp"
  home="${state}/home"
  data="${state}/data"
  pidfile="${state}/node.pid"
  logfile="${state}/node.log"
  url="http://127.0.0.1:${http_port}"
  if [[ -n "${java_home}" ]]; then
    java="${java_home}/bin/java"
    javac="${java_home}/bin/javac"
  else
    java="$(command -v java || true)"
    javac="$(command -v javac || true)"
  fi
}

check_java() {
  [[ -n "${java}" && -x "${java}" ]] \
    || die "no java for OpenSearch ${version} (looked for ${java:-java on PATH}); install a JDK ${min_java}+ or set SPILLWAY_OPENSEARCH${line}_JAVA_HOME"
  [[ -n "${javac}" && -x "${javac}" ]] \
    || die "no javac next to ${java}; install a full JDK ${min_java}+ (not a JRE) or set SPILLWAY_OPENSEARCH${line}_JAVA_HOME"
  local feature
  feature="$("${java}" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  [[ "${feature}" =~ ^[0-9]+$ ]] || die "could not read the Java version of ${java}"
  (( feature >= min_java )) \
    || die "OpenSearch ${version} needs Java ${min_java}+, but ${java} is Java ${feature}; set SPILLWAY_OPENSEARCH${line}_JAVA_HOME"
  java_feature="${feature}"
}

build_key() {
  {
    echo "version=${version} log4j=${log4j_version} java=${java} feature=${java_feature}"
    cat "${src}/pom.xml" "${src}/SpillwayTestNode.java" "${src}/node${line}/SpillwayNode.java"
  } | sha256sum | cut -d' ' -f1
}

# True when the last build is still good: same inputs, classes there, every jar still in ~/.m2.
build_current() {
  [[ -f "${stamp}" && -f "${classpath_file}" && -f "${classes}/SpillwayTestNode.class" ]] || return 1
  [[ "$(cat "${stamp}")" == "$(build_key)" ]] || return 1
  local jar
  while IFS= read -r jar; do
    [[ -f "${jar}" ]] || return 1
  done < <(tr ':' '\n' <"${classpath_file}")
}

cmd_build() {
  check_java
  mkdir -p "${state}"
  # `start 2` and `start 3` may build at once; one build per version at a time.
  exec 8>"${state}/build.lock"
  flock -w 600 8 || die "timed out waiting for ${state}/build.lock (another build is running?)"
  if build_current; then
    exec 8>&-  # unlock; the node must not inherit the lock file
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn is not installed; apt-get install maven (Maven 3.6.3+)"
  log_msg "resolving OpenSearch ${version} jars with Maven (from a cold ~/.m2 this downloads 75-95 MB, ~25 s)"
  local t0=${SECONDS} mvn_log="${state}/mvn.log"
  rm -f "${stamp}" "${classpath_file}.tmp"
  if ! mvn -B -q -f "${src}/pom.xml" \
      -Dopensearch.version="${version}" -Dlog4j.version="${log4j_version}" \
      dependency:build-classpath -Dmdep.outputFile="${classpath_file}.tmp" >"${mvn_log}" 2>&1; then
    tail -n 40 "${mvn_log}" >&2
    die "Maven could not resolve the OpenSearch ${version} jars (full log: ${mvn_log}); is Maven Central reachable?"
  fi
  mv "${classpath_file}.tmp" "${classpath_file}"
  log_msg "compiling the launcher with ${javac}"
  rm -rf "${classes}"
  mkdir -p "${classes}"
  "${javac}" -nowarn -d "${classes}" -cp "$(cat "${classpath_file}")" \
      "${src}/SpillwayTestNode.java" "${src}/node${line}/SpillwayNode.java" >"${state}/javac.log" 2>&1 \
    || { cat "${state}/javac.log" >&2; die "javac failed for the OpenSearch ${version} launcher"; }
  build_key >"${stamp}"
  exec 8>&-  # unlock; the node must not inherit the lock file
  log_msg "built in $((SECONDS - t0))s (classpath in ${classpath_file})"
}

node_pid() {
  [[ -f "${pidfile}" ]] || return 1
  local pid
  pid="$(tr -d '[:space:]' <"${pidfile}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null || return 1
  # Make sure the pid is still our JVM and not a recycled pid.
  local cmdline
  cmdline="$(proc_cmdline "${pid}")" || return 1
  grep -qxF -- "-Dspillway.setting.path.home=${home}" <<<"${cmdline}" || return 1
  echo "${pid}"
}

http_code() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${url}$1" 2>/dev/null || true
}


write_config() {
  mkdir -p "${home}/config" "${home}/plugins" "${home}/modules" "${state}/tmp"
  # Read by LogConfigurator.configure as in the distribution; everything goes to stdout,
  # which `start` sends to node.log. Quiet: info and up, no deprecation notices.
  cat >"${home}/config/log4j2.properties" <<'LOG4J'
status = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_OUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.deprecation.name = org.opensearch.deprecation
logger.deprecation.level = warn
LOG4J
  : >"${home}/config/opensearch.yml"
}

# Fills the array `settings` with the node settings, as -Dspillway.setting.KEY=VALUE.
build_settings() {
  settings=(
    "-Dspillway.setting.path.home=${home}"
    "-Dspillway.setting.path.data=${data}"
    "-Dspillway.setting.cluster.name=spillway-test-${line}"
    "-Dspillway.setting.node.name=spillway-opensearch-${line}"
    "-Dspillway.setting.http.port=${http_port}"
    "-Dspillway.setting.transport.port=${transport_port}"
  )
  local -a extra
  local kv
  read -r -a extra <<<"${SPILLWAY_OPENSEARCH_SETTINGS:-} ${extra_settings}"
  for kv in "${extra[@]}"; do
    [[ "${kv}" =~ ^[A-Za-z0-9_.-]+=.*$ ]] \
      || die "bad entry '${kv}' in SPILLWAY_OPENSEARCH_SETTINGS / SPILLWAY_OPENSEARCH${line}_SETTINGS: use KEY=VALUE, separated by spaces"
    settings+=("-Dspillway.setting.${kv}")
  done
}

wait_ready() {
  local pid="$1" timeout="${SPILLWAY_OPENSEARCH_START_TIMEOUT:-180}" t0="$2"
  local deadline=$((t0 + timeout)) health=""
  while :; do
    kill -0 "${pid}" 2>/dev/null || {
      tail -n 40 "${logfile}" >&2 || true
      die "the OpenSearch ${version} JVM (pid ${pid}) exited during start-up; log: ${logfile}"
    }
    if [[ "$(http_code /)" == 200 ]]; then
      health="$(curl -s --max-time 10 "${url}/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null || true)"
      [[ "${health}" =~ \"status\":\"(yellow|green)\" ]] && return 0
    fi
    if (( SECONDS >= deadline )); then
      tail -n 40 "${logfile}" >&2 || true
      die "OpenSearch ${version} at ${url} was not ready (HTTP 200 and health yellow/green) within ${timeout}s; log: ${logfile}; last health: ${health:-none}"
    fi
    sleep 0.5
  done
}

cmd_start() {
  command -v curl >/dev/null 2>&1 || die "curl is not installed; apt-get install curl"
  local pid
  if pid="$(node_pid)"; then
    if [[ "${SPILLWAY_OPENSEARCH_KEEP_DATA:-0}" == 1 && "$(http_code /)" == 200 ]]; then
      log_msg "already running (pid ${pid}) at ${url}; kept (SPILLWAY_OPENSEARCH_KEEP_DATA=1)"
      return 0
    fi
    log_msg "a node is running (pid ${pid}); stopping it for a fresh start"
    cmd_stop
  fi
  cmd_build
  local p
  for p in "${http_port}" "${transport_port}"; do
    if port_busy "${p}"; then
      die "port ${p} on 127.0.0.1 is in use; stop what holds it or set SPILLWAY_OPENSEARCH${line}_HTTP_PORT / SPILLWAY_OPENSEARCH${line}_TRANSPORT_PORT"
    fi
  done
  if [[ "${SPILLWAY_OPENSEARCH_KEEP_DATA:-0}" != 1 ]]; then
    rm -rf "${data}"
  fi
  rm -rf "${state}/tmp"
  mkdir -p "${data}"
  write_config
  local heap="${SPILLWAY_OPENSEARCH_HEAP:-512m}"
  local -a settings jvm
  build_settings
  jvm=(
    "-Xms${heap}" "-Xmx${heap}" -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow
    -Dfile.encoding=UTF-8 "-Djava.io.tmpdir=${state}/tmp"
    -Djna.nosys=true -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true
    -Dio.netty.recycler.maxCapacityPerThread=0
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true
  )
  # The 2.x distribution asks for COMPAT locale data on JDK 9+; JDK 23+ has none left, and
  # 3.x uses CLDR. (2.19 also runs on JDK 25: SPILLWAY_OPENSEARCH2_JAVA_HOME.)
  if [[ "${line}" == 2 ]] && (( java_feature < 23 )); then
    jvm+=(-Djava.locale.providers=SPI,COMPAT)
  else
    jvm+=(-Djava.locale.providers=SPI,CLDR)
  fi
  if (( java_feature >= 22 )); then
    jvm+=(--enable-native-access=ALL-UNNAMED)
  fi
  rm -f "${pidfile}"
  log_msg "starting OpenSearch ${version} (HTTP ${url}, transport 127.0.0.1:${transport_port}), log ${logfile}"
  local t0=${SECONDS}
  pid="$(spawn_detached "${pidfile}" "${logfile}" "${java}" "${jvm[@]}" "${settings[@]}" \
    "-Dspillway.plugins=${plugins}" -cp "${classes}:$(cat "${classpath_file}")" SpillwayTestNode)"
  wait_ready "${pid}" "${t0}"
  log_msg "ready at ${url} (pid ${pid}) after $((SECONDS - t0))s"
}

cmd_stop() {
  local pid
  if pid="$(node_pid)"; then
    kill -TERM "${pid}" 2>/dev/null || true
    local i
    for i in $(seq 1 400); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      log_msg "node did not stop within 40s; killing pid ${pid}"
      kill -KILL "${pid}" 2>/dev/null || true
      for i in $(seq 1 50); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.1
      done
    fi
    log_msg "stopped (pid ${pid})"
  else
    log_msg "not running"
  fi
  rm -f "${pidfile}"
}

cmd_status() {
  local pid
  if pid="$(node_pid)" && [[ "$(http_code /)" == 200 ]]; then
    echo "running (pid ${pid}) at ${url}, OpenSearch ${version}"
  else
    echo "not running (OpenSearch ${version}, ${url})"
    return 1
  fi
}

cmd_env() {
  echo "export SPILLWAY_OPENSEARCH${line}_URL=${url}"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
[[ $# -le 1 ]] || die "usage: $0 start|stop|status|env|build [2|3]"
case "${cmd}" in
  start | stop | status | env | build) select_version "${1:-2}" ;;
  *) echo "usage: $0 start|stop|status|env|build [2|3]   (2 = OpenSearch 2.19.6, 3 = OpenSearch 3.9.0)" >&2; exit 2 ;;
esac
case "${cmd}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  build) cmd_build ;;
esac
