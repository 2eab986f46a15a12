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
# Not for CI (slow, noisy). See benches/e2e/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../tests/containers/lib.sh
source "$HERE/../../tests/containers/lib.sh"

DURATION=${BENCH_DURATION:-5s}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-1}
CONNS=${BENCH_CONNS:-32}
# Cacheable for the cached run; the others pass Cache-Control through untouched.
REQ_PATH=${BENCH_PATH:-/bench?cc=max-age=60}
RESULTS=${BENCH_RESULTS:-$HERE/RESULTS.md}
LOCK=/tmp/portcullis-kernel.lock

pc_require_root

# === binaries and tools (before taking the kernel lock: builds are slow) ===

if [[ -z ${BENCH_LOCKED:-} ]]; then
	if [[ -z ${PORTCULLIS_BIN:-} || -z ${TESTSVC_BIN:-} ]]; then
		command -v cargo >/dev/null || pc_die "cargo not found (or set PORTCULLIS_BIN and TESTSVC_BIN)"
		pc_log "building portcullis and testsvc (release)"
		(cd "$PC_REPO" && cargo build --release -p portcullis -p testsvc --bins) >&2 ||
			pc_die "release build failed"
		export PORTCULLIS_BIN=${PORTCULLIS_BIN:-$PC_TARGET_DIR/release/portcullis}
		export TESTSVC_BIN=${TESTSVC_BIN:-$PC_TARGET_DIR/release/testsvc}
	fi
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
	pc_log "waiting for $LOCK (other sessions' kernel tests)"
	exec env BENCH_LOCKED=1 flock "$LOCK" "$0" "$@"
fi

PC_PORTCULLIS=$PORTCULLIS_BIN
PC_TESTSVC=$TESTSVC_BIN
[[ -x $PC_PORTCULLIS && -x $PC_TESTSVC ]] || pc_die "binaries missing: $PC_PORTCULLIS $PC_TESTSVC"
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
	[[ -n $NS_MADE ]] && ip netns del "$NS"
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

for ((attempt = 0; ; attempt++)); do
	((attempt < 30)) || pc_die "no free /24 in 198.19.0.0/16 after 30 tries"
	PREFIX=198.19.$((RANDOM % 200 + 20))
	ip -4 route show | grep -qF "$PREFIX." && continue
	ip -4 addr show | grep -qF "$PREFIX." && continue
	break
done
BACKEND=$PREFIX.2
pc_log "backend namespace $NS at $BACKEND (veth $VETH)"
ip netns add "$NS"
NS_MADE=1
ip link add "$VETH" type veth peer name eth0 netns "$NS"
ip addr add "$PREFIX.1/24" dev "$VETH"
ip link set "$VETH" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$BACKEND/24" dev eth0
ip -n "$NS" link set eth0 up

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
"$PC_PORTCULLIS" check "$PC_TMP/rules.json" >&2 || pc_die "the bench rule file does not validate"

# === start everything, check each path answers as it should ===

start nginx "$PC_TMP/nginx.out" nginx -e "$PC_TMP/nginx.log" -p "$PC_TMP/nginx" -c "$PC_TMP/nginx/nginx.conf"
start haproxy "$PC_TMP/haproxy.log" haproxy -db -f "$PC_TMP/haproxy.cfg"
pc_portcullis_start "$PC_TMP/rules.json" "127.0.0.1:$ADMIN_PORT"
PGROUP[portcullis]=$PC_PORTCULLIS_PID

# The setups, in the order of the table: label, URL, process group of the proxy ('' = none).
LABELS=("direct" "nginx (keepalive upstream)" "HAProxy (http, keep-alive)" "Portcullis frontend" "Portcullis frontend, cached")
URLS=("http://$BACKEND$REQ_PATH" "http://127.0.0.1:$NGINX_PORT$REQ_PATH" "http://127.0.0.1:$HAPROXY_PORT$REQ_PATH"
	"http://127.0.0.1:$PLAIN_PORT$REQ_PATH" "http://127.0.0.1:$CACHED_PORT$REQ_PATH")
GROUPS_OF=('' nginx haproxy portcullis portcullis)

for url in "${URLS[@]}"; do wait_ok "$url"; done
curl -fsS -D - -o /dev/null "${URLS[3]}" | grep -qi '^x-cache: *hit' &&
	pc_die "the plain Portcullis frontend answered from a cache; its row would measure the wrong thing"
curl -fsS -D - -o /dev/null "${URLS[4]}" | grep -qi '^x-cache: *hit' ||
	pc_die "the cached Portcullis frontend's second GET was not a cache hit"

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

declare -A RPS=() P50=() P99=() TOTAL=() TICKS=() HITS=() ERRORS=()

