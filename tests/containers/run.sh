#!/usr/bin/env bash
# The three-container test (spec/scenarios.md, scenarios 1 and 2): app1, app2,
# app3 on their own Docker network, `portcullis run` on the host with the
# example rules, and probes sent from inside the containers. Each probe is also
# put to `portcullis explain`, whose verdict must agree with what happened.
#
# Env: HARNESS_UNTIL=lab (stop once the lab is up and verified, no portcullis),
#      PORTCULLIS_BIN, TESTSVC_BIN (prebuilt binaries), PROBE_TIMEOUT_MS (default 2000).
# Prints one PASS/FAIL line per check and ends with `N passed, M failed`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/containers/lib.sh
source "$HERE/lib.sh"

UNTIL=${HARNESS_UNTIL:-all}
PROBE_TIMEOUT_MS=${PROBE_TIMEOUT_MS:-2000}
TEMPLATE=$HERE/rules/three-containers.json.tmpl
RULES=''
WATCHED='' # the file the daemon runs on and watches
LIVE_STOP=''
LIVE_SEEN=''
ALLOWED_TO_APP1=0

# === what a probe saw, as one comparable phrase ===

# For an HTTP probe: `reached SERVICE source=X-Portcullis-Source values|none`,
# `403 one-line`, `http STATUS`, `timeout`, `refused`, `reset`, `error: ...`.
seen_http() {
	jq -r '
		def sources: [.headers[]? | select(.[0] | ascii_downcase == "x-portcullis-source") | .[1]]
			| if length == 0 then "none" else join(",") end;
		if .result == "http" then
			(.body | try fromjson catch null) as $echo
			| if .status == 200 and ($echo | type) == "object" and ($echo.service | type) == "string"
				then "reached \($echo.service) source=\($echo | sources)"
			elif .status == 403 then
				"403 " + (.body | rtrimstr("\n") | if . == "" then "empty" elif contains("\n") then "multi-line" else "one-line" end)
			else "http \(.status)" end
		elif .result == "error" then "error: \(.error)"
		else .result end' <<<"$1" 2>/dev/null || echo "unparsable output: ${1:-none}"
}

# For a UDP probe: `reached SERVICE` or the result.
seen_udp() {
	jq -r 'if .result == "reply" then "reached " + (.body | split(":")[0]) else .result end' <<<"$1" 2>/dev/null ||
		echo "unparsable output: ${1:-none}"
}

