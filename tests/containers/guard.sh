#!/usr/bin/env bash
# Guarded Docker networks, by name (issue 11), against real containers: the
# lab's network pc-<runid> is guarded as {"docker_network": "pc-<runid>"},
# and a container the rule file does not know (the stranger) is started on
# it. Portcullis resolves the name to the network's subnet through the
# Engine API and installs the guard for it, so:
#   - the stranger cannot reach a managed container, nor a managed one it;
#   - managed-to-managed traffic is decided by the access rules as before;
#   - `status`, /metrics, the log and the kernel ruleset show the network
#     resolved, and a guarded name that does not exist yet as unresolved;
#   - creating and removing that network is followed through Docker events;
#   - a reload that names the stranger places it (allowed again by its rules).
# Probes are sent from inside the containers and assert what the service saw
# (who answered, and from which address) or that nothing answered.
#
# Env: PORTCULLIS_BIN, TESTSVC_BIN (prebuilt binaries), PROBE_TIMEOUT_MS (default 2000), PC_RUN_ID.
# Prints one PASS/FAIL line per check and ends with `N passed, M failed`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/containers/lib.sh
source "$HERE/lib.sh"

PROBE_TIMEOUT_MS=${PROBE_TIMEOUT_MS:-2000}
TEMPLATE=$HERE/rules/guard.json.tmpl
RULES=''
STRANGER='' # the stranger's address: on the guarded network, in no rule
LATER=''    # a guarded network name that does not exist when portcullis starts

# seen FROM URL [PROBE OPTION]...: what a request from inside container FROM reached.
seen() {
	local from=$1 url=$2
	shift 2
	pc_seen "$(pc_probe_in "$from" --timeout-ms "$PROBE_TIMEOUT_MS" "$@" "$url")"
}

# What `portcullis status` says of the guarded networks, as one line:
# `NETWORKS UNRESOLVED` (compact JSON).
guard_status() {
	pc_status | jq -c -r '"\(.docker.networks) \(.docker.unresolved_networks)"'
}

# wait_guard_status WANT: until guard_status is WANT (5 s at most); prints the
# last one seen.
wait_guard_status() {
	local seen='' i
	for ((i = 0; i < 50; i++)); do
		seen=$(guard_status)
		[[ $seen == "$1" ]] && break
		sleep 0.1
	done
	printf '%s\n' "$seen"
}

# guard_rules NET: how many rules of the forward chain guard NET.
guard_rules() {
	nft list chain "${PC_NFT_TABLE[@]}" forward 2>/dev/null | grep -cF " in $1 guard.networks[" || true
}

# guard_counted DIRECTION: packets counted by the guard rule of the lab network
# for DIRECTION (`unplaced -> managed` or `managed -> unplaced`).
guard_counted() {
	nft list chain "${PC_NFT_TABLE[@]}" forward 2>/dev/null |
		grep -F "guard deny $1 in $PC_PREFIX.0/24" |
		sed -nE 's/.*counter packets ([0-9]+) .*/\1/p' | head -n 1
}

# Before portcullis: the stranger and the containers reach each other, or a
# drop seen later would prove nothing.
lab_checks() {
	local failed_before=$PC_FAILED
	STRANGER=$PC_PREFIX.20
	docker run -d --name "$PC_NAME-stranger" --hostname stranger --network "$PC_NAME" --ip "$STRANGER" \
		--label "portcullis.test=$PC_RUN_ID" "$PC_IMAGE" serve --name stranger --http 80 --http 8080 >/dev/null ||
		pc_die "cannot start the stranger container"
	pc_wait_http "http://$STRANGER/healthz" 30 || pc_die "the stranger ($STRANGER) does not answer /healthz"
	pc_expect "lab: stranger->app1 tcp/8080" "app1 from $STRANGER" "$(seen stranger "http://${PC_IP[app1]}:8080/")"
	pc_expect "lab: app1->stranger tcp/8080" "stranger from ${PC_IP[app1]}" "$(seen app1 "http://$STRANGER:8080/")"
	pc_expect "lab: app3->app1 tcp/8080" "app1 from ${PC_IP[app3]}" "$(seen app3 "http://${PC_IP[app1]}:8080/")"
	((PC_FAILED == failed_before)) ||
		pc_die "the lab network does not pass traffic between containers without portcullis"
}

