#!/usr/bin/env bash
# End-to-end HTTP bench: one backend, the same wrk load sent
#   (1) straight to the backend, (2) through nginx (upstream keepalive),
#   (3) through HAProxy (http mode, keep-alive), (4) through a Portcullis
#   frontend, (5) through a Portcullis frontend whose pool member is cached;
# in rounds (each setup once per round, order rotated), reported as medians,
# with the ratios to direct, wrk's p50/p99, each proxy's peak RSS (VmHWM) and
# its CPU time per request. Markdown to stdout and to benches/e2e/RESULTS.md.
#
# Why this shape: on a 2-core VM absolute numbers wander between runs, so the
# only thing worth reading is how the proxies compare to each other and to a
# direct connection measured in the same run, interleaved so drift hits all.
#
# The backend is the project's testsvc in a network namespace on a veth
# (198.19.N.2, like a real container: rule files refuse loopback container
# addresses), every proxy listens on 127.0.0.1 and targets that same address.
# nginx and HAProxy run in the foreground from config files in a temp dir, in
# their own process groups, and are stopped by PID; no system service is
# started. `portcullis run` installs the nftables table, so the measuring part
# holds /tmp/portcullis-kernel.lock; an EXIT trap stops everything, runs
# `portcullis down` and removes the namespace.
#
# Two binaries side by side: with PORTCULLIS_BASELINE_BIN=/path/to/old/portcullis
# the Portcullis rows appear twice, "baseline" (that binary) and "current"
# (PORTCULLIS_BIN or the release build), in the same rotated rounds, followed by
# a baseline-vs-current table. Only one Portcullis runs at a time: both would
# own table inet portcullis and "repair" each other's ruleset as drift. So the
# bench restarts Portcullis (same rule file, same ports) whenever the next setup
# needs the other binary, and warms the new process up (unmeasured) first.
#
# With h2load installed (Debian nghttp2-client) one more row: an HTTP/2 client
# (prior knowledge, h2c) through the plain frontend to the HTTP/1.1 backend, for
# the current binary. Without h2load the row is skipped with a note.
#
# Not for CI (slow, noisy). See benches/e2e/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../tests/containers/lib.sh
source "$HERE/../../tests/containers/lib.sh"
source "$HERE/lib.sh"

DURATION=${BENCH_DURATION:-5s}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-1}
CONNS=${BENCH_CONNS:-32}
# Cacheable for the cached run; the others pass Cache-Control through untouched.
REQ_PATH=${BENCH_PATH:-/bench?cc=max-age=60}
RESULTS=${BENCH_RESULTS:-$HERE/RESULTS.md}

pc_require_root

# === binaries and tools (before taking the kernel lock: builds are slow) ===

