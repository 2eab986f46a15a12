#!/usr/bin/env bash
# Frontends against real containers (spec/scenarios.md, scenarios 3 and 4,
# and the load balancing beyond them): app1, app2, app3 on their own Docker
# network, `portcullis run` on the host with rules/frontends.json.tmpl, and
# clients on the host sending requests to the frontends on 127.0.0.1.
#
#   edge  — scenario 3 (by Host) and scenario 4 (by path), as in spec/rules.md
#   lb    — /w: weights 3:1, /h: hashing on X-User, /c: health-checked pool
#
# Each routing probe is also put to `portcullis explain --frontend`, which
# must agree. Then a member is stopped with `docker stop`: once the health
# checks have taken it out (seen in `portcullis status`), no GET may fail or
# reach it; after `docker start` it must serve again.
#
# Env: PORTCULLIS_BIN, TESTSVC_BIN (prebuilt binaries), PROBE_TIMEOUT_MS (default 3000).
# Prints one PASS/FAIL line per check and ends with `N passed, M failed`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/containers/lib.sh
source "$HERE/lib.sh"

PROBE_TIMEOUT_MS=${PROBE_TIMEOUT_MS:-3000}
TEMPLATE=$HERE/rules/frontends.json.tmpl
RULES=''
EDGE=''
LB=''
ADMIN=''
# Weighted pool: 3:1 over WEIGHT_REQUESTS requests. Smooth round robin gives
# exactly 30:10 from one sequential client; the stated tolerance is ±4 (10%).
WEIGHT_REQUESTS=40
WEIGHT_TOLERANCE=4

# front PORT TARGET [HEADER]...: what a request to the frontend on
# 127.0.0.1:PORT reached: `app1|app2|app3`, `http STATUS`, or the failure.
front() {
	local port=$1 target=$2
	shift 2
	local -a headers=()
	local h
	for h in "$@"; do headers+=(--header "$h"); done
	pc_probe --timeout-ms "$PROBE_TIMEOUT_MS" "${headers[@]}" "http://127.0.0.1:$port$target" |
		jq -r '
			if .result == "http" then
				(.body | try fromjson catch null) as $echo
				| if .status == 200 and ($echo | type) == "object" then $echo.service
				else "http \(.status)" end
			else .result end' 2>/dev/null || echo "unparsable probe output"
}

# front_echo PORT TARGET [HEADER]...: the echo JSON the service answered.
front_echo() {
	local port=$1 target=$2
	shift 2
	local -a headers=()
	local h
	for h in "$@"; do headers+=(--header "$h"); done
	pc_probe --timeout-ms "$PROBE_TIMEOUT_MS" "${headers[@]}" "http://127.0.0.1:$port$target" |
		jq -c '.body | fromjson' 2>/dev/null || echo '{}'
}

# explain_route FRONTEND HOST PATH: `routed POOL rc=0` or `STATUS rc=N`.
explain_route() {
	local out rc=0
	out=$("$PC_PORTCULLIS" explain "$RULES" --frontend "$1" --host "$2" --path "$3" --json 2>"$PC_TMP/explain.err") || rc=$?
	jq -r --arg rc "$rc" 'if .verdict == "routed" then "routed \(.pool) rc=\($rc)" else "\(.verdict) rc=\($rc)" end' <<<"$out" 2>/dev/null ||
		echo "explain failed rc=$rc: $(head -n 1 "$PC_TMP/explain.err")"
}

# expect_route DESCRIPTION HOST PATH SERVICE POOL: the request reaches SERVICE
# and explain names POOL (POOL 404: both say not routed).
expect_route() {
	local what=$1 host=$2 path=$3 service=$4 pool=$5 want_explain
	if [[ $pool == 404 ]]; then want_explain="404 rc=1"; else want_explain="routed $pool rc=0"; fi
	pc_expect "$what: Host $host $path" "$service; explain $want_explain" \
		"$(front "$EDGE" "$path" "Host: $host"); explain $(explain_route edge "$host" "$path")"
}

# member_status POOL MEMBER: as `portcullis status` shows it.
member_status() {
	"$PC_PORTCULLIS" status --admin "$ADMIN" 2>/dev/null |
		jq -r --arg p "$1" --arg m "$2" '.pools[$p].members[$m].status // "missing"' 2>/dev/null || echo unreadable
}

# wait_status POOL MEMBER STATUS SECONDS: until the member shows STATUS.
wait_status() {
	local deadline=$((SECONDS + $4))
	while ((SECONDS < deadline)); do
		[[ $(member_status "$1" "$2") == "$3" ]] && return 0
		sleep 0.2
	done
	return 1
}

