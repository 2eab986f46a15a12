#!/usr/bin/env bash
# Instructions per request of the Portcullis frontend, counted by callgrind:
# one or two binaries, the same requests, a number that does not depend on
# what else the machine is doing (unlike the CPU time run.sh measures).
#
#   bash benches/e2e/instructions.sh                     # the release build
#   PORTCULLIS_BASELINE_BIN=/tmp/old/portcullis bash benches/e2e/instructions.sh
#
# Each binary runs `portcullis run` under `valgrind --tool=callgrind` with the
# rule file of run.sh; the backend is testsvc in a network namespace
# (198.19.N.2). After a warm-up the counters are zeroed, INSTR_REQUESTS
# (default 2000) keep-alive requests are sent over INSTR_CONNS (4)
# connections with `h2load --h1` (plain frontend, and the cached frontend),
# and the counters are dumped: instructions per request is the total over
# the requests. It counts only user-space instructions of the proxy — the
# kernel's share (syscalls, TCP) is what run.sh's CPU column adds. The top
# functions of each binary are printed with callgrind_annotate, so a change
# in the count can be traced to the code that made it.
#
# INSTR_KEEP=DIR keeps the callgrind dumps there (callgrind.ROW.BINARY), for
# callgrind_annotate --inclusive=yes or kcachegrind.
#
# Holds /tmp/portcullis-kernel.lock (portcullis installs table inet
# portcullis); cleans up the namespace, processes and files on any exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../../tests/containers/lib.sh"
source "$HERE/lib.sh"

REQUESTS=${INSTR_REQUESTS:-2000}
CONNS=${INSTR_CONNS:-4}
REQ_PATH=${BENCH_PATH:-/bench?cc=max-age=60}

pc_require_root
if [[ -z ${BENCH_LOCKED:-} ]]; then
	bench_binaries
	missing=()
	for tool in valgrind:valgrind callgrind_annotate:valgrind h2load:nghttp2-client curl:curl jq:jq nft:nftables; do
		command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
	done
	((${#missing[@]} == 0)) || pc_apt_install "${missing[@]}"
	bench_relock "$0" "$@"
fi

PC_TESTSVC=$TESTSVC_BIN
NAMES=(current)
PATHS=("$PORTCULLIS_BIN")
if [[ -n ${PORTCULLIS_BASELINE_BIN:-} ]]; then
	NAMES=(baseline current)
	PATHS=("$PORTCULLIS_BASELINE_BIN" "$PORTCULLIS_BIN")
fi
pc_ensure_nft
pc_init_run
NS=pci-$PC_RUN_ID
VETH=pci$PC_RUN_ID
NS_MADE='' BACKEND_PID=''

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	pc_portcullis_stop
	if [[ -n $BACKEND_PID ]]; then
		kill -TERM -- "-$BACKEND_PID" 2>/dev/null
		wait "$BACKEND_PID" 2>/dev/null
	fi
	bench_backend_ns_down "$NS" "$VETH"
	((rc == 0)) || tail -n 20 "$PC_TMP"/*.log >&2 2>/dev/null
	[[ -n $PC_TMP ]] && rm -rf "$PC_TMP"
	if ip netns list | grep -qw "$NS" || ip link show "$VETH" >/dev/null 2>&1 ||
		nft list table inet portcullis >/dev/null 2>&1; then
		echo "ERROR: cleanup left the namespace, its veth or table inet portcullis behind" >&2
		rc=1
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_backend_ns "$NS" "$VETH"
setsid ip netns exec "$NS" "$PC_TESTSVC" serve --name backend --http 80 --http 8080 \
	--bind "$BACKEND" --quiet >"$PC_TMP/backend.log" 2>&1 </dev/null &
BACKEND_PID=$!
pc_wait_http "http://$BACKEND/" 10 || pc_die "the backend did not answer at $BACKEND within 10 s"

pc_free_port PLAIN_PORT
pc_free_port CACHED_PORT
pc_free_port PROXY_PORT
pc_free_port ADMIN_PORT
pc_render_rules "$HERE/rules.json.tmpl" "$PC_TMP/rules.json" \
	"BACKEND_ADDRESS=$BACKEND" "PLAIN_LISTEN=127.0.0.1:$PLAIN_PORT" \
	"CACHED_LISTEN=127.0.0.1:$CACHED_PORT" "PLAIN_PORT=80" "CACHED_PORT=8080" \
	"PROXY_PORT=$PROXY_PORT" "ADMIN_ADDRESS=127.0.0.1:$ADMIN_PORT"

# send URL N: N requests, keep-alive, over CONNS connections; all must be 2xx.
send() {
	local out
	out=$(h2load --h1 -c "$CONNS" -n "$2" "$1")
	grep -q "^status codes: $2 2xx" <<<"$out" || pc_die "not every request to $1 got a 2xx: $(grep -E '^(requests|status codes):' <<<"$out")"
}

declare -A PER=()
for b in "${!NAMES[@]}"; do
	name=${NAMES[$b]}
	wrapper=$PC_TMP/valgrind-$name
	printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/cg-%s.%%p "%s" "$@"\n' \
		"$PC_TMP" "$name" "${PATHS[$b]}" >"$wrapper"
	chmod +x "$wrapper"
	PC_PORTCULLIS=$wrapper
	pc_portcullis_start "$PC_TMP/rules.json" "127.0.0.1:$ADMIN_PORT"
	for row in plain cached; do
		port=$PLAIN_PORT
		[[ $row == cached ]] && port=$CACHED_PORT
		url="http://127.0.0.1:$port$REQ_PATH"
		send "$url" 200
		callgrind_control -z "$PC_PORTCULLIS_PID" >/dev/null
		send "$url" "$REQUESTS"
		rm -f "$PC_TMP/cg-$name.$PC_PORTCULLIS_PID".*
		callgrind_control -d "$row" "$PC_PORTCULLIS_PID" >/dev/null
		dump=$(ls -t "$PC_TMP/cg-$name.$PC_PORTCULLIS_PID".* | head -n 1)
		total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
		[[ -n $total ]] || pc_die "no total in $dump"
		PER[$row,$name]=$((total / REQUESTS))
		pc_log "$name, $row frontend: $((total / REQUESTS)) instructions per request"
		callgrind_annotate "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,27p' >"$PC_TMP/top-$row-$name.txt"
		[[ -z ${INSTR_KEEP:-} ]] || cp "$dump" "$INSTR_KEEP/callgrind.$row.$name"
	done
	pc_portcullis_stop
done

printf '\n| frontend | %s |\n|---|%s\n' "$(IFS='|'; echo "${NAMES[*]// / }" | sed 's/|/ | /g')" "$(printf -- '---|%.0s' "${NAMES[@]}")"
for row in plain cached; do
	line="| $row"
	for name in "${NAMES[@]}"; do line+=" | ${PER[$row,$name]}"; done
	echo "$line |"
done
if ((${#NAMES[@]} == 2)); then
	for row in plain cached; do
		awk -v a="${PER[$row,baseline]}" -v b="${PER[$row,current]}" -v r="$row" \
			'BEGIN {printf "%s: %+.1f %% instructions per request (current vs baseline)\n", r, 100 * (b - a) / a}'
	done
fi
for f in "$PC_TMP"/top-*.txt; do
	printf '\n=== %s\n' "$(basename "$f" .txt)"
	cat "$f"
done