# measure I ROUND: one wrk run of setup I; results appended to the arrays above.
measure() {
	local i=$1 round=$2 url=${URLS[$1]} group=${GROUPS_OF[$1]} out=$PC_TMP/wrk-$1-$2.txt
	pc_log "round $round, ${LABELS[$i]}: wrk -t$THREADS -c$CONNS -d$DURATION --latency $url"
	local before_count before_cpu=0 after_cpu=0
	before_count=$(backend_counter)
	if [[ -n $group ]]; then before_cpu=$(cpu_ticks "$group"); fi
	wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out"
	if [[ -n $group ]]; then after_cpu=$(cpu_ticks "$group"); fi
	HITS[$i]+=" $(($(backend_counter) - before_count))"
	cat "$out" >&2

	local rps total
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
	total=$(awk '/requests in/ {print $1}' "$out")
	[[ -n $rps && -n $total ]] || pc_die "could not read wrk's output for ${LABELS[$i]}"
	RPS[$i]+=" $rps"
	P50[$i]+=" $(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
	P99[$i]+=" $(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
	TOTAL[$i]=$((${TOTAL[$i]:-0} + total))
	TICKS[$i]=$((${TICKS[$i]:-0} + after_cpu - before_cpu))
	ERRORS[$i]=$((${ERRORS[$i]:-0} + $(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {
		for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i } END {print n + 0}' "$out")))
}

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
for i in "${!URLS[@]}"; do
	pc_log "warm-up $WARMUP: ${LABELS[$i]}"
	wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "${URLS[$i]}" >/dev/null
done
for ((round = 1; round <= ROUNDS; round++)); do
	# Rotate the order each round so no setup always runs right after the same neighbour.
	for ((k = 0; k < ${#URLS[@]}; k++)); do
		measure $(((k + round - 1) % ${#URLS[@]})) "$round"
	done
done

# Peak RSS over the whole run; Portcullis serves both of its rows from one process.
declare -A RSS=()
for group in nginx haproxy portcullis; do
	RSS[$group]=$(awk -v k="$(peak_rss_kib "$group")" 'BEGIN {printf "%.1f", k / 1024}')
done
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///')
HAPROXY_VERSION=$(haproxy -v | awk 'NR == 1 {print $3}')

# === report ===

HZ=$(getconf CLK_TCK)
# shellcheck disable=SC2086 # the arrays hold space-separated lists on purpose
{
	D_RPS=$(median ${RPS[0]}) D_P50=$(median ${P50[0]}) D_P99=$(median ${P99[0]})
	ROWS=()
	for i in "${!URLS[@]}"; do
		rps=$(median ${RPS[$i]}) p50=$(median ${P50[$i]}) p99=$(median ${P99[$i]})
		spread=$(printf '%s\n' ${RPS[$i]} | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.0f–%.0f", lo, hi}')
		group=${GROUPS_OF[$i]} rss='–' cpu='–'
		if [[ -n $group ]]; then
			rss=${RSS[$group]}
			cpu=$(awk -v t="${TICKS[$i]}" -v hz="$HZ" -v n="${TOTAL[$i]}" 'BEGIN {printf "%.1f", 1e6 * t / hz / n}')
		fi
		hits=$(awk -v h="${HITS[$i]}" -v n="${TOTAL[$i]}" 'BEGIN {k = split(h, a, " "); s = 0; for (j = 1; j <= k; j++) s += a[j]; printf "%.0f %%", 100 * s / n}')
		ROWS+=("$(awk -v l="${LABELS[$i]}" -v r="$rps" -v sp="$spread" -v p50="$p50" -v p99="$p99" \
			-v dr="$D_RPS" -v d50="$D_P50" -v d99="$D_P99" -v rss="$rss" -v cpu="$cpu" -v hits="$hits" -v e="${ERRORS[$i]}" \
			'BEGIN {printf "| %s | %.0f | %s | %.0f %% | %.2f | %.1f× | %.2f | %.1f× | %s | %s | %s | %s |",
				l, r, sp, 100 * r / dr, p50, p50 / d50, p99, p99 / d99, rss, cpu, hits, e}')")
	done
}

COMMIT=$(cd "$PC_REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=''
[[ -n $(cd "$PC_REPO" && git status --porcelain --untracked-files=no 2>/dev/null) ]] && DIRTY=', uncommitted changes'
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
	printf '# End-to-end bench results\n\n'
	printf -- '- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
	printf -- '- machine: %s CPUs (%s), kernel %s, %s GiB RAM, load average before the run %s\n' "$(nproc)" \
		"${CPU_MODEL:-unknown CPU}" "$(uname -r)" "$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$LOADAVG"
	printf -- '- portcullis %s%s, nginx %s, HAProxy %s, %s\n' "$COMMIT" "$DIRTY" "$NGINX_VERSION" "$HAPROXY_VERSION" \
		"$(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}')"
	# shellcheck disable=SC2016 # the backticks are markdown
	printf -- '- load: `wrk -t%s -c%s -d%s --latency`, %s rounds (each setup once per round, order rotated), after a %s warm-up of each; `GET %s` (testsvc JSON echo of the request, about 0.4–0.6 KB)\n' \
		"$THREADS" "$CONNS" "$DURATION" "$ROUNDS" "$WARMUP" "$REQ_PATH"
	printf -- '- backend: testsvc (a thread per connection) in a network namespace behind a veth (%s), like a container; every proxy listens on 127.0.0.1 and runs the whole time; wrk on the same host\n\n' "$BACKEND"
	printf '**Caveat:** wrk, the proxies and the backend share the same %s cores (and other work on the\n' "$(nproc)"
	printf 'machine), so the numbers are noisy and absolute values do not carry over between runs or\n'
	printf 'machines; only ratios within one run mean something. The req/s range shows the spread over\n'
	printf 'the rounds; proxy CPU per request is the steadiest column.\n\n'
	printf '| setup | req/s (median) | req/s range | vs direct | p50 ms | p50 vs direct | p99 ms | p99 vs direct | proxy peak RSS MiB | proxy CPU µs/req | reached backend | errors |\n'
	printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
	printf '%s\n' "${ROWS[@]}"
	printf '\nMedians over the rounds. Peak RSS is VmHWM from /proc at the end of the run (nginx: master and\n'
	printf 'workers summed); Portcullis serves both of its rows from one process, so they show the same value.\n'
	printf 'Proxy CPU is the user+system time of the proxy'"'"'s processes during the measured runs, per request.\n'
	printf '"reached backend" is the backend'"'"'s own request counter over the measured runs, as a share of the\n'
	printf 'requests wrk completed (a cached setup should show ~0 %%).\n'
} | tee "$RESULTS"
pc_log "written to $RESULTS"
