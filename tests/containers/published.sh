#!/usr/bin/env bash
# Ports Docker publishes on the host, against real containers (issue 11; what
# docs/wiki/routing.md "Published ports" claims, one check per claim).
#
# `pub` (pc-<runid>-pub, a managed container on the lab network) serves 80,
# 8080 and 8081 and publishes each on the network's gateway address (the
# host's address on the bridge). The rules allow app2 and `routed` GET on
# pub:80 (through the proxy) and `routed` pub:8080 at L4; app3 nothing. The
# lab network is also guarded by name. `routed` is a managed client in a
# network namespace routed through the host (a veth, not a Docker bridge),
# the way a machine on the network reaches the host.
#
# A published port is reached one of two ways, and the test shows which by
# the address pub sees the connection come from:
#   - docker-proxy (Docker's userland proxy, its default; every client on a
#     Docker bridge): the host connects to pub, so pub sees the gateway
#     address. NOT covered: neither access rules nor guard see that flow.
#   - DNAT (a client on any other interface; every client with
#     "userland-proxy": false): the packet is forwarded to pub with its own
#     source, and nftables decides it as client -> pub:PORT: L4 entries hold;
#     an HTTP entry does not open it (the redirect to the proxy matches
#     pub's own address only), so it is dropped.
#
# Env: PORTCULLIS_BIN, TESTSVC_BIN (prebuilt binaries), PROBE_TIMEOUT_MS (default 2000), PC_RUN_ID.
# Prints one PASS/FAIL line per check and ends with `N passed, M failed`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/containers/lib.sh
source "$HERE/lib.sh"

PROBE_TIMEOUT_MS=${PROBE_TIMEOUT_MS:-2000}
TEMPLATE=$HERE/rules/published.json.tmpl
PUB=''     # pub's own address
GATEWAY='' # the lab network's gateway: the host address the ports are published on
ROUTED=''  # the routed namespace client's address
NS=''      # its namespace
declare -A HOST_PORT=() # pub's port -> its published port on $GATEWAY

# in_container APP URL [PROBE OPTION]...: what a request from container APP reached.
in_container() {
	local app=$1 url=$2
	shift 2
	pc_seen "$(pc_probe_in "$app" --timeout-ms "$PROBE_TIMEOUT_MS" "$@" "$url")"
}

# from_routed URL [PROBE OPTION]...: what a request from the routed namespace reached.
from_routed() {
	local url=$1
	shift
	pc_seen "$(pc_probe_ns "$NS" --timeout-ms "$PROBE_TIMEOUT_MS" "$@" "$url")"
}

# published PORT: the URL of pub's PORT as published on the host.
published() { echo "http://$GATEWAY:${HOST_PORT[$1]}/"; }

# pub on the lab network, its three ports published on the gateway address;
# the routed namespace. Then, before portcullis, each way in works (or a
# drop seen later would prove nothing), and shows its source address.
lab_checks() {
	local failed_before=$PC_FAILED port
	PUB=$PC_PREFIX.30
	GATEWAY=$PC_PREFIX.1
	local -a publish=()
	for port in 80 8080 8081; do
		pc_free_port "HOST_PORT[$port]"
		publish+=(-p "$GATEWAY:${HOST_PORT[$port]}:$port")
	done
	docker run -d --name "$PC_NAME-pub" --hostname pub --network "$PC_NAME" --ip "$PUB" "${publish[@]}" \
		--label "portcullis.test=$PC_RUN_ID" "$PC_IMAGE" serve --name pub --http 80 --http 8080 --http 8081 >/dev/null ||
		pc_die "cannot start container $PC_NAME-pub"
	pc_wait_http "http://$PUB/healthz" 30 || pc_die "pub ($PUB) does not answer /healthz"
	NS=$PC_NAME-routed
	pc_netns_routed "$NS" ROUTED
	pc_log "pub=$PUB publishes 80, 8080, 8081 on $GATEWAY:${HOST_PORT[80]}, ${HOST_PORT[8080]}, ${HOST_PORT[8081]}"
	pc_expect "lab: routed->pub tcp/8081 directly" "pub from $ROUTED" "$(from_routed "http://$PUB:8081/")"
	pc_expect "lab: routed->published 8081 (DNAT: pub sees routed's own address)" "pub from $ROUTED" \
		"$(from_routed "$(published 8081)")"
	pc_expect "lab: app3->published 8081 (docker-proxy: pub sees the gateway address)" "pub from $GATEWAY" \
		"$(in_container app3 "$(published 8081)")"
	((PC_FAILED == failed_before)) ||
		pc_die "the published ports or the routed namespace do not work without portcullis"
}

start_portcullis() {
	local proxy admin_port
	pc_free_port proxy
	pc_free_port admin_port
	local rules=$PC_TMP/rules.json
	pc_render_rules "$TEMPLATE" "$rules" \
		LAB_NETWORK="$PC_NAME" APP2_DOCKER="$PC_NAME-app2" APP3_ADDRESS="${PC_IP[app3]}" \
		PUB_ADDRESS="$PUB" ROUTED_ADDRESS="$ROUTED" PROXY_PORT="$proxy" ADMIN_ADDRESS="127.0.0.1:$admin_port"
	pc_portcullis_start "$rules" "127.0.0.1:$admin_port"
}

# pub at its own address: the access rules, as everywhere.
direct_checks() {
	pc_expect "direct: app3->pub tcp/8081 (no entry) is dropped" timeout "$(in_container app3 "http://$PUB:8081/")"
	pc_expect "direct: app2->pub tcp/80 GET / passes through the proxy" "pub from $GATEWAY via portcullis as app2" \
		"$(in_container app2 "http://$PUB/")"
	pc_expect "direct: app2->pub tcp/80 POST / is refused by the proxy" "http 403" \
		"$(in_container app2 "http://$PUB/" --method POST)"
	pc_expect "direct: routed->pub tcp/8080 (L4 entry) passes" "pub from $ROUTED" "$(from_routed "http://$PUB:8080/")"
	pc_expect "direct: routed->pub tcp/8081 (no entry) is dropped" timeout "$(from_routed "http://$PUB:8081/")"
}

# From a Docker bridge a published port is served by docker-proxy: the host
# is the client, and neither the access rules nor the guard decide it.
docker_proxy_checks() {
	pc_expect "docker-proxy (NOT covered): app3->published 8081 reaches pub, from the gateway" \
		"pub from $GATEWAY" "$(in_container app3 "$(published 8081)")"
	pc_expect "docker-proxy (NOT covered): app2 POST to published 80 reaches pub, not the proxy" \
		"pub from $GATEWAY" "$(in_container app2 "$(published 80)" --method POST)"
}

# From a routed client a published port is DNATed to pub and forwarded:
# nftables decides routed -> pub:PORT, and an HTTP entry does not open it.
dnat_checks() {
	pc_expect "DNAT: routed->published 8081 (no entry) is dropped" timeout "$(from_routed "$(published 8081)")"
	pc_expect "DNAT: routed->published 8080 (L4 entry) passes, with its own address" "pub from $ROUTED" \
		"$(from_routed "$(published 8080)")"
	pc_expect "DNAT: routed->published 80 GET / (HTTP entry) is dropped, not proxied" timeout \
		"$(from_routed "$(published 80)")"
}

main() {
	pc_lab_setup all
	lab_checks
	start_portcullis
	direct_checks
	docker_proxy_checks
	dnat_checks
	pc_summary
}

main "$@"
