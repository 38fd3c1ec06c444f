#!/bin/sh
# compare.sh: the same loads against tidings and against the peer (Centrifugo with history and
# recovery on its memory engine), one server after the other, in one session, with the same
# tidings-load (docs/performance.md, "Against the peer"). Each scenario gets a freshly started
# server, so that its start and peak memory are its own; before each, the script waits (at most
# five minutes) for the machine's load average to fall below 1.5.
#
#   TIDINGS=bin/tidings LOAD=bin/tidings-load CENTRIFUGO=/path/to/centrifugo \
#       sh cmd/tidings-load/compare.sh [scenario ...]
#
# Scenarios: fanout (1,000 sockets x 200 events/s for 5 s), idle (10,000 sockets, 2 events/s for
# 5 s: peak memory per socket), storm (10,000 sockets dropped and reconnected at once); default
# all three. Without CENTRIFUGO only tidings runs. Each run's JSON summary goes to
# $OUT/<server>-<scenario>.json (OUT defaults to a new directory under /tmp), and a table of
# the figures is printed at the end. Everything stays on the loopback addresses.
set -eu

: "${TIDINGS:?set TIDINGS to the tidings binary}"
: "${LOAD:?set LOAD to the tidings-load binary}"
CENTRIFUGO=${CENTRIFUGO:-}
OUT=${OUT:-$(mktemp -d /tmp/tidings-compare.XXXXXX)}
SCENARIOS=${*:-fanout idle storm}
KEY=compare-key
mkdir -p "$OUT"
chmod 755 "$OUT"

# The peer's configuration: anonymous connections may subscribe to the "load" namespace, whose
# channels keep 65,536 publications (tidings' recent-events cache holds as many) for 168 h
# (tidings' default retention) and always recover.
cat > "$OUT/centrifugo.json" <<EOF
{
  "http_server": {"address": "127.0.0.1", "port": 8000},
  "log": {"level": "warn"},
  "engine": {"type": "memory"},
  "client": {"allow_anonymous_connect_without_token": true},
  "http_api": {"key": "$KEY"},
  "health": {"enabled": true},
  "channel": {
    "namespaces": [{
      "name": "load",
      "history_size": 65536,
      "history_ttl": "168h",
      "force_recovery": true,
      "allow_subscribe_for_anonymous": true,
      "allow_subscribe_for_client": true
    }]
  }
}
EOF

args() {
	case $1 in
	fanout) echo "-sockets 1000 -rate 200 -duration 5s" ;;
	idle) echo "-sockets 10000 -rate 2 -duration 5s -sources 127.0.0.2,127.0.0.3" ;;
	storm) echo "-sockets 10000 -rate 5 -duration 2s -storm -sources 127.0.0.2,127.0.0.3" ;;
	*) echo "unknown scenario $1" >&2; exit 2 ;;
	esac
}

wait_quiet() {
	i=0
	while [ $i -lt 60 ] && ! awk '{ exit !($1 < 1.5) }' /proc/loadavg; do
		sleep 5
		i=$((i + 1))
	done
}

wait_up() { # url
	i=0
	until curl -fsS -o /dev/null "$1" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 300 ]; then
			echo "compare: $1 did not answer" >&2
			return 1
		fi
		sleep 0.1
	done
}

stop() { # pid
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# The CPU seconds of tidings' own PostgreSQL (its postmaster, its live backends and the
# children they waited for), which tidings-load's -pid does not count.
pg_cpu() { # data dir
	pm=$(head -n 1 "$1/postgres/postmaster.pid" 2>/dev/null || echo 0)
	for p in $pm $(ps -o pid= --ppid "$pm" 2>/dev/null); do
		cat "/proc/$p/stat" 2>/dev/null
	done | awk '{ sub(/^.*\) /, ""); s += $12 + $13 + $14 + $15 } END { print s / 100 }'
}

run_tidings() { # scenario
	data=$OUT/tidings-data-$1 # made by tidings, readable by the postgres user
	TIDINGS_DEV=true TIDINGS_DATA_DIR=$data TIDINGS_API_KEY=$KEY TIDINGS_ADDR=127.0.0.1:8080 \
		"$TIDINGS" serve > "$OUT/tidings-$1.log" 2>&1 &
	pid=$!
	wait_up http://127.0.0.1:8080/readyz
	wait_quiet
	pg=$(pg_cpu "$data")
	echo "tidings $1: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
	# shellcheck disable=SC2046
	"$LOAD" -url http://127.0.0.1:8080 -api-key $KEY $(args "$1") -pid $pid > "$OUT/tidings-$1.json" || true
	awk -v a="$pg" -v b="$(pg_cpu "$data")" 'BEGIN { print b - a }' > "$OUT/tidings-$1.postgres-cpu"
	stop $pid
	rm -rf "$data"
}

run_centrifugo() { # scenario
	"$CENTRIFUGO" -c "$OUT/centrifugo.json" > "$OUT/centrifugo-$1.log" 2>&1 &
	pid=$!
	wait_up http://127.0.0.1:8000/health
	wait_quiet
	echo "centrifugo $1: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
	# shellcheck disable=SC2046
	"$LOAD" -peer centrifugo -url http://127.0.0.1:8000 -api-key $KEY $(args "$1") -pid $pid > "$OUT/centrifugo-$1.json" || true
	stop $pid
}

for s in $SCENARIOS; do
	args "$s" > /dev/null
	run_tidings "$s"
	if [ -n "$CENTRIFUGO" ]; then
		run_centrifugo "$s"
	fi
done

echo "results in $OUT"
for f in "$OUT"/*.json; do
	case $f in */centrifugo.json) continue ;; esac
	pg=$(cat "${f%.json}.postgres-cpu" 2>/dev/null || echo null)
	# delivered per server CPU-second, latency, bytes per socket at the peak, the storm, CPU
	tail -n 1 "$f" | jq -r --arg f "$(basename "$f" .json)" --argjson pg "$pg" 'def r: . * 100 | round / 100; [$f,
		"delivered \(.delivered) missing \(.missing) dup \(.duplicates) ooo \(.outOfOrder)",
		"per-cpu-s \(if .server.cpuSeconds > 0 then (.delivered / .server.cpuSeconds | floor) else "-" end)",
		"latency p50/p99/max \(.latencyMs.p50)/\(.latencyMs.p99)/\(.latencyMs.max) ms",
		"peak rss/socket \((.server.peakRssBytes - .server.startRssBytes) / .sockets / 1024 | r) KiB",
		(if .storm then "storm all current \(.storm.allCurrentMs) ms, p50 \(.storm.currentMs.p50) ms" else empty end),
		"cpu-s server \(.server.cpuSeconds | r) postgres \($pg) generator \(.generatorCpuSeconds) machine \(.machineCpuSeconds)"] | join("  ")'
done