# explain_verdict FROM PORT PROTO [METHOD TARGET HEADER...]: `VERDICT/LAYER rc=N`.
explain_verdict() {
	local from=$1 port=$2 proto=$3
	shift 3
	local -a args=(explain "$RULES" --from "$from" --to "app1:$port" --proto "$proto" --json)
	if (($# > 0)); then
		args+=(--method "$1" --path "$2")
		shift 2
		local h
		for h in "$@"; do args+=(--header "$h"); done
	fi
	local out rc=0
	out=$("$PC_PORTCULLIS" "${args[@]}" 2>"$PC_TMP/explain.err") || rc=$?
	jq -r --arg rc "$rc" '"\(.verdict)/\(.layer) rc=\($rc)"' <<<"$out" 2>/dev/null ||
		echo "explain failed rc=$rc: $(head -n 1 "$PC_TMP/explain.err")"
}

# The phrases an outcome must produce: allow | deny (403 from the proxy) | drop (kernel).
want_seen() {
	case $1 in
	allow) echo "reached app1 source=$2" ;;
	deny) echo "403 one-line" ;;
	drop) echo timeout ;;
	esac
}
want_explain() {
	case $1 in
	allow) echo "allow rc=0" ;;
	deny) echo "deny/proxy rc=1" ;;
	drop) echo "deny/nftables rc=1" ;;
	esac
}
# An allowed verdict is compared without its layer.
explain_phrase() {
	if [[ $1 == allow/* ]]; then echo "allow ${1#* }"; else echo "$1"; fi
}

# === checks ===

# expect_http FROM PORT METHOD TARGET OUTCOME [HEADER]...
# An allowed request must reach app1, which sees `X-Portcullis-Source: FROM` only.
expect_http() {
	local from=$1 port=$2 method=$3 target=$4 outcome=$5
	shift 5
	local -a headers=()
	local h
	for h in "$@"; do headers+=(--header "$h"); done
	local out seen explain
	out=$(pc_probe_in "$from" --timeout-ms "$PROBE_TIMEOUT_MS" --method "$method" "${headers[@]}" \
		"http://${PC_IP[app1]}:$port$target")
	seen=$(seen_http "$out")
	explain=$(explain_phrase "$(explain_verdict "$from" "$port" tcp "$method" "$target" "$@")")
	[[ $outcome == allow ]] && ALLOWED_TO_APP1=$((ALLOWED_TO_APP1 + 1))
	pc_expect "$outcome $from->app1 tcp/$port $method $target${*:+ [$*]}" \
		"$(want_seen "$outcome" "$from"); explain $(want_explain "$outcome")" "$seen; explain $explain"
}

# expect_udp FROM PORT OUTCOME (allow | drop)
expect_udp() {
	local from=$1 port=$2 outcome=$3 seen explain want=timeout
	[[ $outcome == allow ]] && want="reached app1"
	seen=$(seen_udp "$(pc_udp_probe_in "$from" --timeout-ms "$PROBE_TIMEOUT_MS" "${PC_IP[app1]}:$port")")
	explain=$(explain_phrase "$(explain_verdict "$from" "$port" udp)")
	[[ $outcome == allow ]] && ALLOWED_TO_APP1=$((ALLOWED_TO_APP1 + 1))
	pc_expect "$outcome $from->app1 udp/$port" "$want; explain $(want_explain "$outcome")" "$seen; explain $explain"
}

# Before portcullis: every path the firewall checks use must work, or a drop
# seen later would prove nothing.
lab_checks() {
	local failed_before=$PC_FAILED app
	for app in app2 app3; do
		pc_expect "lab: $app->app1 tcp/80 GET /foo" "reached app1 source=none" \
			"$(seen_http "$(pc_probe_in "$app" --timeout-ms "$PROBE_TIMEOUT_MS" "http://${PC_IP[app1]}/foo")")"
	done
	pc_expect "lab: app3->app1 tcp/8080 GET /" "reached app1 source=none" \
		"$(seen_http "$(pc_probe_in app3 --timeout-ms "$PROBE_TIMEOUT_MS" "http://${PC_IP[app1]}:8080/")")"
	pc_expect "lab: app3->app1 udp/5353" "reached app1" \
		"$(seen_udp "$(pc_udp_probe_in app3 --timeout-ms "$PROBE_TIMEOUT_MS" "${PC_IP[app1]}:5353")")"
	pc_expect "lab: app1->app2 tcp/8080 (by name in the Host header)" "reached app2 source=none" \
		"$(seen_http "$(pc_probe_in app1 --connect "${PC_IP[app2]}:8080" "http://app2.example:8080/x")")"
	if ((PC_FAILED > failed_before)); then
		pc_summary || true
		pc_die "the lab network does not pass traffic between containers without portcullis (iptables FORWARD policy? other nftables rules on 198.19.0.0/16?)"
	fi
}

firewall_checks() {
	local before after
	before=$(pc_counter app1)

	# Scenario 1: app3 has no access to app1 at all.
	expect_http app3 80 GET /foo drop
	expect_http app3 8080 GET /foo drop
	expect_udp app3 5353 drop

	# Scenario 2: app2 reaches app1 only on port 80 with GET /foo... or PUT /bar + X-Bar: bar.
	expect_http app2 80 GET /foo allow
	expect_http app2 80 GET '/foo/x?y=1' allow
	expect_http app2 80 PUT /bar allow 'X-Bar: bar'
	# app1 is cached (scenario 5, cache.sh): no-cache makes this repeat of GET /foo
	# reach app1, so that app1 itself shows the spoofed header was replaced.
	expect_http app2 80 GET /foo allow 'X-Portcullis-Source: app3' 'Cache-Control: no-cache'
	expect_http app2 80 POST /foo deny
	expect_http app2 80 GET /bar deny
	expect_http app2 80 PUT /bar deny
	expect_http app2 80 PUT /bar deny 'X-Bar: baz'
	expect_http app2 80 GET /foobar deny
	expect_http app2 80 GET /foo/../admin deny
	expect_http app2 8080 GET /foo drop
	expect_udp app2 5353 drop

	after=$(pc_counter app1)
	local rose=unreadable
	[[ $before =~ ^[0-9]+$ && $after =~ ^[0-9]+$ ]] && rose=$((after - before))
	pc_expect "app1: its counter rose by the allowed requests only" "$ALLOWED_TO_APP1" "$rose"

	local drops=none listing
	listing=$(nft list table "${PC_NFT_TABLE[@]}" 2>&1 || true)
	grep -qE 'counter packets [1-9][0-9]* bytes [0-9]+ .*drop' <<<"$listing" && drops=non-zero
	[[ $drops == none ]] && printf '%s\n' "$listing" >&2
	pc_expect "kernel: a drop rule in ${PC_NFT_TABLE[*]} counted packets" non-zero "$drops"

	# The same drops per pair of containers (the drops4 set's element
	# counters on /metrics), and each logged through NFLOG (log_drops) as a
	# line naming both containers and the port.
	local pair
	pair=$(pc_metric "$ADMIN" 'kernel_pair_drops_total{source="app3",destination="app1"}')
	[[ $pair =~ ^[1-9][0-9]*$ ]] && pair=non-zero
	pc_expect "kernel: app3->app1 drops counted for that pair" non-zero "$pair"
	pc_expect "kernel: no drops counted for app1->app3 (none tried)" absent \
		"$(pc_metric "$ADMIN" 'kernel_pair_drops_total{source="app1",destination="app3"}')"
	local logged
	logged=$(grep -F 'kernel dropped a packet between managed containers' "$PC_TMP/portcullis.log" |
		grep -F '"source":"app3","destination":"app1"' | grep -cF '"destination_port":8080' || true)
	[[ $logged =~ ^[1-9][0-9]*$ ]] && logged=logged
	pc_expect "kernel: the dropped app3->app1 tcp/8080 SYN logged (log_drops)" logged "$logged"

	local alive=exited
	kill -0 "$PC_PORTCULLIS_PID" 2>/dev/null && alive=running
	pc_expect "portcullis still running after the probes" running "$alive"
}

# The kernel ruleset without counter values (they move with traffic).
ruleset_shape() {
	nft list table "${PC_NFT_TABLE[@]}" 2>/dev/null | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
}

# delta AFTER BEFORE: AFTER - BEFORE, or why it cannot be computed.
delta() {
	if [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]]; then echo $(($1 - $2)); else echo "unreadable ($2 -> $1)"; fi
}

# How many log lines of the daemon contain TEXT.
log_count() { grep -c -- "$1" "$PC_TMP/portcullis.log" || true; }

# Replaces the watched rule file by FILE through a rename, as deployment
# tools do: one change of the file, one reload.
replace_rules() {
	cp "$1" "$WATCHED.tmp"
	mv "$WATCHED.tmp" "$WATCHED"
}

# wait_metric NAME VALUE: until portcullis_NAME reaches VALUE (5 s at most).
wait_metric() {
	local v i
	for ((i = 0; i < 100; i++)); do
		v=$(pc_metric "$ADMIN" "$1")
		[[ $v =~ ^[0-9]+$ ]] && ((v >= $2)) && return 0
		sleep 0.05
	done
	return 1
}

# A rule file with a mistake: `check` names file:line:col and exits 1; the
# running daemon refuses the reload and nothing changes, in the kernel or
# in the proxy. The refusal is counted once (reload_failures_total), logged
# once ("reload refused"), and shown by `status` with its time until a later
# good reload clears it.
bad_rules_checks() {
	local good=$PC_TMP/rules.good.json before after rc=0 msg
	cp "$RULES" "$good"
	before=$(ruleset_shape)
	sed 's/"ports": \[80\]/"ports": [80], "protocl": "tcp"/' "$good" >"$PC_TMP/rules.bad.json"
	msg=$("$PC_PORTCULLIS" check "$PC_TMP/rules.bad.json" 2>&1) || rc=$?
	pc_expect "check: a misspelt field is one sentence with file:line:col, exit 1" \
		"rc=1 position=yes lines=1" \
		"rc=$rc position=$([[ $msg =~ rules\.bad\.json:[0-9]+:[0-9]+:\ unknown\ field ]] && echo yes || echo no) lines=$(wc -l <<<"$msg")"
	local fails0 refused0 status
	fails0=$(pc_metric "$ADMIN" reload_failures_total)
	refused0=$(log_count 'reload refused')
	replace_rules "$PC_TMP/rules.bad.json"
	RULES=$good # explain answers from the rules still in force
	wait_metric reload_failures_total $((fails0 + 1)) || true
	sleep 1 # a second refusal of the same change would show by now
	pc_expect "reload of a bad file: reload_failures_total rose by exactly 1" 1 \
		"$(delta "$(pc_metric "$ADMIN" reload_failures_total)" "$fails0")"
	pc_expect "reload of a bad file: exactly one 'reload refused' log line" 1 \
		"$(delta "$(log_count 'reload refused')" "$refused0")"
	status=$("$PC_PORTCULLIS" status --admin "$ADMIN")
	pc_expect "status: the refused reload is shown with its error and time" "unknown field, at yes" \
		"$(jq -r '.reload.last_error | if . == null then "none" else
			"\(if (.error | test("unknown field")) then "unknown field" else .error end), at \(if .at_unix > 0 and (.at | endswith("GMT")) then "yes" else "no" end)" end' <<<"$status")"
	# `portcullis reload` (the unit's ExecReload) is answered with the refusal.
	rc=0
	msg=$("$PC_PORTCULLIS" reload --admin "$ADMIN" 2>&1) || rc=$?
	pc_expect "portcullis reload of the bad file: exit 1, 'reload refused' with the reason" "rc=1 refused" \
		"rc=$rc $([[ $msg == *'reload refused'*'unknown field'* ]] && echo refused || echo "said: $msg")"
	pc_expect "reload_failures_total counts the second refusal too" 2 \
		"$(delta "$(pc_metric "$ADMIN" reload_failures_total)" "$fails0")"
	after=$(ruleset_shape)
	pc_expect "reload of a bad rule file changes nothing in nftables" same \
		"$([[ -n $before && $before == "$after" ]] && echo same || echo changed)"
	expect_http app2 80 GET /foo allow
	expect_http app2 80 POST /foo deny
	local alive=exited
	kill -0 "$PC_PORTCULLIS_PID" 2>/dev/null && alive=running
	pc_expect "portcullis kept running on its previous rules" running "$alive"

	local oks0
	oks0=$(pc_metric "$ADMIN" reloads_total)
	replace_rules "$good"
	RULES=$WATCHED
	wait_metric reloads_total $((oks0 + 1)) || true
	status=$("$PC_PORTCULLIS" status --admin "$ADMIN")
	pc_expect "status: a later good reload clears the refused one" "null applied" \
		"$(jq -r '"\(.reload.last_error) \(if (.reload.last_applied.at_unix // 0) > 0 then "applied" else "no last_applied" end)"' <<<"$status")"
}

# Same-bridge traffic reaches nftables only with br_netfilter and both
# bridge-nf-call sysctls at 1. The lab sets them (pc_ensure_bridge_netfilter)
# and the daemon reports enforcement; with one turned off, the next reload
# reports it NOT enforced (status, metric, ERROR line) instead of claiming
# it, and reports it enforced again once it is back.
bridge_checks() {
	local key=net.bridge.bridge-nf-call-ip6tables status rc=0
	status=$("$PC_PORTCULLIS" status --admin "$ADMIN")
	pc_expect "status: same-bridge traffic enforced (br_netfilter on), metric 1" "true 1" \
		"$(jq -r .bridge_netfilter.enforced <<<"$status") $(pc_metric "$ADMIN" bridge_netfilter_ok)"
	PC_BRIDGE_RESTORE=$key
	sysctl -qw "$key=0"
	"$PC_PORTCULLIS" reload --admin "$ADMIN" >/dev/null || rc=$?
	status=$("$PC_PORTCULLIS" status --admin "$ADMIN")
	pc_expect "$key=0: the reload applies, status says NOT enforced and why, metric 0" "rc=0 false named 0" \
		"rc=$rc $(jq -r '"\(.bridge_netfilter.enforced) \(if (.bridge_netfilter.detail | test("^same-bridge traffic NOT enforced: .*bridge-nf-call-ip6tables is 0")) then "named" else .bridge_netfilter.detail end)"' <<<"$status") $(pc_metric "$ADMIN" bridge_netfilter_ok)"
	pc_expect "$key=0: an ERROR log line says so" yes \
		"$(grep -q 'same-bridge traffic NOT enforced' "$PC_TMP/portcullis.log" && echo yes || echo no)"
	sysctl -qw "$key=1"
	PC_BRIDGE_RESTORE=''
	rc=0
	"$PC_PORTCULLIS" reload --admin "$ADMIN" >/dev/null || rc=$?
	status=$("$PC_PORTCULLIS" status --admin "$ADMIN")
	pc_expect "$key=1 again: the next reload reports enforcement" "rc=0 true 1" \
		"rc=$rc $(jq -r .bridge_netfilter.enforced <<<"$status") $(pc_metric "$ADMIN" bridge_netfilter_ok)"
}

# live_client ID: GET /foo?live=ID-N from app2 to app1 until $LIVE_STOP
# exists (10 at least), each query unique so the cache never answers: every
# request must reach app1 itself. One phrase per request in $LIVE_SEEN.
live_client() {
	local n=0
	while [[ ! -e $LIVE_STOP ]] || ((n < 10)); do
		n=$((n + 1))
		seen_http "$(pc_probe_in app2 --timeout-ms "$PROBE_TIMEOUT_MS" \
			"http://${PC_IP[app1]}/foo?live=$1-$n-$PC_RUN_ID")" >>"$LIVE_SEEN"
	done
}

# 20 reloads under concurrent load: two clients in app2 stream uncached
# requests through the proxy to app1 while the rule file alternates between
# two valid versions that both allow them (one adds GET /qux, the other GET
# /baz). No request fails, app1's own counter rises by exactly the number of
# requests (the upstream served every one, not the cache), every reload is
# applied, none refused, and the last file is the one in force.
live_reload_checks() {
	local base=$PC_TMP/rules.base.json i
	cp "$RULES" "$base"
	local foo='{ "methods": \["GET"\], "path_prefix": "/foo" }'
	sed "s|$foo|&, { \"methods\": [\"GET\"], \"path\": \"/qux\" }|" "$base" >"$PC_TMP/rules.qux.json"
	sed "s|$foo|&, { \"methods\": [\"GET\"], \"path\": \"/baz\" }|" "$base" >"$PC_TMP/rules.baz.json"
	grep -q '"/qux"' "$PC_TMP/rules.qux.json" && grep -q '"/baz"' "$PC_TMP/rules.baz.json" ||
		pc_die "the live reload rule files were not derived from $base"
	local reloads0 fails0 before after reloaded=0
	reloads0=$(pc_metric "$ADMIN" reloads_total)
	fails0=$(pc_metric "$ADMIN" reload_failures_total)
	before=$(pc_counter app1)
	LIVE_STOP=$PC_TMP/live.stop
	LIVE_SEEN=$PC_TMP/live.seen
	rm -f "$LIVE_STOP"
	: >"$LIVE_SEEN"
	live_client a &
	local client_a=$!
	live_client b &
	local client_b=$!
	sleep 0.5
	for ((i = 1; i <= 20; i++)); do
		if ((i % 2)); then replace_rules "$PC_TMP/rules.qux.json"; else replace_rules "$PC_TMP/rules.baz.json"; fi
		wait_metric reloads_total $((reloads0 + i)) && reloaded=$i
		sleep 0.2
	done
	touch "$LIVE_STOP"
	wait "$client_a" "$client_b"
	sleep 1 # a late extra reload would show by now
	after=$(pc_counter app1)
	local total
	total=$(wc -l <"$LIVE_SEEN")
	ALLOWED_TO_APP1=$((ALLOWED_TO_APP1 + total))
	pc_log "live reload: $total requests during 20 reloads"
	pc_expect "reload under load: every request reached app1 (none failed)" \
		"$total x reached app1 source=app2" "$(sort "$LIVE_SEEN" | uniq -c | awk '{c=$1; $1=""; printf "%s%s x%s", sep, c, $0; sep=", "}')"
	pc_expect "reload under load: app1's counter rose by the $total requests (no cache hit)" "$total" \
		"$(delta "$after" "$before")"
	pc_expect "reload under load: 20 file changes, 20 reloads applied, none refused" "20 20 0" \
		"$reloaded $(delta "$(pc_metric "$ADMIN" reloads_total)" "$reloads0") $(delta "$(pc_metric "$ADMIN" reload_failures_total)" "$fails0")"
	expect_http app2 80 GET /baz allow
	expect_http app2 80 GET /qux deny
}

# {"docker": NAME} containers are followed through the engine's event
# stream: app2 moves to a new address and the rules follow it (kernel sets
# and proxy) within a second, with no restart; a stopped container is
# reported as unresolved (status, metric), and placed again when it starts.
docker_follow_checks() {
	local old=${PC_IP[app2]} new=$PC_PREFIX.9 seen=old start elapsed_ms
	docker network disconnect "$PC_NAME" "$PC_NAME-app2" >/dev/null
	start=$(date +%s%N)
	docker network connect --ip "$new" "$PC_NAME" "$PC_NAME-app2" >/dev/null
	while (($(date +%s%N) - start < 5000000000)); do
		if nft list set "${PC_NFT_TABLE[@]}" managed4 2>/dev/null | grep -qF "$new "; then
			seen=new
			break
		fi
		sleep 0.02
	done
	elapsed_ms=$((($(date +%s%N) - start) / 1000000))
	nft list set "${PC_NFT_TABLE[@]}" managed4 2>/dev/null | grep -qF "$old " && seen="$seen+old"
	pc_expect "docker: app2 moved $old -> $new, the kernel sets follow" new "$seen"
	pc_log "docker: the move was enforced ${elapsed_ms} ms after docker network connect began"
	pc_expect "docker: the move is enforced within 1 s of the change" yes "$( ((elapsed_ms <= 1000)) && echo yes || echo "no (${elapsed_ms} ms)")"
	PC_IP[app2]=$new
	expect_http app2 80 GET /foo allow
	expect_http app2 80 POST /foo deny
	expect_http app2 8080 GET /foo drop

	local status
	status=$("$PC_PORTCULLIS" status --admin "$ADMIN")
	pc_expect "status: the Docker engine is up, nothing unresolved" "true []" \
		"$(jq -c '[.docker.engine_up, .docker.unresolved] | "\(.[0]) \(.[1])"' -r <<<"$status")"
	docker stop -t 1 "$PC_NAME-app2" >/dev/null
	local unresolved=''
	for _ in $(seq 1 50); do
		unresolved=$("$PC_PORTCULLIS" status --admin "$ADMIN" | jq -c -r '.docker.unresolved')
		[[ $unresolved == '["app2"]' ]] && break
		sleep 0.1
	done
	pc_expect "status: a stopped Docker container is reported unresolved" '["app2"]' "$unresolved"
	pc_expect "metrics: docker_unresolved_containers counts it" 1 \
		"$(pc_probe "http://$ADMIN/metrics" | jq -r .body | awk '$1 == "portcullis_docker_unresolved_containers" {print $2}')"
	nft list set "${PC_NFT_TABLE[@]}" managed4 2>/dev/null | grep -qF "$new " && seen=kept || seen=gone
	pc_expect "docker: the stopped container's address left the kernel sets" gone "$seen"
	grep -q 'docker containers without a known address' "$PC_TMP/portcullis.log" && seen=logged || seen=silent
	pc_expect "log: the unresolved container is a logged warning" logged "$seen"
	docker start "$PC_NAME-app2" >/dev/null
	for _ in $(seq 1 50); do
		unresolved=$("$PC_PORTCULLIS" status --admin "$ADMIN" | jq -c -r '.docker.unresolved')
		[[ $unresolved == '[]' ]] && break
		sleep 0.1
	done
	pc_expect "docker: started again, app2 is placed again" '[]' "$unresolved"
	PC_IP[app2]=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$PC_NAME\").IPAddress}}" "$PC_NAME-app2")
	pc_wait_http "http://${PC_IP[app2]}/healthz" 15 || pc_warn "app2 does not answer after its restart"
	expect_http app2 80 GET /foo allow
}

# kill -9 of the daemon: its rules stay in the kernel (fail closed). The
# redirected flow finds no proxy and reaches nothing, the dropped flows stay
# dropped. A new daemon then takes the table over in one transaction: the
# table is never absent meanwhile, and enforcement is as before.
crash_checks() {
	local before seen gaps=$PC_TMP/table-gaps
	before=$(pc_counter app1)
	kill -KILL -- "-$PC_PORTCULLIS_PID" 2>/dev/null
	# Its status is 137 (killed), which is the point.
	wait "$PC_PORTCULLIS_PID" 2>/dev/null || true
	PC_PORTCULLIS_PID=''
	nft list table "${PC_NFT_TABLE[@]}" >/dev/null 2>&1 && seen=kept || seen=gone
	pc_expect "kill -9: table ${PC_NFT_TABLE[*]} stays in the kernel" kept "$seen"
	seen=$(seen_http "$(pc_probe_in app2 --timeout-ms "$PROBE_TIMEOUT_MS" "http://${PC_IP[app1]}/foo")")
	pc_log "kill -9: app2->app1:80 GET /foo gave: $seen"
	[[ $seen == reached* ]] && seen="reached app1" || seen="not reached"
	pc_expect "kill -9: the redirected flow app2->app1:80 is refused, not let through" "not reached" "$seen"
	expect_http app3 80 GET /foo drop
	expect_http app2 8080 GET /foo drop
	pc_expect "kill -9: nothing reached app1 while the daemon was gone" "$before" "$(pc_counter app1)"

	# Watch for the table being absent while the new daemon installs its own.
	: >"$gaps"
	(while :; do nft list table "${PC_NFT_TABLE[@]}" >/dev/null 2>&1 || echo gap >>"$gaps"; sleep 0.01; done) &
	local watcher=$!
	setsid "$PC_PORTCULLIS" run "$RULES" >>"$PC_TMP/portcullis.log" 2>&1 </dev/null &
	PC_PORTCULLIS_PID=$!
	pc_wait_http "http://$ADMIN/healthz" 30 || pc_die "the restarted portcullis did not answer /healthz"
	kill "$watcher" 2>/dev/null
	wait "$watcher" 2>/dev/null || true
	pc_expect "restart: the table was never absent while the new daemon took over" 0 "$(wc -l <"$gaps")"
	expect_http app2 80 GET /foo allow
	expect_http app2 80 POST /foo deny
	expect_http app3 80 GET /foo drop
}

start_portcullis() {
	local frontend proxy admin_port
	pc_free_port frontend
	pc_free_port proxy
	pc_free_port admin_port
	RULES=$PC_TMP/rules.json
	WATCHED=$RULES
	pc_render_rules "$TEMPLATE" "$RULES" \
		APP1_ADDRESS="${PC_IP[app1]}" APP2_DOCKER="$PC_NAME-app2" APP3_ADDRESS="${PC_IP[app3]}" \
		FRONTEND_LISTEN="127.0.0.1:$frontend" PROXY_PORT="$proxy" ADMIN_ADDRESS="127.0.0.1:$admin_port"
	ADMIN=127.0.0.1:$admin_port
	pc_portcullis_start "$RULES" "$ADMIN"
}

main() {
	case $UNTIL in
	lab | all) ;;
	*) pc_die "HARNESS_UNTIL must be 'lab' or 'all', not '$UNTIL'" ;;
	esac
	pc_lab_setup "$UNTIL"
	lab_checks
	if [[ $UNTIL == all ]]; then
		start_portcullis
		firewall_checks
		bad_rules_checks
		bridge_checks
		docker_follow_checks
		live_reload_checks
		crash_checks
	fi
	pc_summary
}

main "$@"