if [[ -z ${BENCH_LOCKED:-} ]]; then
	bench_binaries
	missing=()
	for tool in nginx:nginx haproxy:haproxy wrk:wrk curl:curl jq:jq nft:nftables flock:util-linux; do
		command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
	done
	if ((${#missing[@]})); then
		# Installing nginx/haproxy must not start their system services:
		# policy-rc.d 101 tells invoke-rc.d / deb-systemd-invoke "not now".
		policy=/usr/sbin/policy-rc.d made_policy=''
		if [[ ! -e $policy ]]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
			trap '[[ -n $made_policy ]] && rm -f "$policy"' EXIT
		fi
		pc_apt_install "${missing[@]}"
		[[ -n $made_policy ]] && rm -f "$policy"
		made_policy=''
	fi
	bench_relock "$0" "$@"
fi

PC_PORTCULLIS=$PORTCULLIS_BIN
PC_TESTSVC=$TESTSVC_BIN
[[ -x $PC_PORTCULLIS && -x $PC_TESTSVC ]] || pc_die "binaries missing: $PC_PORTCULLIS $PC_TESTSVC"
# The Portcullis binaries to measure: the current one, and the baseline if asked for.
BIN_NAMES=(current)
BIN_PATHS=("$PC_PORTCULLIS")
if [[ -n ${PORTCULLIS_BASELINE_BIN:-} ]]; then
	BIN_NAMES=(baseline current)
	BIN_PATHS=("$PORTCULLIS_BASELINE_BIN" "$PC_PORTCULLIS")
fi
CURRENT=$((${#BIN_NAMES[@]} - 1))
COMPARE=''
((${#BIN_NAMES[@]} > 1)) && COMPARE=1
H2LOAD=''
H2_NOTE=''
if command -v h2load >/dev/null; then
	H2LOAD=h2load
else
	H2_NOTE='HTTP/2 row skipped: h2load is not installed (Debian package nghttp2-client).'
fi
pc_ensure_nft

pc_init_run
NS=pcb-$PC_RUN_ID
VETH=pcb$PC_RUN_ID
NS_MADE=''
declare -A PGROUP=() # name -> pid of a process-group leader this run started

# === process groups ===

# start NAME LOG CMD...: CMD in its own process group (setsid execs it, so $! is its pid).
start() {
	local name=$1 log=$2
	shift 2
	setsid "$@" >"$log" 2>&1 </dev/null &
	PGROUP[$name]=$!
}

# stop NAME: SIGTERM to its group, SIGKILL after 5 s.
stop() {
	local pid=${PGROUP[$1]:-} i
	[[ -n $pid ]] || return 0
	unset "PGROUP[$1]"
	kill -0 "$pid" 2>/dev/null || return 0
	local target=$pid
	# setsid made it a group leader; never signal a group that is not its own.
	[[ $(ps -o pgid= -p "$pid" | tr -d ' ') == "$pid" ]] && target=-$pid
	kill -TERM -- "$target" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL -- "$target" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# Every pid in NAME's process group (nginx: master and workers).
group_pids() { pgrep -g "${PGROUP[$1]}" || true; }

# Peak RSS (VmHWM) summed over the group, in KiB.
peak_rss_kib() {
	local pid sum=0 v
	for pid in $(group_pids "$1"); do
		v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# User+system CPU time of the group so far, in clock ticks.
cpu_ticks() {
	local pid sum=0 v
	for pid in $(group_pids "$1"); do
		# Fields after the ")" of comm: utime is the 12th, stime the 13th.
		v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if ((rc != 0)); then
		local f
		for f in "$PC_TMP"/*.log; do
			[[ -s $f ]] || continue
			printf -- '--- last lines of %s\n' "$f" >&2
			tail -n 15 "$f" >&2
		done
	fi
	stop nginx
	stop haproxy
	pc_portcullis_stop
	stop backend
	bench_backend_ns_down "$NS" "$VETH"
	[[ -n $PC_TMP ]] && rm -rf "$PC_TMP"
	local left=()
	ip netns list | grep -qw "$NS" && left+=("netns $NS")
	ip link show "$VETH" >/dev/null 2>&1 && left+=("link $VETH")
	[[ -n $PC_PORTCULLIS_STARTED ]] && nft list table inet portcullis >/dev/null 2>&1 && left+=("table inet portcullis")
	if ((${#left[@]})); then
		printf 'ERROR: cleanup left behind: %s\n' "${left[*]}" >&2
		rc=1
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# === the backend: testsvc in a namespace on a veth, like a container ===

bench_backend_ns "$NS" "$VETH"

# Port 80 is the plain pool's member, 8080 the cached one's (the cache is keyed by container:port).
start backend "$PC_TMP/backend.log" ip netns exec "$NS" "$PC_TESTSVC" serve --name backend \
	--http 80 --http 8080 --bind "$BACKEND" --quiet

# wait_ok URL: until URL answers 200 with the backend's echo (10 s).
wait_ok() {
	local deadline=$((SECONDS + 10))
	while ((SECONDS < deadline)); do
		curl -fsS --max-time 1 "$1" 2>/dev/null | grep -qF '"service":"backend"' && return 0
		sleep 0.2
	done
	pc_die "$1 did not answer with the backend's echo within 10 s"
}

backend_counter() {
	curl -fsS --max-time 2 "http://$BACKEND/__stats" | jq -r .counter
}

# === the proxies' configs ===

pc_free_port PLAIN_PORT
pc_free_port CACHED_PORT
pc_free_port NGINX_PORT
pc_free_port HAPROXY_PORT
pc_free_port PROXY_PORT
pc_free_port ADMIN_PORT

mkdir -p "$PC_TMP/nginx"
cat >"$PC_TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes auto;
pid $PC_TMP/nginx/nginx.pid;
error_log $PC_TMP/nginx.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $PC_TMP/nginx/body;
    proxy_temp_path $PC_TMP/nginx/proxy;
    fastcgi_temp_path $PC_TMP/nginx/fastcgi;
    uwsgi_temp_path $PC_TMP/nginx/uwsgi;
    scgi_temp_path $PC_TMP/nginx/scgi;
    upstream backend {
        server $BACKEND:80;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF

cat >"$PC_TMP/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend backend
backend backend
    server backend $BACKEND:80
EOF

pc_render_rules "$HERE/rules.json.tmpl" "$PC_TMP/rules.json" \
	"BACKEND_ADDRESS=$BACKEND" "PLAIN_LISTEN=127.0.0.1:$PLAIN_PORT" \
	"CACHED_LISTEN=127.0.0.1:$CACHED_PORT" "PLAIN_PORT=80" "CACHED_PORT=8080" \
	"PROXY_PORT=$PROXY_PORT" "ADMIN_ADDRESS=127.0.0.1:$ADMIN_PORT"
for bin in "${BIN_PATHS[@]}"; do
	"$bin" check "$PC_TMP/rules.json" >&2 || pc_die "the bench rule file does not validate with $bin"
done

# === start everything, check each path answers as it should ===

start nginx "$PC_TMP/nginx.out" nginx -e "$PC_TMP/nginx.log" -p "$PC_TMP/nginx" -c "$PC_TMP/nginx/nginx.conf"
start haproxy "$PC_TMP/haproxy.log" haproxy -db -f "$PC_TMP/haproxy.cfg"

PLAIN_URL=http://127.0.0.1:$PLAIN_PORT$REQ_PATH
CACHED_URL=http://127.0.0.1:$CACHED_PORT$REQ_PATH

# check_portcullis: the running Portcullis answers both frontends as its rows need.
check_portcullis() {
	wait_ok "$PLAIN_URL"
	wait_ok "$CACHED_URL"
	curl -fsS -D - -o /dev/null "$PLAIN_URL" | grep -qi '^x-cache: *hit' &&
		pc_die "the plain Portcullis frontend answered from a cache; its row would measure the wrong thing"
	curl -fsS -D - -o /dev/null "$CACHED_URL" | grep -qi '^x-cache: *hit' ||
		pc_die "the cached Portcullis frontend's second GET was not a cache hit"
	return 0
}

declare -A RSS_KIB=() # binary index -> peak RSS (KiB) over all of its processes' lives
RUNNING=''            # index of the binary that runs now
RESTARTED=''

# note_rss: the running Portcullis' peak RSS into RSS_KIB.
note_rss() {
	[[ -n $RUNNING ]] || return 0
	local k
	k=$(peak_rss_kib portcullis)
	((k > ${RSS_KIB[$RUNNING]:-0})) && RSS_KIB[$RUNNING]=$k
	return 0
}

# ensure_bin B: Portcullis binary B runs (restarted if another one did); sets RESTARTED.
ensure_bin() {
	RESTARTED=''
	[[ -z $1 || $1 == "$RUNNING" ]] && return 0
	if [[ -n $RUNNING ]]; then
		note_rss
		pc_portcullis_stop || pc_die "stopping portcullis (${BIN_NAMES[$RUNNING]}) failed"
		unset "PGROUP[portcullis]"
	fi
	PC_PORTCULLIS=${BIN_PATHS[$1]}
	pc_log "portcullis: ${BIN_NAMES[$1]} ($PC_PORTCULLIS)"
	pc_portcullis_start "$PC_TMP/rules.json" "127.0.0.1:$ADMIN_PORT"
	PGROUP[portcullis]=$PC_PORTCULLIS_PID
	RUNNING=$1
	RESTARTED=1
	check_portcullis
}

wait_ok "http://$BACKEND$REQ_PATH"
wait_ok "http://127.0.0.1:$NGINX_PORT$REQ_PATH"
wait_ok "http://127.0.0.1:$HAPROXY_PORT$REQ_PATH"
ensure_bin "$CURRENT"

# The HTTP/2 row needs a frontend that turns an HTTP/2 request into HTTP/1.1 for
# the member (before issue 10 this was a 502); a binary that cannot gets a note.
if [[ -n $H2LOAD ]]; then
	h2_version=$(curl -sS --http2-prior-knowledge -o "$PC_TMP/h2-check.txt" -w '%{http_version} %{http_code}' "$PLAIN_URL" || true)
	if [[ $h2_version != "2 200" ]] || ! grep -qF '"service":"backend"' "$PC_TMP/h2-check.txt" 2>/dev/null; then
		H2LOAD=''
		H2_NOTE="HTTP/2 row skipped: the current binary's frontend answered an HTTP/2 (prior knowledge) GET with '${h2_version:-no response}' instead of HTTP/2 200 from the backend."
	fi
fi

# The setups, in the order they are measured in a round (grouped by binary, so
# a round restarts Portcullis at most twice): label, URL, process group of the
# proxy ('' = none), Portcullis binary index ('' = none), load tool.
LABELS=() URLS=() GROUPS_OF=() BIN_OF=() TOOL=()
add_setup() {
	LABELS+=("$1") URLS+=("$2") GROUPS_OF+=("$3") BIN_OF+=("$4") TOOL+=("$5")
}
add_setup "direct" "http://$BACKEND$REQ_PATH" '' '' wrk
add_setup "nginx (keepalive upstream)" "http://127.0.0.1:$NGINX_PORT$REQ_PATH" nginx '' wrk
add_setup "HAProxy (http, keep-alive)" "http://127.0.0.1:$HAPROXY_PORT$REQ_PATH" haproxy '' wrk
declare -A ROW_PLAIN=() ROW_CACHED=() # binary index -> setup index
for b in "${!BIN_NAMES[@]}"; do
	suffix=''
	[[ -n $COMPARE ]] && suffix=" (${BIN_NAMES[$b]})"
	ROW_PLAIN[$b]=${#LABELS[@]}
	add_setup "Portcullis frontend$suffix" "$PLAIN_URL" portcullis "$b" wrk
	ROW_CACHED[$b]=${#LABELS[@]}
	add_setup "Portcullis frontend, cached$suffix" "$CACHED_URL" portcullis "$b" wrk
done
H2_ROW=''
if [[ -n $H2LOAD ]]; then
	suffix=''
	[[ -n $COMPARE ]] && suffix=" (${BIN_NAMES[$CURRENT]})"
	H2_ROW=${#LABELS[@]}
	add_setup "Portcullis frontend, HTTP/2 client$suffix" "$PLAIN_URL" portcullis "$CURRENT" h2load
fi
# The order of the table: each Portcullis row's baseline next to its current.
DISPLAY=(0 1 2)
for b in "${!BIN_NAMES[@]}"; do DISPLAY+=("${ROW_PLAIN[$b]}"); done
for b in "${!BIN_NAMES[@]}"; do DISPLAY+=("${ROW_CACHED[$b]}"); done
[[ -n $H2_ROW ]] && DISPLAY+=("$H2_ROW")

# === measuring: every setup once per round, rounds interleaved so drift hits all alike ===

# to_ms VALUE: wrk's "512.00us" / "1.20ms" / "1.01s" in milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
		printf "%.3f", n
	}'
}

# median of the arguments (numbers).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# load I DURATION OUT: the load tool of setup I against its URL for DURATION.
load() {
	local i=$1
	if [[ ${TOOL[$i]} == h2load ]]; then
		# One stream at a time per connection, like wrk's one request per connection.
		h2load -t"$THREADS" -c"$CONNS" -m1 -D "$2" "${URLS[$i]}" >"$3"
	else
		wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency "${URLS[$i]}" >"$3"
	fi
}

# warm_up I: an unmeasured run of setup I (fills pools and the cache).
warm_up() {
	pc_log "warm-up $WARMUP: ${LABELS[$1]}"
	load "$1" "$WARMUP" /dev/null
}

# prepare I: the right Portcullis runs for setup I; a fresh one is warmed up on all of its setups.
prepare() {
	local j
	ensure_bin "${BIN_OF[$1]}"
	[[ -n $RESTARTED ]] || return 0
	for j in "${!LABELS[@]}"; do
		[[ ${BIN_OF[$j]} == "$RUNNING" ]] && warm_up "$j"
	done
	return 0
}

declare -A RPS=() P50=() P99=() TOTAL=() TICKS=() HITS=() ERRORS=() CPUS=()

# measure I ROUND: one load run of setup I; results appended to the arrays above.
measure() {
	local i=$1 round=$2 url=${URLS[$1]} group=${GROUPS_OF[$1]} out=$PC_TMP/load-$1-$2.txt
	pc_log "round $round, ${LABELS[$i]}: ${TOOL[$i]} -t$THREADS -c$CONNS for $DURATION, $url"
	local before_count before_cpu=0 after_cpu=0
	before_count=$(backend_counter)
	if [[ -n $group ]]; then before_cpu=$(cpu_ticks "$group"); fi
	load "$i" "$DURATION" "$out"
	if [[ -n $group ]]; then after_cpu=$(cpu_ticks "$group"); fi
	HITS[$i]+=" $(($(backend_counter) - before_count))"
	cat "$out" >&2

	local rps total errors
	if [[ ${TOOL[$i]} == h2load ]]; then
		# "finished in 5.00s, 31234.56 req/s, ..." / "requests: T total, S started, D done, OK succeeded, F failed, E errored, X timeout"
		# / "status codes: a 2xx, b 3xx, c 4xx, d 5xx"; h2load reports no latency percentiles.
		rps=$(awk '/^finished in/ {print $4}' "$out")
		total=$(awk '/^requests:/ {print $6}' "$out")
		errors=$(awk '/^requests:/ {n += $12 + $14} /^status codes:/ {n += $7 + $9} END {print n + 0}' "$out")
	else
		rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
		total=$(awk '/requests in/ {print $1}' "$out")
		P50[$i]+=" $(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
		P99[$i]+=" $(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
		errors=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {
			for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i } END {print n + 0}' "$out")
	fi
	[[ -n $rps && -n $total && $total -gt 0 ]] || pc_die "could not read ${TOOL[$i]}'s output for ${LABELS[$i]}"
	RPS[$i]+=" $rps"
	TOTAL[$i]=$((${TOTAL[$i]:-0} + total))
	TICKS[$i]=$((${TICKS[$i]:-0} + after_cpu - before_cpu))
	CPUS[$i]+=" $(awk -v t="$((after_cpu - before_cpu))" -v hz="$HZ" -v n="$total" 'BEGIN {printf "%.2f", 1e6 * t / hz / n}')"
	ERRORS[$i]=$((${ERRORS[$i]:-0} + errors))
}

HZ=$(getconf CLK_TCK)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
for i in "${!LABELS[@]}"; do
	prepare "$i"
	# A Portcullis setup was warmed up by prepare if it just started it.
	[[ -n ${BIN_OF[$i]} && ${#BIN_NAMES[@]} -gt 1 ]] || warm_up "$i"
done
for ((round = 1; round <= ROUNDS; round++)); do
	# Rotate the order each round so no setup always runs right after the same neighbour.
	for ((k = 0; k < ${#LABELS[@]}; k++)); do
		i=$(((k + round - 1) % ${#LABELS[@]}))
		prepare "$i"
		measure "$i" "$round"
	done
done
note_rss

# === report ===

# Peak RSS over the whole run, per proxy; Portcullis serves both of its rows from one
# process (per binary: the highest over its restarts).
declare -A RSS=()
for group in nginx haproxy; do
	RSS[$group]=$(awk -v k="$(peak_rss_kib "$group")" 'BEGIN {printf "%.1f", k / 1024}')
done
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///')
HAPROXY_VERSION=$(haproxy -v | awk 'NR == 1 {print $3}')

# range LIST FORMAT: "lo–hi" of the numbers in LIST.
range() { printf '%s\n' $1 | sort -g | awk -v f="$2" 'NR == 1 {lo = $1} {hi = $1} END {printf f "–" f, lo, hi}'; }

# shellcheck disable=SC2086 # the arrays hold space-separated lists on purpose
{
	D_RPS=$(median ${RPS[0]}) D_P50=$(median ${P50[0]}) D_P99=$(median ${P99[0]})
	declare -A CPU=() MRPS=()
	ROWS=()
	for i in "${DISPLAY[@]}"; do
		rps=$(median ${RPS[$i]}) spread=$(range "${RPS[$i]}" '%.0f')
		MRPS[$i]=$rps
		group=${GROUPS_OF[$i]} rss='–' cpu='–' cpus='–'
		if [[ -n $group ]]; then
			if [[ $group == portcullis ]]; then
				rss=$(awk -v k="${RSS_KIB[${BIN_OF[$i]}]:-0}" 'BEGIN {printf "%.1f", k / 1024}')
			else
				rss=${RSS[$group]}
			fi
			cpu=$(awk -v t="${TICKS[$i]}" -v hz="$HZ" -v n="${TOTAL[$i]}" 'BEGIN {printf "%.1f", 1e6 * t / hz / n}')
			cpus=$(range "${CPUS[$i]}" '%.1f')
		fi
		CPU[$i]=$cpu
		if [[ ${TOOL[$i]} == h2load ]]; then
			lat='| – | – | – | –'
		else
			lat=$(awk -v p50="$(median ${P50[$i]})" -v p99="$(median ${P99[$i]})" -v d50="$D_P50" -v d99="$D_P99" \
				'BEGIN {printf "| %.2f | %.1f× | %.2f | %.1f×", p50, p50 / d50, p99, p99 / d99}')
		fi
		hits=$(awk -v h="${HITS[$i]}" -v n="${TOTAL[$i]}" 'BEGIN {k = split(h, a, " "); s = 0; for (j = 1; j <= k; j++) s += a[j]; printf "%.0f %%", 100 * s / n}')
		ROWS+=("$(awk -v l="${LABELS[$i]}" -v r="$rps" -v sp="$spread" -v dr="$D_RPS" -v lat="$lat" \
			-v rss="$rss" -v cpu="$cpu" -v cpus="$cpus" -v hits="$hits" -v e="${ERRORS[$i]}" \
			'BEGIN {printf "| %s | %.0f | %s | %.0f %% %s | %s | %s | %s | %s | %s |",
				l, r, sp, 100 * r / dr, lat, rss, cpu, cpus, hits, e}')")
	done

	# Baseline vs current, per Portcullis setup: the change of the totals, and the
	# spread of the per-round ratios (both binaries ran in every round).
	CMP_ROWS=()
	if [[ -n $COMPARE ]]; then
		for pair in "${ROW_PLAIN[0]} ${ROW_PLAIN[1]} frontend" "${ROW_CACHED[0]} ${ROW_CACHED[1]} frontend, cached"; do
			read -r ib ic what <<<"$pair"
			CMP_ROWS+=("$(awk -v w="$what" -v cb="${CPU[$ib]}" -v cc="${CPU[$ic]}" -v lb="${CPUS[$ib]}" -v lc="${CPUS[$ic]}" \
				-v rb="${MRPS[$ib]}" -v rc="${MRPS[$ic]}" -v qb="${RPS[$ib]}" -v qc="${RPS[$ic]}" 'BEGIN {
				n = split(lb, b, " "); split(lc, c, " "); split(qb, x, " "); split(qc, y, " ")
				for (k = 1; k <= n; k++) {
					r = 100 * (c[k] / b[k] - 1); s = 100 * (y[k] / x[k] - 1)
					if (k == 1 || r < lo) lo = r; if (k == 1 || r > hi) hi = r
					if (k == 1 || s < slo) slo = s; if (k == 1 || s > shi) shi = s
				}
				printf "| %s | %.1f | %.1f | %+.1f %% | %+.1f … %+.1f %% | %.0f | %.0f | %+.1f %% | %+.1f … %+.1f %% |",
					w, cb, cc, 100 * (cc / cb - 1), lo, hi, rb, rc, 100 * (rc / rb - 1), slo, shi
			}')")
		done
	fi
}

COMMIT=$(cd "$PC_REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=''
[[ -n $(cd "$PC_REPO" && git status --porcelain --untracked-files=no 2>/dev/null) ]] && DIRTY=', uncommitted changes'
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
H2_VERSION=''
[[ -n $H2LOAD ]] && H2_VERSION=", $(h2load --version | awk 'NR == 1 {print $1, $2}')"
{
	printf '# End-to-end bench results\n\n'
	printf -- '- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
	printf -- '- machine: %s CPUs (%s), kernel %s, %s GiB RAM, load average before the run %s\n' "$(nproc)" \
		"${CPU_MODEL:-unknown CPU}" "$(uname -r)" "$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$LOADAVG"
	if [[ -n $COMPARE ]]; then
		printf -- '- portcullis current: %s%s (`%s`); baseline: %s (`%s`)\n' "$COMMIT" "$DIRTY" "${BIN_PATHS[$CURRENT]}" \
			"${PORTCULLIS_BASELINE_LABEL:-a binary given by path}" "$PORTCULLIS_BASELINE_BIN"
		printf -- '- nginx %s, HAProxy %s, %s%s\n' "$NGINX_VERSION" "$HAPROXY_VERSION" \
			"$(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}')" "$H2_VERSION"
	else
		printf -- '- portcullis %s%s, nginx %s, HAProxy %s, %s%s\n' "$COMMIT" "$DIRTY" "$NGINX_VERSION" "$HAPROXY_VERSION" \
			"$(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}')" "$H2_VERSION"
	fi
	# shellcheck disable=SC2016 # the backticks are markdown
	printf -- '- load: `wrk -t%s -c%s -d%s --latency`, %s rounds (each setup once per round, order rotated), after a %s warm-up of each; `GET %s` (testsvc JSON echo of the request, about 0.4–0.6 KB)\n' \
		"$THREADS" "$CONNS" "$DURATION" "$ROUNDS" "$WARMUP" "$REQ_PATH"
	if [[ -n $H2LOAD ]]; then
		# shellcheck disable=SC2016 # the backticks are markdown
		printf -- '- HTTP/2 row: `h2load -t%s -c%s -m1 -D %s` (prior knowledge, h2c; one stream at a time per connection, like wrk) to the plain frontend, whose member speaks HTTP/1.1\n' \
			"$THREADS" "$CONNS" "$DURATION"
	fi
	if [[ -n $COMPARE ]]; then
		printf -- '- one Portcullis runs at a time (both would own table inet portcullis): a round restarts it when the next setup needs the other binary, then warms it up (unmeasured) on all of its setups\n'
	fi
	printf -- '- backend: testsvc (a thread per connection) in a network namespace behind a veth (%s), like a container; every proxy listens on 127.0.0.1; wrk on the same host\n\n' "$BACKEND"
	printf '**Caveat:** wrk, the proxies and the backend share the same %s cores (and other work on the\n' "$(nproc)"
	printf 'machine), so the numbers are noisy and absolute values do not carry over between runs or\n'
	printf 'machines; only ratios within one run mean something. The ranges show the spread over\n'
	printf 'the rounds; proxy CPU per request is the steadiest column.\n\n'
	printf '| setup | req/s (median) | req/s range | vs direct | p50 ms | p50 vs direct | p99 ms | p99 vs direct | proxy peak RSS MiB | proxy CPU µs/req | CPU µs/req range | reached backend | errors |\n'
	printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
	printf '%s\n' "${ROWS[@]}"
	printf '\nMedians over the rounds. Peak RSS is VmHWM from /proc at the end of the run (nginx: master and\n'
	printf 'workers summed); Portcullis serves all of its rows from one process, so they show the same value\n'
	printf '(per binary, the highest over its restarts). Proxy CPU is the user+system time (clock ticks of\n'
	printf '1/%s s) of the proxy'"'"'s processes during the measured runs, per request: the column over all\n' "$HZ"
	printf 'rounds, the range per round. "reached backend" is the backend'"'"'s own request counter over the\n'
	printf 'measured runs, as a share of the requests completed (a cached setup should show ~0 %%).\n'
	if [[ -n $H2LOAD ]]; then
		printf 'h2load reports no latency percentiles, so the HTTP/2 row has none.\n'
		if [[ -n $COMPARE ]]; then
			printf 'The HTTP/2 row runs on the current binary only: its peak RSS includes %s HTTP/2 client\n' "$CONNS"
			printf 'connections (and their buffers) that the baseline never served; compare RSS with h2load absent.\n'
		fi
	fi
	[[ -n $H2_NOTE ]] && printf '\n%s\n' "$H2_NOTE"
	if [[ -n $COMPARE ]]; then
		printf '\n## Baseline vs current\n\n'
		printf 'Change from baseline to current (negative CPU = current does less work per request): over all\n'
		printf 'rounds, and the lowest … highest of the per-round changes (both binaries ran in every round).\n\n'
		printf '| Portcullis | CPU µs/req baseline | CPU µs/req current | CPU change | per round | req/s baseline | req/s current | req/s change | per round |\n'
		printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
		printf '%s\n' "${CMP_ROWS[@]}"
	fi
} | tee "$RESULTS"
pc_log "written to $RESULTS"
