#!/usr/bin/env bash
# MQTT soak (not part of `cargo test`): the bundled demo camera copied three times (Demo0..Demo2,
# the demo's prompts) publishes to a local mosquitto (persistence on) that is stopped and started
# again every 20 s for 5 minutes. A persistent QoS 1 subscriber (fixed client id, clean session
# off) records the events topic and a QoS 0 one the states. At the end the daemon gets SIGTERM,
# and the script checks that every event the daemon spooled (its debug log line `MQTT: spooled
# event <seq>: <type> <id>`) was delivered, in order per prompt; byte-identical redeliveries
# (MQTT's at-least-once after a reconnect) are counted, not failed. Prints the figures; exits 1
# when an event is missing, unknown or out of order.
#
#   scripts/soak-mqtt.sh [--duration SECONDS] [--period SECONDS] [--down SECONDS] [--keep]
#
# --duration (300): how long the daemon runs; --period (20): seconds between broker restarts;
# --down (2): how long the broker stays down at each restart; --keep: keep the work directory.
# Needs mosquitto, mosquitto_sub and python3; builds the debug binary (PROMPTCAM_BIN overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=300 PERIOD=20 DOWN=2 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --period) PERIOD=$2; shift 2 ;;
    --down) DOWN=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "unknown argument $1; see the header of $0" >&2; exit 2 ;;
  esac
done

if [ -z "${PROMPTCAM_BIN:-}" ]; then
  cargo build --quiet
  PROMPTCAM_BIN=target/debug/promptcam
fi
WORK=$(mktemp -d /tmp/promptcam-soak.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${BROKER:-}" ] && kill "$BROKER" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "work directory: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $WORK/
max_queued_messages 0
user $(id -un)
log_dest file $WORK/mosquitto.log
EOF
start_broker() {
  /usr/sbin/mosquitto -c "$WORK/mosquitto.conf" 2>> "$WORK/mosquitto.err" &
  BROKER=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "mosquitto did not start on port $PORT" >&2
  exit 1
}
stop_broker() {
  kill -TERM "$BROKER"
  wait "$BROKER" 2>/dev/null || true
  BROKER=
}

# the three-camera config: config/demo.toml's camera three times, and [mqtt]
python3 - "$WORK" "$PORT" <<'EOF'
import sys
work, port = sys.argv[1], sys.argv[2]
demo = open("config/demo.toml").read()
demo = demo[: demo.index("\n# The pages on")] + "\n"  # its [http] listens on a fixed port
head, camera = demo.split("[[cameras]]", 1)
text = head + "".join(
    "[[cameras]]" + camera.replace('name = "Demo"', f'name = "Demo{i}"', 1) for i in range(3)
)
text += f'\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\nspool_dir = "{work}/spool"\n'
open(f"{work}/three.toml", "w").write(text)
EOF

start_broker
mosquitto_sub -p "$PORT" -q 1 -c -i soak-events -t promptcam/promptcam/events > "$WORK/events.txt" &
PIDS+=($!)
mosquitto_sub -p "$PORT" -q 0 -t 'promptcam/promptcam/+/+/state' -v > "$WORK/states.txt" &
PIDS+=($!)
sleep 1
RUST_LOG=info,promptcam::mqtt=debug "$PROMPTCAM_BIN" run --config "$WORK/three.toml" \
  > /dev/null 2> "$WORK/daemon.log" &
DAEMON=$!
PIDS+=($DAEMON)

echo "soak: $DURATION s, broker restarted every $PERIOD s (down $DOWN s), work in $WORK"
START=$(date +%s)
RESTARTS=0
while [ $(( $(date +%s) - START + PERIOD )) -le "$DURATION" ]; do
  sleep "$PERIOD"
  stop_broker
  sleep "$DOWN"
  start_broker
  RESTARTS=$((RESTARTS + 1))
done
sleep $(( DURATION - ($(date +%s) - START) > 0 ? DURATION - ($(date +%s) - START) : 0 ))
kill -TERM "$DAEMON"
CODE=0
wait "$DAEMON" || CODE=$?
sleep 5 # the subscriber receives what the daemon flushed
echo "daemon exit status: $CODE; broker restarts: $RESTARTS"

python3 - "$WORK" <<'EOF'
import collections, json, sys
work = sys.argv[1]
log = open(f"{work}/daemon.log", errors="replace").read()
spooled = []
for line in log.splitlines():
    if "MQTT: spooled event " in line:
        rest = line.split("MQTT: spooled event ", 1)[1].split()
        spooled.append((rest[1], rest[2]))
lines = [l for l in open(f"{work}/events.txt").read().splitlines() if l.strip()]
unique, seen = [], set()
for l in lines:
    if l not in seen:
        seen.add(l)
        unique.append(json.loads(l))
duplicates = len(lines) - len(unique)
want = collections.Counter(spooled)
got = collections.Counter((e["type"], e["id"]) for e in unique)
missing = want - got
unknown = got - want
# order per prompt: the delivered (first copies) sequence must be the spooled one
def per_prompt(pairs):
    out = collections.defaultdict(list)
    for t, i in pairs:
        out[i.split("-", 1)[1]].append((t, i))
    return out
spooled_pp = per_prompt(spooled)
got_pp = per_prompt((e["type"], e["id"]) for e in unique)
out_of_order = [p for p in spooled_pp if got_pp.get(p) != spooled_pp[p]] if not missing and not unknown else []
states = sum(1 for _ in open(f"{work}/states.txt"))
connections = log.count("connected to the MQTT broker")
summary = [l.split("MQTT: ", 1)[1] for l in log.splitlines() if "queued since start" in l]
print(f"events spooled: {len(spooled)}; delivered: {len(unique)} distinct, {duplicates} redelivered "
      f"duplicate(s); missing: {sum(missing.values())}; unknown: {sum(unknown.values())}; "
      f"prompts out of order: {len(out_of_order)}")
print(f"state messages: {states}; daemon connections: {connections}; daemon: {summary[-1] if summary else 'no summary line'}")
if missing:
    print("missing:", list(missing.items())[:10])
if unknown:
    print("unknown:", list(unknown.items())[:10])
if out_of_order:
    print("out of order:", out_of_order[:5])
sys.exit(1 if missing or unknown or out_of_order or not spooled else 0)
EOF
