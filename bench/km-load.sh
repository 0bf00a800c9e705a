#!/usr/bin/env bash
# Bounded load test of the reference key manager: N simulated agents (own
# client certificate and connection each) poll one `keymgr serve` for their
# configuration with If-None-Match, then a key rotation shows how long the
# change takes to reach every agent. Not run in CI; nothing asserts a time.
#
#   bench/km-load.sh                          # 1000 agents, 30 s
#   bench/km-load.sh --agents 200 --duration 20
#   bench/km-load.sh --agents 1000 -- --threads 32 --interval-ms 500
#
# Builds keymgr and km_load in release mode, inits a data directory in a
# temporary directory, starts the server on a free loopback port, runs
# km_load (arguments after `--` go to it; see `km_load --help`), stops the
# server and removes the directory. --keep keeps it (server log included);
# --keymgr PATH uses that server binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

agents=1000
duration=30
keep=0
keymgr=""
extra=()
while (($#)); do
  case $1 in
    --agents) agents=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --keymgr) keymgr=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra+=("$@"); break ;;
    *) echo "km-load.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Every agent holds a connection: one descriptor in km_load and one in the
# server per agent, plus sockets being set up. Raise the soft limit (and, as
# root, the hard one) if needed.
need=$((agents * 2 + 1024))
if (($(ulimit -Sn) < need)); then
  if (($(ulimit -Hn) < need)); then
    ulimit -Hn "$need" 2>/dev/null ||
      echo "km-load.sh: warning: hard fd limit $(ulimit -Hn) < $need; agents may fail to connect" >&2
  fi
  ulimit -Sn "$(( $(ulimit -Hn) < need ? $(ulimit -Hn) : need ))"
fi

cargo build --release --locked -p guardfs-bench --bin km_load >&2
bin=$PWD/target/release
if [[ -z $keymgr ]]; then
  cargo build --release --locked -p guardfs-keymgr --bin keymgr >&2
  keymgr=$bin/keymgr
fi

tmp=$(mktemp -d /tmp/km-load.XXXXXX)
server=""
cleanup() {
  if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  if ((keep)); then
    echo "km-load.sh: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT

password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
"$keymgr" init --data-dir "$tmp/data" --admin-password "$password" --san 127.0.0.1 >"$tmp/init.log" 2>&1 ||
  { cat "$tmp/init.log" >&2; exit 1; }

# Port 0: the kernel picks a free port, the server logs it; no race.
RUST_LOG=${RUST_LOG:-info} "$keymgr" --data-dir "$tmp/data" serve --listen 127.0.0.1:0 \
  </dev/null >/dev/null 2>"$tmp/server.log" &
server=$!
port=""
for _ in $(seq 300); do
  port=$(sed -n 's#.*listening on https://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$tmp/server.log" | head -n1)
  [[ -n $port ]] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $port ]]; then
  echo "km-load.sh: keymgr did not start:" >&2
  cat "$tmp/server.log" >&2
  exit 1
fi

ticks=$(getconf CLK_TCK)
cpu_of() { awk -v t="$ticks" '{printf "%.1f", ($14 + $15) / t}' "/proc/$1/stat"; }

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, keymgr pid $server on 127.0.0.1:$port, fd limit $(ulimit -n)"
echo "# km_load --agents $agents --duration $duration ${extra[*]}"
timer=()
[[ -x /usr/bin/time ]] && timer=(/usr/bin/time -f "km_load: %e s wall, %U s user, %S s system, max RSS %M KiB")
status=0
"${timer[@]}" env KEYMGR_PASSWORD="$password" "$bin/km_load" --url "https://127.0.0.1:$port" \
  --ca "$tmp/data/ca.pem" --agents "$agents" --duration "$duration" "${extra[@]}" || status=$?
echo "keymgr: $(cpu_of "$server") s CPU (user+system, setup included), max RSS $(awk '/VmHWM/ {print $2, $3}' "/proc/$server/status")"
dropped=$(grep -c 'too many connections' "$tmp/server.log" || true)
failed=$(grep -c 'TLS handshake .* failed\|timed out' "$tmp/server.log" || true)
echo "keymgr log: $dropped connections dropped (too many connections), $failed TLS handshakes failed or timed out"
exit "$status"
