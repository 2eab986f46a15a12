# shellcheck shell=bash
# Reusable pieces of the container harnesses (sourced, never run):
#   prerequisites   pc_require_root, pc_ensure_nft, pc_ensure_jq, pc_ensure_docker
#   a run           pc_init_run (ids, temp dir), pc_cleanup (the EXIT trap)
#   binaries        pc_build_testsvc, pc_build_portcullis
#   the lab         pc_build_image, pc_lab_up, pc_lab_down (three containers on one Docker network),
#                   pc_network_create (another network), pc_netns_routed (a routed namespace)
#   portcullis      pc_render_rules, pc_free_port, pc_portcullis_start, pc_portcullis_stop, pc_status
#   probes          pc_probe (host), pc_probe_in / pc_udp_probe_in (inside a container),
#                   pc_seen (what a probe reached, from which address)
#   reporting       pc_expect, pc_summary
# Everything here is named pc_* / PC_*; what a run creates carries its run id
# (pc-<runid>, label portcullis.test=<runid>) so two runs never collide.

PC_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PC_DOCKERD_LOG=/tmp/portcullis-dockerd.log
PC_TARGET_DIR=${CARGO_TARGET_DIR:-$PC_REPO/target}
# The table portcullis owns; overridable only for the harness's own self-test.
read -r -a PC_NFT_TABLE <<<"${PC_NFT_TABLE:-inet portcullis}"
PC_APPS=(app1 app2 app3)
# What every app container serves.
PC_APP_ARGS=(--http 80 --http 8080 --udp 5353)
PC_PASSED=0
PC_FAILED=0
PC_RUN_ID=''
PC_TMP=''
PC_PORTCULLIS=''
PC_PORTCULLIS_PID=''
PC_PORTCULLIS_STARTED=''
PC_ADMIN=''
declare -gA PC_IP=()
# Network namespaces this run made (pc_netns_routed), removed by pc_lab_down.
PC_NETNS=()

pc_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pc_warn() { printf 'WARNING: %s\n' "$*" >&2; }
pc_die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}

# === prerequisites ===

pc_require_root() {
	[[ $(id -u) == 0 ]] || pc_die "this harness needs root (Docker, nftables, sysctl)"
}

PC_APT_UPDATED=''
pc_apt_install() {
	command -v apt-get >/dev/null || pc_die "apt-get not found; install $* by hand"
	if [[ -z $PC_APT_UPDATED ]]; then
		pc_log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 </dev/null || pc_die "apt-get update failed"
		PC_APT_UPDATED=1
	fi
	pc_log "apt-get install $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 </dev/null || pc_die "apt-get install $* failed"
}

# pc_require_cmd COMMAND PACKAGE: installs PACKAGE if COMMAND is missing.
pc_require_cmd() {
	command -v "$1" >/dev/null || pc_apt_install "$2"
	command -v "$1" >/dev/null || pc_die "'$1' is still missing after installing package $2"
}

pc_ensure_nft() {
	pc_require_cmd nft nftables
	nft list tables >/dev/null || pc_die "'nft list tables' fails: nftables is not usable here"
}

pc_ensure_jq() { pc_require_cmd jq jq; }

