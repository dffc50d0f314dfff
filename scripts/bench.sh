#!/usr/bin/env bash
# The standard comparison (docs/benchmarks.md): the generator's own ceiling, the AF_XDP
# receive-and-drop ceiling of the recorder's interface, then the same calls and load through
# linecord (xdp backend, udp backend) and rtpengine (userspace forwarding), every relay
# recording; in interleaved rounds (A B C, A B C, ...), so the ratios between targets are
# taken within a round and their spread over rounds is reported. Before the rounds, the
# per-packet budget bench (criterion) when the recorder has it. Results go to
# results/<date>-<host>/: round-N/<target>.json per round, run.json (every round, the
# summary, the budget), summary.md, plot.svg. Runs in the network-namespace topology of
# netns.sh (own prefix) and removes it, and everything it started, on exit, also on failure.
# About 3 minutes per round on 2 cores.
#
# Usage: scripts/bench.sh [--rounds N] [--quick]
#   --rounds N  rounds (default 3, or ROUNDS)
#   --quick     shorter trials and searches (1 s trials, 3 s realistic load, 5 search
#               trials, a short criterion run): for a look, not for the record
#
# Environment: CALLS (default 500), TRIAL_SECONDS (2), STANDARD_SECONDS (5), MAX_TRIALS (8),
# QUEUES (1: one queue, one worker on the relay's one core),
# RELAY_CPU / GEN_CPU (cores for the relay and the generator: 1 and 0), TARGETS (default
# "generator af_xdp-drop linecord-xdp linecord-udp rtpengine"), RESULTS (output folder),
# BUDGET (1: run the per-packet budget bench first; 0: only read earlier estimates).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CMDLINE="scripts/bench.sh $*"

ROUNDS="${ROUNDS:-3}"
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="${2:?--rounds needs a number}"; shift 2 ;;
    --rounds=*) ROUNDS="${1#--rounds=}"; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ROUNDS" in
  ''|*[!0-9]*|0) echo "bench.sh: --rounds must be a positive number, not '$ROUNDS'" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "bench.sh needs root (network namespaces, XDP)" >&2
  exit 2
fi

CALLS="${CALLS:-500}"
if [ "$QUICK" = 1 ]; then
  TRIAL_SECONDS="${TRIAL_SECONDS:-1}"
  STANDARD_SECONDS="${STANDARD_SECONDS:-3}"
  MAX_TRIALS="${MAX_TRIALS:-5}"
  CRITERION_ARGS=(--warm-up-time 1 --measurement-time 2)
else
  TRIAL_SECONDS="${TRIAL_SECONDS:-2}"
  STANDARD_SECONDS="${STANDARD_SECONDS:-5}"
  MAX_TRIALS="${MAX_TRIALS:-8}"
  CRITERION_ARGS=()
fi
BUDGET="${BUDGET:-1}"
QUEUES="${QUEUES:-1}"
RELAY_CPU="${RELAY_CPU:-1}"
GEN_CPU="${GEN_CPU:-0}"
TARGETS="${TARGETS:-generator af_xdp-drop linecord-xdp linecord-udp rtpengine}"
export LC_NETNS_PREFIX="${LC_NETNS_PREFIX:-lcb}"
P="$LC_NETNS_PREFIX"
RESULTS="${RESULTS:-$ROOT/results/$(date -u +%Y%m%dT%H%M%SZ)-$(hostname -s)}"
WORK="$(mktemp -d /tmp/linecord-bench.XXXXXX)"
NG_PORT=22231
A_IP=198.18.0.10 B_IP=198.18.0.20 REC_IP=198.18.0.1

