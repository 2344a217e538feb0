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