pc_docker_alive() { timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Installs Docker if needed and starts the engine (forwarding enabled first, see
# shared/lab.md), then checks what would break traffic between containers.
pc_ensure_docker() {
	pc_require_cmd dockerd docker.io
	pc_require_cmd docker docker.io
	sysctl -qw net.ipv4.ip_forward=1 || pc_die "cannot set net.ipv4.ip_forward=1"
	if ! pc_docker_alive; then
		pc_log "starting dockerd (log: $PC_DOCKERD_LOG)"
		setsid dockerd >"$PC_DOCKERD_LOG" 2>&1 </dev/null &
		local pid=$! i
		for ((i = 0; i < 60; i++)); do
			pc_docker_alive && break
			kill -0 "$pid" 2>/dev/null || pc_die "dockerd exited at start: $(tail -n 5 "$PC_DOCKERD_LOG")"
			sleep 1
		done
		pc_docker_alive || pc_die "dockerd did not answer on /var/run/docker.sock within 60 s; see $PC_DOCKERD_LOG"
	fi
	pc_check_forward_policy "${PC_FORWARD_NEEDS:-docker-bridge}"
}

# pc_check_forward_policy docker-bridge|namespaces
# Docker sets the iptables FORWARD policy to DROP when it starts with forwarding
# off. Its own ACCEPT rules still pass traffic inside a Docker bridge, so a
# Docker-only lab survives that (its reachability check proves it), but traffic
# routed between plain network namespaces is dropped: fatal for `namespaces`.
pc_check_forward_policy() {
	local needs=$1 policy
	policy=$(iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" { print $3; exit }') || true
	[[ $policy == DROP ]] || return 0
	local why="the iptables FORWARD policy is DROP (dockerd was started while net.ipv4.ip_forward=0)"
	local fix="restart dockerd after 'sysctl -w net.ipv4.ip_forward=1', or 'iptables -P FORWARD ACCEPT'"
	case $needs in
	namespaces) pc_die "$why: traffic routed between network namespaces would be dropped; $fix" ;;
	*) pc_warn "$why; Docker's own rules still pass traffic inside its bridges, the lab check below verifies it" ;;
	esac
}

# nftables sees traffic between containers on one bridge only through
# br_netfilter (both keys: the daemon reports anything less as "same-bridge
# traffic NOT enforced").
PC_BRIDGE_KEYS=(net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
pc_ensure_bridge_netfilter() {
	local key value
	for key in "${PC_BRIDGE_KEYS[@]}"; do
		value=$(sysctl -n "$key" 2>/dev/null) || value=''
		[[ $value == 1 ]] && continue
		pc_log "enabling $key (was '${value:-absent}')"
		[[ -n $value ]] || modprobe br_netfilter 2>/dev/null || true
		sysctl -qw "$key=1" 2>/dev/null ||
			pc_die "$key is '${value:-absent}' and cannot be set: without br_netfilter nftables never sees traffic between containers on a bridge (load the br_netfilter module)"
	done
}

# A check that turned a bridge sysctl off sets this to the key; the EXIT trap
# turns it on again if the check could not.
PC_BRIDGE_RESTORE=''

# === one run ===

# Sets the run id, the names derived from it and a temp dir.
pc_init_run() {
	PC_RUN_ID=${PC_RUN_ID:-$(printf '%04x%04x' "$RANDOM" "$RANDOM")}
	PC_NAME=pc-$PC_RUN_ID
	PC_IMAGE=portcullis-testsvc:$PC_RUN_ID
	PC_TMP=$(mktemp -d "/tmp/$PC_NAME.XXXXXX")
	pc_log "run $PC_RUN_ID"
}

# The EXIT trap: removes everything this run made, keeps the exit status
# (non-zero also when something could not be removed).
pc_cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if ((rc != 0)); then pc_dump_logs; fi
	if [[ -n $PC_BRIDGE_RESTORE ]]; then
		sysctl -qw "$PC_BRIDGE_RESTORE=1" || rc=1
	fi
	pc_portcullis_stop || rc=1
	pc_lab_down
	[[ -n $PC_TMP ]] && rm -rf "$PC_TMP"
	pc_assert_clean || rc=1
	exit "$rc"
}

pc_dump_logs() {
	local app
	if [[ -n $PC_PORTCULLIS_STARTED && -f $PC_TMP/portcullis.log ]]; then
		printf -- '--- last lines of the portcullis log\n' >&2
		tail -n 40 "$PC_TMP/portcullis.log" >&2
	fi
	[[ -n $PC_RUN_ID ]] || return 0
	for app in "${PC_APPS[@]}"; do
		docker inspect "$PC_NAME-$app" >/dev/null 2>&1 || continue
		printf -- '--- last lines of docker logs %s\n' "$PC_NAME-$app" >&2
		docker logs --tail 15 "$PC_NAME-$app" >&2 2>&1
	done
}

# Fails (and says what is left) if anything of this run is still there.
pc_assert_clean() {
	[[ -n $PC_RUN_ID ]] || return 0
	local left=()
	[[ -z $(docker ps -aq --filter "label=portcullis.test=$PC_RUN_ID") ]] || left+=(containers)
	[[ -z $(docker network ls -q --filter "label=portcullis.test=$PC_RUN_ID") ]] || left+=(networks)
	local ns
	for ns in "${PC_NETNS[@]}"; do
		[[ -e /run/netns/$ns ]] && left+=("namespace $ns")
	done
	docker image inspect "$PC_IMAGE" >/dev/null 2>&1 && left+=("image $PC_IMAGE")
	[[ -n $PC_PORTCULLIS_STARTED ]] && nft list table "${PC_NFT_TABLE[@]}" >/dev/null 2>&1 && left+=("table ${PC_NFT_TABLE[*]}")
	((${#left[@]} == 0)) && return 0
	printf 'ERROR: cleanup left behind: %s\n' "${left[*]}" >&2
	return 1
}

# === binaries ===

# Sets PC_TESTSVC: $TESTSVC_BIN, or the static build of the testsvc crate.
pc_build_testsvc() {
	if [[ -n ${TESTSVC_BIN:-} ]]; then
		PC_TESTSVC=$TESTSVC_BIN
	else
		command -v cargo >/dev/null || pc_die "cargo not found: cannot build testsvc (or set TESTSVC_BIN)"
		pc_log "building the static testsvc"
		(cd "$PC_REPO" && RUSTFLAGS='-C target-feature=+crt-static' \
			cargo build --release -p testsvc --target x86_64-unknown-linux-gnu) >&2 ||
			pc_die "building testsvc failed"
		PC_TESTSVC=$PC_TARGET_DIR/x86_64-unknown-linux-gnu/release/testsvc
	fi
	[[ -x $PC_TESTSVC ]] || pc_die "testsvc binary $PC_TESTSVC is not executable"
	ldd "$PC_TESTSVC" 2>&1 | grep -qE 'not a dynamic executable|statically linked' ||
		pc_die "$PC_TESTSVC is not statically linked; the image holds nothing else"
}

# Sets PC_PORTCULLIS: $PORTCULLIS_BIN, or a release build of the workspace.
pc_build_portcullis() {
	if [[ -n ${PORTCULLIS_BIN:-} ]]; then
		PC_PORTCULLIS=$PORTCULLIS_BIN
	else
		command -v cargo >/dev/null || pc_die "cargo not found: cannot build portcullis (or set PORTCULLIS_BIN)"
		pc_log "building portcullis (release)"
		(cd "$PC_REPO" && cargo build --release) >&2 || pc_die "building portcullis failed"
		PC_PORTCULLIS=$PC_TARGET_DIR/release/portcullis
	fi
	[[ -x $PC_PORTCULLIS ]] || pc_die "portcullis binary $PC_PORTCULLIS is not executable"
}

# === the lab ===

# The image: a root filesystem holding only /testsvc.
pc_build_image() {
	local rootfs=$PC_TMP/rootfs
	mkdir -p "$rootfs"
	install -m 0755 "$PC_TESTSVC" "$rootfs/testsvc"
	tar -C "$rootfs" -c . | docker import --change 'ENTRYPOINT ["/testsvc"]' - "$PC_IMAGE" >/dev/null ||
		pc_die "docker import of $PC_IMAGE failed"
	rm -rf "$rootfs"
}

# Whether 198.19.N.0/24 (given as 198.19.N) is used by a host route or a Docker network.
pc_subnet_in_use() {
	local prefix=$1
	ip -4 route show | grep -qF "$prefix." && return 0
	docker network ls -q | xargs -r docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' |
		grep -qF "$prefix."
}

# pc_free_prefix VAR: a /24 of 198.19.0.0/16 (as 198.19.N) no route or Docker
# network uses, distinct from earlier picks.
PC_PICKED_PREFIXES=' '
pc_free_prefix() {
	local _try _prefix
	for ((_try = 0; _try < 60; _try++)); do
		_prefix=198.19.$((RANDOM % 200 + 20))
		[[ $PC_PICKED_PREFIXES == *" $_prefix "* ]] && continue
		pc_subnet_in_use "$_prefix" && continue
		PC_PICKED_PREFIXES+="$_prefix "
		printf -v "$1" '%s' "$_prefix"
		return 0
	done
	pc_die "no free /24 in 198.19.0.0/16 after 60 tries"
}

# pc_network_create NAME VAR [OPTION]...: a bridge network NAME, labelled with
# the run (pc_lab_down removes it), on a free /24 (gateway .1) whose prefix
# goes into VAR; OPTIONs go to `docker network create`.
pc_network_create() {
	local _name=$1 _var=$2 _try _net
	shift 2
	for ((_try = 0; _try < 10; _try++)); do
		pc_free_prefix _net
		if docker network create --driver bridge --subnet "$_net.0/24" --gateway "$_net.1" \
			--label "portcullis.test=$PC_RUN_ID" "$@" "$_name" >/dev/null 2>"$PC_TMP/network.err"; then
			printf -v "$_var" '%s' "$_net"
			pc_log "network $_name on $_net.0/24"
			return 0
		fi
	done
	pc_die "cannot create network $_name: $(cat "$PC_TMP/network.err")"
}

# Creates network pc-<runid> on a free /24 of 198.19.0.0/16 and sets PC_PREFIX
# (e.g. 198.19.77) and PC_IP[app] (.2, .3, .4, ...).
pc_lab_network_up() {
	pc_network_create "$PC_NAME" PC_PREFIX
	local i=2 app
	for app in "${PC_APPS[@]}"; do
		PC_IP[$app]=$PC_PREFIX.$i
		i=$((i + 1))
	done
}

# pc_netns_routed NAME VAR: network namespace NAME (removed by pc_lab_down)
# linked to the host by a veth pair on a free 198.19.N.0/30 and routed
# through it: .1 on the host, .2 inside, whose address goes into VAR. A
# client there reaches the host and its containers on an interface that is
# not a Docker bridge, as a machine on the network would.
pc_netns_routed() {
	local _name=$1 _var=$2 _net _host _inside
	pc_free_prefix _net
	# Interface names are at most 15 bytes: pc + run id + h|n.
	_host=pc${PC_RUN_ID}h _inside=pc${PC_RUN_ID}n
	ip netns add "$_name" || pc_die "cannot create network namespace $_name"
	PC_NETNS+=("$_name")
	ip link add "$_host" type veth peer name "$_inside" netns "$_name" &&
		ip addr add "$_net.1/30" dev "$_host" && ip link set "$_host" up &&
		ip -n "$_name" addr add "$_net.2/30" dev "$_inside" && ip -n "$_name" link set "$_inside" up &&
		ip -n "$_name" link set lo up && ip -n "$_name" route add default via "$_net.1" ||
		pc_die "cannot link network namespace $_name to the host"
	printf -v "$_var" '%s' "$_net.2"
	pc_log "namespace $_name at $_net.2, routed through $_host ($_net.1)"
}

# Network, one container per app (pc-<runid>-<app>, serving PC_APP_ARGS), all healthy.
pc_lab_up() {
	pc_lab_network_up
	pc_ensure_bridge_netfilter
	local app
	for app in "${PC_APPS[@]}"; do
		docker run -d --name "$PC_NAME-$app" --hostname "$app" --network "$PC_NAME" --ip "${PC_IP[$app]}" \
			--label "portcullis.test=$PC_RUN_ID" "$PC_IMAGE" serve --name "$app" "${PC_APP_ARGS[@]}" >/dev/null ||
			pc_die "cannot start container $PC_NAME-$app"
	done
	for app in "${PC_APPS[@]}"; do
		pc_wait_http "http://${PC_IP[$app]}/healthz" 30 ||
			pc_die "$app (${PC_IP[$app]}) does not answer /healthz from the host after 30 s"
	done
	pc_log "lab up: $(for app in "${PC_APPS[@]}"; do printf '%s=%s ' "$app" "${PC_IP[$app]}"; done)"
}

# Removes this run's containers, networks, namespaces (with their veth ends)
# and image; safe to call at any point.
pc_lab_down() {
	[[ -n $PC_RUN_ID ]] || return 0
	docker ps -aq --filter "label=portcullis.test=$PC_RUN_ID" | xargs -r docker rm -f >/dev/null
	docker network ls -q --filter "label=portcullis.test=$PC_RUN_ID" | xargs -r docker network rm >/dev/null
	local ns
	for ns in "${PC_NETNS[@]}"; do
		[[ -e /run/netns/$ns ]] && ip netns del "$ns"
	done
	docker image inspect "$PC_IMAGE" >/dev/null 2>&1 && docker image rm "$PC_IMAGE" >/dev/null
	return 0
}

# === probes (each prints testsvc's one JSON line and never fails) ===

pc_probe() { "$PC_TESTSVC" probe "$@" || true; }
pc_probe_in() {
	local app=$1
	shift
	docker exec "$PC_NAME-$app" /testsvc probe "$@" || true
}
pc_udp_probe_in() {
	local app=$1
	shift
	docker exec "$PC_NAME-$app" /testsvc udp-probe "$@" || true
}

# pc_probe_ns NAMESPACE ARGS...: a probe from inside a network namespace.
pc_probe_ns() {
	local ns=$1
	shift
	ip netns exec "$ns" "$PC_TESTSVC" probe "$@" || true
}

# pc_seen PROBE_JSON: what an HTTP probe reached, as one comparable phrase:
# `SERVICE from PEER` (testsvc's echo: who answered, and the address the
# connection came from as it saw it) with ` via portcullis as SOURCE` when the
# proxy stamped X-Portcullis-Source; else `http STATUS`, `timeout`, `refused`,
# `reset` or `error: ...`.
pc_seen() {
	jq -r '
		if .result == "http" then
			(.body | try fromjson catch null) as $echo
			| if .status == 200 and ($echo | type) == "object" and ($echo.service | type) == "string" then
				([$echo.headers[]? | select(.[0] | ascii_downcase == "x-portcullis-source") | .[1]]) as $src
				| "\($echo.service) from \($echo.peer | sub(":[0-9]+$"; ""))"
				+ (if ($src | length) > 0 then " via portcullis as \($src | join(","))" else "" end)
			else "http \(.status)" end
		elif .result == "error" then "error: \(.error)"
		else .result end' <<<"$1" 2>/dev/null || echo "unparsable output: ${1:-none}"
}

# pc_wait_http URL SECONDS: until URL answers 200 (probed from the host).
pc_wait_http() {
	local url=$1 deadline=$((SECONDS + $2))
	while ((SECONDS < deadline)); do
		pc_probe --timeout-ms 1000 "$url" | jq -e '.result == "http" and .status == 200' >/dev/null 2>&1 && return 0
		sleep 0.3
	done
	return 1
}

# pc_metric ADMIN NAME: the value of portcullis_NAME on /metrics ('absent' if not there).
pc_metric() {
	pc_probe --timeout-ms 2000 "http://$1/metrics" | jq -r .body 2>/dev/null |
		awk -v n="portcullis_$2" '$1 == n { print $2; found = 1 } END { if (!found) print "absent" }'
}

# pc_counter APP: APP's request counter, read from the host (not counted itself).
pc_counter() {
	pc_probe --timeout-ms 2000 "http://${PC_IP[$1]}/__stats" | jq -r '.body | fromjson | .counter' 2>/dev/null ||
		echo unreadable
}

# === portcullis ===

# pc_free_port VAR: a free TCP/UDP port on this host, distinct from earlier picks.
PC_PICKED_PORTS=' '
pc_free_port() {
	local port
	while :; do
		port=$((RANDOM % 30000 + 20000))
		[[ $PC_PICKED_PORTS == *" $port "* ]] && continue
		[[ -z $(ss -Htuan "sport = :$port") ]] && break
	done
	PC_PICKED_PORTS+="$port "
	printf -v "$1" '%s' "$port"
}

# pc_render_rules TEMPLATE OUT KEY=VALUE...: replaces each @KEY@.
pc_render_rules() {
	local template=$1 out=$2 kv
	shift 2
	local -a expr=()
	for kv in "$@"; do
		expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
	done
	sed "${expr[@]}" "$template" >"$out"
	! grep -qE '@[A-Z0-9_]+@' "$out" || pc_die "unreplaced placeholder in $out: $(grep -oE '@[A-Z0-9_]+@' "$out" | sort -u | tr '\n' ' ')"
}

# pc_status: `portcullis status` of the daemon pc_portcullis_start started.
pc_status() { "$PC_PORTCULLIS" status --admin "$PC_ADMIN"; }

# pc_portcullis_start RULES ADMIN: `portcullis run` in its own process group;
# waits until its table exists and ADMIN answers /healthz.
pc_portcullis_start() {
	local rules=$1 admin=$2 log=$PC_TMP/portcullis.log
	PC_ADMIN=$admin
	nft list table "${PC_NFT_TABLE[@]}" >/dev/null 2>&1 &&
		pc_die "table ${PC_NFT_TABLE[*]} already exists (another portcullis runs, or one was left behind): stop it or run 'portcullis down' first"
	pc_log "starting portcullis run (log: $log)"
	PC_PORTCULLIS_STARTED=1
	setsid "$PC_PORTCULLIS" run "$rules" >"$log" 2>&1 </dev/null &
	PC_PORTCULLIS_PID=$!
	local deadline=$((SECONDS + 30))
	while ((SECONDS < deadline)); do
		kill -0 "$PC_PORTCULLIS_PID" 2>/dev/null || pc_die "portcullis run exited early: $(tail -n 5 "$log")"
		if nft list table "${PC_NFT_TABLE[@]}" >/dev/null 2>&1 &&
			pc_probe --timeout-ms 1000 "http://$admin/healthz" | jq -e '.status == 200' >/dev/null 2>&1; then
			pc_log "portcullis up (pid $PC_PORTCULLIS_PID)"
			return 0
		fi
		sleep 0.3
	done
	pc_die "portcullis did not install table ${PC_NFT_TABLE[*]} and answer http://$admin/healthz within 30 s"
}

# Stops the daemon (its process group: SIGTERM, then SIGKILL) and removes its rules.
pc_portcullis_stop() {
	local pid=$PC_PORTCULLIS_PID rc=0
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		local pgid target i status=0
		pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
		# setsid made it a group leader; never signal a group that is not its own.
		if [[ $pgid == "$pid" ]]; then target=-$pid; else target=$pid; fi
		kill -TERM -- "$target" 2>/dev/null
		for ((i = 0; i < 150; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			printf 'ERROR: portcullis did not exit within 15 s of SIGTERM; killed\n' >&2
			kill -KILL -- "$target" 2>/dev/null
			rc=1
		fi
		wait "$pid" 2>/dev/null || status=$?
		# SIGTERM drains and exits 0 (spec/cli.md); anything else is a failure.
		if ((rc == 0 && status != 0)); then
			printf 'ERROR: portcullis exited with status %d after SIGTERM\n' "$status" >&2
			rc=1
		fi
	fi
	PC_PORTCULLIS_PID=''
	[[ -n $PC_PORTCULLIS_STARTED ]] || return "$rc"
	# `portcullis down` is a user-facing command: its failure fails the run.
	if ! "$PC_PORTCULLIS" down >&2; then
		printf 'ERROR: portcullis down failed\n' >&2
		rc=1
	fi
	if nft list table "${PC_NFT_TABLE[@]}" >/dev/null 2>&1; then
		# This run checked that the table did not exist before it started portcullis.
		printf 'ERROR: table %s still there after portcullis down; deleting it\n' "${PC_NFT_TABLE[*]}" >&2
		nft delete table "${PC_NFT_TABLE[@]}"
		rc=1
	fi
	return "$rc"
}

# === reporting ===

# pc_expect DESCRIPTION EXPECTED SEEN: one PASS/FAIL line, counted.
pc_expect() {
	if [[ $3 == "$2" ]]; then
		PC_PASSED=$((PC_PASSED + 1))
		printf 'PASS %s: expected %s, saw %s\n' "$1" "$2" "$3"
	else
		PC_FAILED=$((PC_FAILED + 1))
		printf 'FAIL %s: expected %s, saw %s\n' "$1" "$2" "$3"
	fi
}

# The final line; fails if anything failed.
pc_summary() {
	printf '%d passed, %d failed\n' "$PC_PASSED" "$PC_FAILED"
	((PC_FAILED == 0))
}

# Everything a container test needs before its checks: prerequisites, this
# run's cleanup trap, the binaries and image, and the containers up and
# healthy. pc_lab_setup all|lab (lab: portcullis is not built).
pc_lab_setup() {
	pc_require_root
	pc_ensure_nft
	pc_ensure_jq
	pc_ensure_docker
	pc_init_run
	trap pc_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	pc_build_testsvc
	[[ $1 == lab ]] || pc_build_portcullis
	pc_build_image
	pc_lab_up
}