start_portcullis() {
	local proxy admin_port
	pc_free_port proxy
	pc_free_port admin_port
	LATER=$PC_NAME-later
	RULES=$PC_TMP/rules.json
	pc_render_rules "$TEMPLATE" "$RULES" \
		LAB_NETWORK="$PC_NAME" LATER_NETWORK="$LATER" \
		APP1_ADDRESS="${PC_IP[app1]}" APP2_DOCKER="$PC_NAME-app2" APP3_ADDRESS="${PC_IP[app3]}" \
		PROXY_PORT="$proxy" ADMIN_ADDRESS="127.0.0.1:$admin_port"
	pc_portcullis_start "$RULES" "127.0.0.1:$admin_port"
}

# At start the name is resolved to the network's subnet; the name that does
# not exist is unresolved, and said to be (status, metric, log).
resolved_checks() {
	pc_expect "status: the lab network resolved to its subnet, the later one unresolved" \
		"{\"$PC_NAME\":[\"$PC_PREFIX.0/24\"],\"$LATER\":[]} [\"$LATER\"]" "$(guard_status)"
	pc_expect "metrics: docker_unresolved_networks counts the unresolved name" 1 \
		"$(pc_metric "$PC_ADMIN" docker_unresolved_networks)"
	pc_expect "log: the unresolved name is a warning naming it" yes \
		"$(grep 'guarded docker networks without a known subnet' "$PC_TMP/portcullis.log" | grep -qF "$LATER" && echo yes || echo no)"
	pc_expect "kernel: two guard rules for $PC_PREFIX.0/24, naming the network" "2 named" \
		"$(guard_rules "$PC_PREFIX.0/24") $(nft list chain "${PC_NFT_TABLE[@]}" forward | grep -qF "docker network $PC_NAME\"" && echo named || echo unnamed)"
}

# The stranger is cut off from managed containers both ways; managed pairs
# are decided by their access entries as before.
guard_checks() {
	local in0 out0
	in0=$(guard_counted 'unplaced -> managed')
	out0=$(guard_counted 'managed -> unplaced')
	pc_expect "stranger->app1 tcp/8080 is dropped" timeout "$(seen stranger "http://${PC_IP[app1]}:8080/")"
	pc_expect "stranger->app1 tcp/80 GET /foo is dropped (never proxied)" timeout \
		"$(seen stranger "http://${PC_IP[app1]}/foo")"
	pc_expect "app1->stranger tcp/8080 is dropped" timeout "$(seen app1 "http://$STRANGER:8080/")"
	pc_expect "app2 (Docker-resolved)->stranger tcp/80 is dropped" timeout "$(seen app2 "http://$STRANGER/")"
	pc_expect "kernel: the guard rules counted both directions" "more more" \
		"$([[ $(guard_counted 'unplaced -> managed') -gt ${in0:-0} ]] && echo more || echo same) $([[ $(guard_counted 'managed -> unplaced') -gt ${out0:-0} ]] && echo more || echo same)"

	pc_expect "app3->app1 tcp/8080 (allowed at L4) still passes" "app1 from ${PC_IP[app3]}" \
		"$(seen app3 "http://${PC_IP[app1]}:8080/")"
	# The proxy connects to app1 from the host (the network's gateway).
	pc_expect "app2->app1 tcp/80 GET /foo (allowed HTTP) still passes, through the proxy" \
		"app1 from $PC_PREFIX.1 via portcullis as app2" "$(seen app2 "http://${PC_IP[app1]}/foo")"
	pc_expect "app2->app1 tcp/80 POST /foo is still refused by the proxy" "http 403" \
		"$(seen app2 "http://${PC_IP[app1]}/foo" --method POST)"
	pc_expect "app3->app1 tcp/80 (no entry) is still dropped" timeout "$(seen app3 "http://${PC_IP[app1]}/foo")"

	# explain asks the engine for the named network's subnets.
	local explain rc=0
	explain=$("$PC_PORTCULLIS" explain "$RULES" --from "$STRANGER" --to app1:8080 --json 2>"$PC_TMP/explain.err") || rc=$?
	explain=$(jq -r --arg rc "$rc" --arg net "$PC_PREFIX.0/24 (Docker network $PC_NAME)" \
		'"\(.verdict) \(.layer) \(.rule_position.path) rc=\($rc) \(if (.reason | contains("in guarded network " + $net)) then "names the network" else .reason end)"' \
		<<<"$explain" 2>/dev/null) || explain="explain failed rc=$rc: $(head -n 1 "$PC_TMP/explain.err")"
	pc_expect "explain: the stranger is denied by the named network's resolved subnet" \
		"deny nftables guard.networks[0] rc=1 names the network" "$explain"
}

