# Helpers shared by the service scripts in this folder; source it, do not run it.

# port_busy PORT: exit 0 when 127.0.0.1:PORT cannot be bound. The probe binds as the servers
# do (SO_REUSEADDR): connections of a server just stopped (TIME_WAIT) do not block the port,
# a listener does.
port_busy() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
finally:
    s.close()
sys.exit(1)
PY
}

# proc_cmdline PID: the process's arguments, one a line; fails when it is gone. Scripts match
# on the result held in a variable: `tr | grep -q` under pipefail fails now and then (grep
# exits early, tr dies of SIGPIPE), which made a running server look stopped.
proc_cmdline() {
  local out
  out="$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
  printf '%s\n' "${out}"
}

# Starts PROGRAM detached, in a session of its own (it outlives the calling shell and gets none
# of its terminal's signals), with stdout and stderr to LOGFILE, and prints its pid, which it
# also writes to PIDFILE. `setsid` forks when the caller leads its process group (a shell with
# job control, `( … &)`), so `$!` would name an exited setsid: the program's shell writes its
# own pid and then execs the program.
# Usage: spawn_detached PIDFILE LOGFILE PROGRAM [ARGS...]
spawn_detached() {
  local pidfile="$1" logfile="$2"
  shift 2
  rm -f "${pidfile}"
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "${pidfile}" "$@" \
    >"${logfile}" 2>&1 </dev/null &
  local i
  for i in $(seq 1 200); do
    if [[ -s "${pidfile}" ]]; then
      cat "${pidfile}"
      return 0
    fi
    sleep 0.05
  done
  echo "error: $1 did not start within 10 s (log: ${logfile})" >&2
  return 1
}