routing_checks() {
	# Scenario 3: by Host.
	expect_route "scenario 3" two.example / app2 two
	expect_route "scenario 3" three.example / app3 three
	expect_route "scenario 3, case and port ignored" THREE.Example:80 /two app3 three
	# Scenario 4: by path.
	expect_route "scenario 4" other.test /two app2 two
	expect_route "scenario 4" other.test '/two/x?y=1' app2 two
	expect_route "scenario 4" other.test /three app3 three
	expect_route "scenario 4" other.test /one app1 one
	expect_route "no route" other.test /twofold "http 404" 404
	expect_route "no route" other.test / "http 404" 404

	# What the service saw: Host passed through, forwarding headers set,
	# a client's X-Portcullis-Source removed.
	local echo
	echo=$(front_echo "$EDGE" /two/a "Host: two.example" "X-Portcullis-Source: app1" "X-Forwarded-For: 192.0.2.1")
	pc_expect "upstream sees Host, X-Forwarded-For/-Proto, Forwarded; no X-Portcullis-Source" \
		"host=two.example xff=192.0.2.1, 127.0.0.1 proto=http forwarded=yes source=none" \
		"$(jq -r '
			def h($n): [.headers[]? | select(.[0] | ascii_downcase == $n) | .[1]];
			"host=\(h("host") | join(",")) xff=\(h("x-forwarded-for") | join(",")) proto=\(h("x-forwarded-proto") | join(","))"
			+ " forwarded=\(if (h("forwarded") | join(",") | test("for=127\\.0\\.0\\.1;proto=http")) then "yes" else "no" end)"
			+ " source=\(h("x-portcullis-source") | if length == 0 then "none" else join(",") end)"' <<<"$echo" 2>/dev/null || echo unreadable)"
}

balance_checks() {
	local i out app2=0 app3=0 other=0
	for ((i = 0; i < WEIGHT_REQUESTS; i++)); do
		out=$(front "$LB" /w)
		case $out in
		app2) app2=$((app2 + 1)) ;;
		app3) app3=$((app3 + 1)) ;;
		*) other=$((other + 1)) ;;
		esac
	done
	local want=$((WEIGHT_REQUESTS * 3 / 4)) verdict=outside
	((other == 0 && app2 >= want - WEIGHT_TOLERANCE && app2 <= want + WEIGHT_TOLERANCE)) && verdict=within
	pc_expect "weights 3:1 over $WEIGHT_REQUESTS requests: app2 $want±$WEIGHT_TOLERANCE (saw app2=$app2 app3=$app3 failed=$other)" \
		within "$verdict"
	pc_expect "explain: /w takes the weighted pool" "routed weighted rc=0" "$(explain_route lb x /w)"

	# Hashing: one key always reaches one member; the keys use both members.
	local user first same=yes seen=''
	for user in alice bob carol dave erin frank grace heidi ivan judy; do
		first=$(front "$LB" /h "X-User: $user")
		[[ $first == app2 || $first == app3 ]] || same="no ($user: $first)"
		for ((i = 0; i < 4; i++)); do
			out=$(front "$LB" /h "X-User: $user")
			[[ $out == "$first" ]] || same="no ($user: $first then $out)"
		done
		[[ " $seen " == *" $first "* ]] || seen+=" $first"
	done
	pc_expect "hash on X-User: each key reaches one member every time" yes "$same"
	pc_expect "hash on X-User: 10 keys spread over both members" 2 "$(wc -w <<<"$seen")"
}

health_checks() {
	local i out fails=0 seen=''
	pc_expect "checked pool: app3 healthy before the stop" healthy "$(member_status checked app3:80)"
	pc_log "docker stop $PC_NAME-app3"
	docker stop -t 2 "$PC_NAME-app3" >/dev/null
	local detected=no
	wait_status checked app3:80 unhealthy 20 && detected=yes
	pc_expect "docker stop app3: health checks take it out of rotation" yes "$detected"
	for ((i = 0; i < 20; i++)); do
		out=$(front "$LB" /c)
		[[ $out == app2 ]] || fails=$((fails + 1))
	done
	pc_expect "after detection: 20 GETs, none failed or reached app3" 0 "$fails"

	pc_log "docker start $PC_NAME-app3"
	docker start "$PC_NAME-app3" >/dev/null
	pc_wait_http "http://${PC_IP[app3]}/healthz" 30 || pc_warn "app3 does not answer /healthz after docker start"
	local back=no
	wait_status checked app3:80 healthy 20 && back=yes
	pc_expect "docker start app3: health checks bring it back" yes "$back"
	fails=0
	for ((i = 0; i < 20; i++)); do
		out=$(front "$LB" /c)
		case $out in
		app2 | app3) [[ " $seen " == *" $out "* ]] || seen+=" $out" ;;
		*) fails=$((fails + 1)) ;;
		esac
	done
	pc_expect "after recovery: 20 GETs, none failed, both members serve" "0 failed, 2 members" \
		"$fails failed, $(wc -w <<<"$seen") members"

	# A Docker-resolved member that stops loses its address: out at once.
	pc_log "docker stop $PC_NAME-app2"
	docker stop -t 2 "$PC_NAME-app2" >/dev/null
	detected=no
	wait_status checked app2:80 "no address" 20 && detected=yes
	pc_expect "docker stop app2 (resolved through Docker): its address is withdrawn" yes "$detected"
	fails=0
	for ((i = 0; i < 10; i++)); do
		out=$(front "$LB" /c)
		[[ $out == app3 ]] || fails=$((fails + 1))
	done
	pc_expect "after detection: 10 GETs, none failed or reached app2" 0 "$fails"
	pc_expect "a pool whose only member is gone answers 503" "http 503" "$(front "$EDGE" / "Host: two.example")"
	docker start "$PC_NAME-app2" >/dev/null
	back=no
	wait_status checked app2:80 healthy 30 && back=yes
	pc_expect "docker start app2: back in rotation" yes "$back"

	local alive=exited
	kill -0 "$PC_PORTCULLIS_PID" 2>/dev/null && alive=running
	pc_expect "portcullis still running after the probes" running "$alive"
}

