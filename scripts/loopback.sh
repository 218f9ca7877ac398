# Sourced by scripts/bench.sh and scripts/soak.sh: helpers for servers started on loopback.

# A TCP port free on 127.0.0.1 right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits up to 10 s for http://127.0.0.1:$1/healthz to answer; otherwise prints the log file $2
# and fails.
wait_healthy() {
  local port=$1 log=$2
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server on port $port did not start:" >&2
  cat "$log" >&2
  return 1
}