# The engine's events: a guarded name that comes into existence is resolved
# and guarded, and unresolved again when the network is removed.
events_checks() {
	local later_prefix start elapsed_ms seen
	start=$(date +%s%N)
	pc_network_create "$LATER" later_prefix
	seen=$(wait_guard_status "{\"$PC_NAME\":[\"$PC_PREFIX.0/24\"],\"$LATER\":[\"$later_prefix.0/24\"]} []")
	elapsed_ms=$((($(date +%s%N) - start) / 1000000))
	pc_expect "docker network create $LATER: status shows it resolved" \
		"{\"$PC_NAME\":[\"$PC_PREFIX.0/24\"],\"$LATER\":[\"$later_prefix.0/24\"]} []" "$seen"
	pc_log "guard: $LATER was guarded ${elapsed_ms} ms after docker network create began"
	pc_expect "docker network create $LATER: its guard rules are installed, metric 0" "2 0" \
		"$(guard_rules "$later_prefix.0/24") $(pc_metric "$PC_ADMIN" docker_unresolved_networks)"
	docker network rm "$LATER" >/dev/null
	seen=$(wait_guard_status "{\"$PC_NAME\":[\"$PC_PREFIX.0/24\"],\"$LATER\":[]} [\"$LATER\"]")
	pc_expect "docker network rm $LATER: unresolved again in status" \
		"{\"$PC_NAME\":[\"$PC_PREFIX.0/24\"],\"$LATER\":[]} [\"$LATER\"]" "$seen"
	pc_expect "docker network rm $LATER: its guard rules are gone, metric 1" "0 1" \
		"$(guard_rules "$later_prefix.0/24") $(pc_metric "$PC_ADMIN" docker_unresolved_networks)"
}

# A reload that names the stranger (and allows it app1:8080) places it: its
# allowed flow passes, the rest is decided by the access rules.
placement_checks() {
	local rc=0
	jq --arg name "$PC_NAME-stranger" \
		'.containers.stranger = {docker: $name} | .access += [{from: "stranger", to: "app1", ports: [8080]}]' \
		"$RULES" >"$RULES.new"
	mv "$RULES.new" "$RULES"
	"$PC_PORTCULLIS" reload --admin "$PC_ADMIN" >/dev/null || rc=$?
	pc_expect "reload naming the stranger: applied, nothing unresolved" "rc=0 []" \
		"rc=$rc $(pc_status | jq -c -r .docker.unresolved)"
	pc_expect "placed: stranger->app1 tcp/8080 passes" "app1 from $STRANGER" \
		"$(seen stranger "http://${PC_IP[app1]}:8080/")"
	pc_expect "placed: app1->stranger tcp/8080 (no entry) is dropped by default deny" timeout \
		"$(seen app1 "http://$STRANGER:8080/")"
}

main() {
	pc_lab_setup all
	lab_checks
	start_portcullis
	resolved_checks
	guard_checks
	events_checks
	placement_checks
	pc_summary
}

main "$@"