# h2_front PORT TARGET [HEADER]...: an HTTP/2 (prior knowledge) request
# to the frontend, as `STATUS HTTP_VERSION SERVICE MEMBER_SAW_VERSION`.
h2_front() {
	local port=$1 target=$2
	shift 2
	local -a headers=()
	local h out
	for h in "$@"; do headers+=(--header "$h"); done
	out=$(curl -s --http2-prior-knowledge --max-time 20 "${headers[@]}" -o "$PC_TMP/h2.body" \
		-w '%{http_code} %{http_version}' "http://127.0.0.1:$port$target" 2>/dev/null) || out="failed"
	echo "$out $(jq -r '"\(.service) \(.version)"' "$PC_TMP/h2.body" 2>/dev/null || echo "-")"
}

# HTTP/2 clients go through the same pipeline as HTTP/1 ones: to members
# that speak only HTTP/1.1 (testsvc), with routing, and counted by
# least_connections for as long as their exchange lasts.
h2_checks() {
	pc_expect "HTTP/2 client, HTTP/1.1-only member: 200 over h2, the member saw HTTP/1.1" \
		"200 2 app2 HTTP/1.1" "$(h2_front "$EDGE" / "Host: two.example")"
	pc_expect "HTTP/2 client routed by path" "200 2 app3 HTTP/1.1" "$(h2_front "$EDGE" /three/x)"
	pc_expect "HTTP/2 client without a route: 404 on its stream" "404 2" \
		"$(h2_front "$EDGE" /nowhere | cut -d' ' -f1-2)"
	# A slow HTTP/2 exchange holds its member; least_connections sends the
	# requests made meanwhile to the other one.
	curl -s --http2-prior-knowledge --max-time 20 -o "$PC_TMP/slow.body" \
		"http://127.0.0.1:$LB/l/slow?delay_ms=4000" &
	local slow_pid=$! fast="" i slow other
	sleep 1
	for i in 1 2 3 4 5 6 7 8; do fast+="$(h2_front "$LB" /l/fast | cut -d' ' -f3) "; done
	wait "$slow_pid" || true
	slow=$(jq -r .service "$PC_TMP/slow.body" 2>/dev/null || echo none)
	other=app2
	[[ $slow == app2 ]] && other=app3
	pc_expect "least_connections over HTTP/2: while $slow holds a slow exchange, 8 requests go to $other" \
		"$(for i in 1 2 3 4 5 6 7 8; do printf '%s ' "$other"; done)" "$fast"
}

start_portcullis() {
	local proxy admin_port
	pc_free_port EDGE
	pc_free_port LB
	pc_free_port proxy
	pc_free_port admin_port
	ADMIN=127.0.0.1:$admin_port
	RULES=$PC_TMP/rules.json
	pc_render_rules "$TEMPLATE" "$RULES" \
		APP1_ADDRESS="${PC_IP[app1]}" APP2_DOCKER="$PC_NAME-app2" APP3_ADDRESS="${PC_IP[app3]}" \
		EDGE_LISTEN="127.0.0.1:$EDGE" LB_LISTEN="127.0.0.1:$LB" PROXY_PORT="$proxy" ADMIN_ADDRESS="$ADMIN"
	pc_portcullis_start "$RULES" "$ADMIN"
}

main() {
	pc_lab_setup all
	start_portcullis
	routing_checks
	balance_checks
	h2_checks
	health_checks
	pc_summary
}

main "$@"