RELAY_PID=""
# Stops the relay and waits until it is gone (its sockets closed), so the next target can
# bind the same NG port: 30 s for a clean exit (a recorder finishes its open recordings),
# then SIGKILL and the wait for the kernel to reap it (a process in an fsync dies after it).
stop_relay() {
  if [ -n "$RELAY_PID" ]; then
    kill "$RELAY_PID" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$RELAY_PID" 2>/dev/null; then
      echo "the relay did not stop in 30 s: killing it" >&2
      kill -9 "$RELAY_PID" 2>/dev/null || true
    fi
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=""
  fi
}
cleanup() {
  stop_relay
  bash scripts/netns.sh down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== set-up"
bash scripts/setup.sh
if ! command -v rtpengine >/dev/null 2>&1; then
  echo "installing rtpengine-daemon (the baseline relay)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rtpengine-daemon >/dev/null ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rtpengine-daemon >/dev/null; }
fi
cargo build --release --locked -p recorder -p bench 2>&1 | tail -n 1
BENCH="$ROOT/target/release/bench"
RECORDER="$ROOT/target/release/recorder"
mkdir -p "$RESULTS"
echo "results: $RESULTS"

# The per-packet budget first, while nothing else of this run is on the cores. The report
# reads target/criterion/packet_budget/**/new/estimates.json; without them it says
# "not measured".
if [ "$BUDGET" = 1 ] && [ -f recorder/benches/packet_budget.rs ]; then
  echo "== per-packet budget (cargo bench -p recorder --bench packet_budget)"
  cargo bench --locked -p recorder --bench packet_budget -- "${CRITERION_ARGS[@]}" \
    >"$RESULTS/packet_budget.log" 2>&1 ||
    { echo "the per-packet budget bench failed:" >&2; tail -n 20 "$RESULTS/packet_budget.log" >&2; exit 1; }
  grep -E '^packet_budget/|time:' "$RESULTS/packet_budget.log" | head -n 40 || true
elif [ "$BUDGET" = 1 ]; then
  echo "== per-packet budget: recorder/benches/packet_budget.rs not in this tree: not measured"
fi

bash scripts/netns.sh up "$QUEUES"

COMMON=(--calls "$CALLS" --cpus "$GEN_CPU" --a-netns "$P-a" --a-ip "$A_IP" --b-netns "$P-b" --b-ip "$B_IP"
  --standard-seconds "$STANDARD_SECONDS" --trial-seconds "$TRIAL_SECONDS" --max-trials "$MAX_TRIALS")
MAX_RATE=1000000
# Set per target by the rounds loop: where this round's JSON goes and the progress options
# (round, the targets still to come, the results so far for their measured times).
OUT="$RESULTS"
PROGRESS=()

# Starts a relay in the recorder's namespace on RELAY_CPU; sets RELAY_PID.
start_relay() {
  local log="$1"; shift
  ip netns exec "$P-rec" taskset -c "$RELAY_CPU" "$@" >"$log" 2>&1 &
  RELAY_PID=$!
  sleep 1.5
  if ! kill -0 "$RELAY_PID" 2>/dev/null; then
    echo "the relay did not start:" >&2; cat "$log" >&2; RELAY_PID=""; return 1
  fi
}

run_linecord() {
  local name="$1" backend="$2"
  local dir="$WORK/$name"
  mkdir -p "$dir"
  echo "== $name"
  start_relay "$dir/log" "$RECORDER" --interface "$REC_IP" --listen-ng "127.0.0.1:$NG_PORT" \
    --port-min 30000 --port-max 39999 --backend "$backend" --interface-name rec0 \
    --recording-dir "$dir/recordings" --spool-dir "$dir/spool" --log-level warn
  "$BENCH" relay --name "$name" --out "$OUT/$name.json" "${COMMON[@]}" "${PROGRESS[@]}" --max-rate "$MAX_RATE" \
    --description "linecord recorder $("$RECORDER" --version | cut -d' ' -f2), --backend $backend, $QUEUES queues, pinned to core $RELAY_CPU, recording on" \
    --ng "127.0.0.1:$NG_PORT" --ng-netns "$P-rec" --relay-ip "$REC_IP" --relay-pid "$RELAY_PID" \
    --record --recorded "spool:$dir/spool"
  stop_relay
}

run_rtpengine() {
  local dir="$WORK/rtpengine"
  mkdir -p "$dir/rec"
  echo "== rtpengine"
  # --table=-1: no kernel forwarding (userspace relay, as the comparison intends).
  # --log-level=2: at 3 and above it logs every packet it discards when overloaded, which
  # keeps it overloaded long after the load is gone (seen here: 94 % loss at 50 kpps).
  start_relay "$dir/log" rtpengine --foreground --log-stderr --table=-1 --interface="$REC_IP" \
    --listen-ng="127.0.0.1:$NG_PORT" --port-min=30000 --port-max=39999 --num-threads=2 \
    --recording-dir="$dir/rec" --recording-method=pcap --delete-delay=0 --log-level=2
  "$BENCH" relay --name rtpengine --out "$OUT/rtpengine.json" "${COMMON[@]}" "${PROGRESS[@]}" --max-rate "$MAX_RATE" \
    --description "rtpengine $(rtpengine --version 2>&1 | awk '/Version/ {print $2}'), userspace (--table=-1), 2 threads, pinned to core $RELAY_CPU, recording (pcap) on" \
    --ng "127.0.0.1:$NG_PORT" --ng-netns "$P-rec" --relay-ip "$REC_IP" --relay-pid "$RELAY_PID" \
    --record --recorded "pcap:$dir/rec"
  stop_relay
}

run_sink() {
  echo "== af_xdp-drop"
  local stats="$WORK/sink.json"
  start_relay "$WORK/sink.log" "$RECORDER" xdp-sink --interface-name rec0 --address "$REC_IP" \
    --port-min 30000 --port-max 39999 --queues "$QUEUES" --seconds 120 --stats-file "$stats"
  "$BENCH" sink --name af_xdp-drop --out "$OUT/af_xdp-drop.json" "${COMMON[@]}" "${PROGRESS[@]}" \
    --description "recorder xdp-sink: the XDP program and AF_XDP sockets of the xdp backend, every frame dropped; $QUEUES queues on core $RELAY_CPU" \
    --sink-ip "$REC_IP" --sink-stats "$stats"
  stop_relay
}

read -r -a ALL <<<"$TARGETS"
for target in "${ALL[@]}"; do
  case "$target" in
    generator|af_xdp-drop|linecord-xdp|linecord-udp|rtpengine) ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
