# Loopback ports for bench/run.sh's servers, by the rules the tests follow (written out in
# support/src/ports.rs): a port outside the kernel's ephemeral range (from 20000 up to the
# range's start, or above its end when that leaves more room), locked with flock(1) on
# ${TMPDIR:-/tmp}/brewlytics-ports/PORT.lock for as long as this shell (and the servers it
# starts, which inherit the lock) runs, and free to bind now. So no outgoing connection, test
# server or other bench takes it. Sourced by bench/run.sh; needs flock (util-linux) and python3.

# The candidate range, "LO HI".
port_candidates() {
  local lo=32768 hi=60999 below above
  read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  below=$((lo - 20000)) above=$((65535 - hi))
  if [ "$below" -ge "$above" ] && [ "$below" -ge 1000 ]; then
    echo "20000 $((lo - 1))"
  elif [ "$above" -ge 1000 ]; then
    echo "$((hi + 1)) 65535"
  else
    echo "1024 65535"
  fi
}

# True when nothing listens on 127.0.0.1:PORT (bound the way servers bind, SO_REUSEADDR).
port_bindable() {
  python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# lease_port VAR: a free port in VAR, locked until this shell and its children have exited.
lease_port() {
  local dir=${TMPDIR:-/tmp}/brewlytics-ports lo hi span start i port fd
  read -r lo hi <<<"$(port_candidates)"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir" && chmod 1777 "$dir"
  fi
  span=$((hi - lo + 1))
  start=$(((RANDOM * 32768 + RANDOM) % span))
  for ((i = 0; i < span; i++)); do
    port=$((lo + (start + i) % span))
    # Another user's lock file opens for reading only; flock works on that too.
    if [ -e "$dir/$port.lock" ] && [ ! -w "$dir/$port.lock" ]; then
      exec {fd}<"$dir/$port.lock" || continue
    else
      exec {fd}<>"$dir/$port.lock" || continue
    fi
    if flock -n "$fd" && port_bindable "$port"; then
      printf -v "$1" %s "$port"
      return 0
    fi
    exec {fd}>&-
  done
  echo "no free loopback port in $lo-$hi (each locked in $dir or in use)" >&2
  return 1
}