done
STARTED=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
  OUT="$RESULTS/round-$round"
  mkdir -p "$OUT"
  for i in "${!ALL[@]}"; do
    target="${ALL[$i]}"
    # What the run measures after this target: the rest of this round, then every later
    # round (the bench's time-left estimate).
    then=("${ALL[@]:$((i + 1))}")
    for _ in $(seq $((round + 1)) "$ROUNDS"); do then+=("${ALL[@]}"); done
    PROGRESS=(--round "$round/$ROUNDS" --history "$RESULTS")
    if [ ${#then[@]} -gt 0 ]; then PROGRESS+=(--then "$(IFS=,; echo "${then[*]}")"); fi
    echo "== round $round/$ROUNDS, target $target ($(( ($(date +%s) - STARTED) / 60 )) min into the run)"
    case "$target" in
      generator)
        "$BENCH" direct --name generator --out "$OUT/generator.json" "${COMMON[@]}" "${PROGRESS[@]}" --max-rate 4000000 \
          --description "bench generator: 1 sendmmsg/recvmmsg thread per party on core $GEN_CPU, no relay"
        # The relays' search goes up to what the generator itself carried in this round.
        MAX_RATE=$(python3 -c "import json;print(int(json.load(open('$OUT/generator.json'))['max_received_pps']))")
        ;;
      af_xdp-drop) run_sink ;;
      linecord-xdp) run_linecord linecord-xdp xdp ;;
      linecord-udp) run_linecord linecord-udp udp ;;
      rtpengine) run_rtpengine ;;
    esac
  done
done
echo "== $ROUNDS rounds in $(( ($(date +%s) - STARTED) / 60 )) min"

CPU_MODEL=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
"$BENCH" report "$RESULTS" --date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --criterion "$ROOT/target/criterion" --command "$CMDLINE" \
  --machine "$(nproc) cores ($CPU_MODEL), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)"
