#!/usr/bin/env bash
# The shipped unit under a real systemd: boots Debian bookworm's systemd as
# PID 1 in a systemd-nspawn container, installs the binary and
# packaging/portcullis.service in it as an operator would, and checks what
# an operator relies on:
#   - `systemctl start` returns with the ruleset already in the kernel
#     (Type=notify: READY=1 only after install and bind);
#   - the daemon runs as a non-root dynamic user with exactly
#     CAP_NET_ADMIN + CAP_NET_BIND_SERVICE;
#   - a request through the proxy is allowed (and reaches the upstream) and
#     another is refused with 403 (and does not);
#   - `systemctl reload` applies a changed file, and FAILS for a bad file and
#     for a valid file the daemon cannot apply, with the old rules kept;
#   - the journal holds the daemon's JSON log lines;
#   - `systemctl stop` leaves the rules in place (fail closed);
#   - the unit starts with no `docker` group and no Docker, and the shipped
#     Docker drop-in adds the group where it exists.
#
# Network: the container gets a network namespace this script makes (never
# the machine's: the daemon installs `inet portcullis` there), routed
# between a client namespace and an upstream namespace running the test
# service, all in one /24 of 198.19.0.0/16:
#
#   client ns (198.19.N.2) ──veth── container ns (198.19.N.1) ──veth── upstream ns (198.19.N.3)
#                                   systemd + portcullis.service        testsvc :80 :8080
#
# The debootstrapped root filesystem is cached outside the repository
# ($PORTCULLIS_CI_CACHE, default /var/cache/portcullis-ci) and booted with
# --volatile=overlay, so the cache is never written and reruns take seconds.
# Everything made (container, namespaces, processes, temp files) is removed
# by the EXIT trap, also on failure.
#
# Usage (root): PORTCULLIS_BIN=target/debug/portcullis tests/systemd/run.sh
# TESTSVC_BIN is the test service (default: `testsvc` next to PORTCULLIS_BIN,
# which `cargo build --workspace` puts there).
# PORTCULLIS_UNIT overrides the unit file under test (default the shipped one).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${PORTCULLIS_BIN:-$REPO/target/debug/portcullis}
TESTSVC=${TESTSVC_BIN:-$(dirname "$BIN")/testsvc}
UNIT=${PORTCULLIS_UNIT:-$REPO/packaging/portcullis.service}
DOCKER_DROPIN=$REPO/packaging/portcullis.service.d/docker.conf
CACHE=${PORTCULLIS_CI_CACHE:-/var/cache/portcullis-ci}
# Bump the suffix when the package list changes: a new tree is built.
ROOTFS=$CACHE/bookworm-systemd-v1
ROOTFS_PKGS=systemd,systemd-sysv,dbus,nftables,iproute2

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}
PASSED=0
pass() {
	PASSED=$((PASSED + 1))
	printf 'ok   %s\n' "$*"
}
fail() { die "FAILED: $*"; }

# === prerequisites (installed, never skipped) ===

[[ $(id -u) == 0 ]] || die "needs root (network namespaces, systemd-nspawn)"
[[ -x $BIN ]] || die "no portcullis binary at $BIN (cargo build, or set PORTCULLIS_BIN)"
[[ -x $TESTSVC ]] || die "no test service binary at $TESTSVC (cargo build -p testsvc, or set TESTSVC_BIN)"
[[ -f $UNIT ]] || die "no unit file at $UNIT"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v nft >/dev/null || need+=(nftables)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
	log "apt-get install ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2 </dev/null || die "apt-get update failed"
	apt-get install -y -q "${need[@]}" >&2 </dev/null || die "apt-get install ${need[*]} failed"
fi

# The root filesystem: built once (about a minute), then reused. Built in a
# temporary directory and renamed, so a failed debootstrap is never cached.
if [[ ! -x $ROOTFS/usr/lib/systemd/systemd ]]; then
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/rootfs.tmp.XXXXXX")
	log "debootstrap bookworm into $tmp (cached as $ROOTFS)"
	debootstrap --variant=minbase --include="$ROOTFS_PKGS" bookworm "$tmp" http://deb.debian.org/debian >&2 ||
		{
			rm -rf "$tmp"
			die "debootstrap failed"
		}
	rm -rf "$ROOTFS"
	mv "$tmp" "$ROOTFS"
fi

# === one run ===

RID=$(printf '%04x' "$RANDOM")
NET=$((200 + RANDOM % 50))
P=198.19.$NET
HOSTNS=pcsd${RID}h
CLIENTNS=pcsd${RID}c
UPNS=pcsd${RID}u
TMP=$(mktemp -d "/tmp/pcsd-$RID.XXXXXX")
NSPAWN_PID=''
TESTSVC_PID=''
CPID=''
NAMESPACES=()
log "run $RID: namespaces $HOSTNS $CLIENTNS $UPNS in $P.0/24"

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if ((rc != 0)) && [[ -n $CPID ]]; then
		printf -- '--- journal of portcullis.service (last 40 lines)\n' >&2
		C journalctl -u portcullis --no-pager -o cat -n 40 >&2
		printf -- '--- systemctl status portcullis\n' >&2
		C systemctl status portcullis --no-pager -l >&2
	fi
	if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		# SIGTERM: nspawn asks the container's systemd to power off.
		kill "$NSPAWN_PID"
		for _ in $(seq 1 50); do
			kill -0 "$NSPAWN_PID" 2>/dev/null || break
			sleep 0.2
		done
		kill -0 "$NSPAWN_PID" 2>/dev/null && kill -KILL "$NSPAWN_PID"
		wait "$NSPAWN_PID" 2>/dev/null
	fi
	if [[ -n $TESTSVC_PID ]]; then
		kill -- -"$TESTSVC_PID" 2>/dev/null
		wait "$TESTSVC_PID" 2>/dev/null
	fi
	local ns
	for ns in "${NAMESPACES[@]}"; do
		ip netns del "$ns" || rc=1
	done
	rm -rf "$TMP"
	if ((rc == 0)); then
		printf '\nsystemd test: %d checks passed\n' "$PASSED"
	else
		printf '\nsystemd test FAILED (exit %d)\n' "$rc" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- namespaces (the lab of tests/proxy/lab.rs, in shell) ---
for ns in "$HOSTNS" "$CLIENTNS" "$UPNS"; do
	ip netns add "$ns"
	NAMESPACES+=("$ns")
	ip -n "$ns" link set lo up
done
for pair in "$CLIENTNS:vc:$P.2" "$UPNS:vu:$P.3"; do
	IFS=: read -r ns veth addr <<<"$pair"
	ip -n "$HOSTNS" link add "$veth" type veth peer name eth0 netns "$ns"
	ip -n "$HOSTNS" addr add "$P.1/32" dev "$veth"
	ip -n "$HOSTNS" link set "$veth" up
	ip -n "$HOSTNS" route add "$addr/32" dev "$veth"
	ip -n "$ns" addr add "$addr/32" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add "$P.1" dev eth0
	ip -n "$ns" route add default via "$P.1" dev eth0
done
ip netns exec "$HOSTNS" sysctl -qw net.ipv4.ip_forward=1

# --- the upstream: the test service ---
setsid ip netns exec "$UPNS" "$TESTSVC" serve --name up --http 80 --http 8080 --quiet \
	>"$TMP/testsvc.log" 2>&1 </dev/null &
TESTSVC_PID=$!

# --- the container ---
STAGE=$TMP/stage
mkdir -p "$STAGE"
cp "$BIN" "$STAGE/portcullis"
cp "$UNIT" "$STAGE/portcullis.service"
cp "$DOCKER_DROPIN" "$STAGE/docker.conf"
# Rules: the client may GET /allowed* on the upstream's port 80 (through
# the proxy); everything else between them is refused or dropped.
rules() { # rules PATH_PREFIX... : the rule file allowing GET on those prefixes
	local matchers='' p
	for p in "$@"; do
		matchers+="${matchers:+, }{ \"methods\": [\"GET\"], \"path_prefix\": \"$p\" }"
	done
	cat <<-EOF
		{
		  "version": 1,
		  "containers": {
		    "client": { "address": "$P.2" },
		    "up": { "address": "$P.3" }
		  },
		  "access": [
		    { "from": "client", "to": "up", "ports": [80], "http": [ $matchers ] }
		  ]
		}
	EOF
}
rules /allowed >"$STAGE/rules.json"

log "booting systemd in $ROOTFS (volatile overlay)"
# nspawn leaves CAP_NET_ADMIN out of the container's bounding set when it is
# given a network namespace by path; a host's systemd has it, so add it.
setsid systemd-nspawn -D "$ROOTFS" --volatile=overlay -b --register=no --keep-unit -q \
	--capability=CAP_NET_ADMIN \
	--machine="pcsd-$RID" --network-namespace-path="/run/netns/$HOSTNS" \
	--bind-ro="$STAGE:/mnt/stage" >"$TMP/nspawn.log" 2>&1 </dev/null &
NSPAWN_PID=$!

# The container's PID 1: the descendant of nspawn running systemd.
descendants() {
	local p
	for p in $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
		echo "$p"
		descendants "$p"
	done
}
for _ in $(seq 1 100); do
	for p in $(descendants "$NSPAWN_PID"); do
		[[ $(cat "/proc/$p/comm" 2>/dev/null) == systemd ]] && CPID=$p && break
	done
	[[ -n $CPID ]] && break
	kill -0 "$NSPAWN_PID" 2>/dev/null || die "systemd-nspawn exited: $(tail -n 20 "$TMP/nspawn.log")"
	sleep 0.1
done
[[ -n $CPID ]] || die "no systemd inside the container after 10 s: $(tail -n 20 "$TMP/nspawn.log")"
# C CMD...: runs CMD inside the container (its namespaces, its systemd).
C() { nsenter -t "$CPID" -a "$@"; }
# Until systemd's bus is up, systemctl cannot connect at all, and until it
# has made /run/systemd/system it answers "offline": retry both.
state=''
for _ in $(seq 1 90); do
	state=$(timeout 90 nsenter -t "$CPID" -a systemctl is-system-running --wait 2>&1) || true
	[[ $state == *bus* || $state == offline ]] || break
	sleep 1
done
[[ $state == running || $state == degraded ]] || die "the container did not boot: '$state'"
log "container booted ($state), PID 1 is $CPID on the host"

# C_HTTP PATH [PORT]: a GET from the client namespace to the upstream;
# prints the HTTP status (000 when no answer) and leaves the body in $TMP/body.
c_http() {
	ip netns exec "$CLIENTNS" curl -s -o "$TMP/body" -w '%{http_code}' --max-time "${3:-5}" \
		"http://$P.3:${2:-80}$1" || true
}
# The upstream's request counter, read on its own loopback (not through the proxy).
up_count() { ip netns exec "$UPNS" curl -s --max-time 5 http://127.0.0.1:80/__stats | jq -r .counter; }
for _ in $(seq 1 50); do
	[[ $(up_count 2>/dev/null) =~ ^[0-9]+$ ]] && break
	sleep 0.1
done
[[ $(up_count) =~ ^[0-9]+$ ]] || die "the test service did not come up: $(cat "$TMP/testsvc.log")"

# expect_request PATH STATUS: the client's GET PATH gets STATUS, and reaches
# the upstream (counter +1, the echoed target is PATH) exactly when 200.
expect_request() {
	local path=$1 want=$2 before after code
	before=$(up_count)
	code=$(c_http "$path")
	after=$(up_count)
	[[ $code == "$want" ]] || fail "GET $path: HTTP $code, expected $want ($(head -c 300 "$TMP/body"))"
	if [[ $want == 200 ]]; then
		((after == before + 1)) || fail "GET $path: the upstream counted $((after - before)) requests, expected 1"
		[[ $(jq -r .target "$TMP/body") == "$path" ]] || fail "GET $path: the upstream saw target $(jq -r .target "$TMP/body")"
	else
		((after == before)) || fail "GET $path was refused yet reached the upstream"
	fi
	pass "GET $path from the client: $want${4:-}"
}
# expect_dropped PORT: a flow no rule allows gets no answer (dropped in the kernel).
expect_dropped() {
	local before code
	before=$(up_count)
	code=$(c_http / "$1" 2)
	[[ $code == 000 ]] || fail "port $1: HTTP $code, expected the flow to be dropped"
	(($(up_count) == before)) || fail "port $1: a dropped flow reached the upstream"
	pass "port $1 from the client: dropped${2:-}"
}
status_text() { C systemctl show -p StatusText --value portcullis; }

# === the checks ===

# No Docker here: no group, no engine, no socket.
C getent group docker >/dev/null && fail "the container has a docker group; the check would prove nothing"
C test -e /run/docker.sock && fail "the container has a Docker socket"
pass "the container has no docker group and no Docker engine"

log "installing the binary, the unit and the rules"
C install -m 0755 /mnt/stage/portcullis /usr/local/bin/portcullis
C install -m 0644 /mnt/stage/portcullis.service /etc/systemd/system/portcullis.service
C install -d -m 0755 /etc/portcullis
C install -m 0644 /mnt/stage/rules.json /etc/portcullis/rules.json
C systemctl daemon-reload

C nft list table inet portcullis >/dev/null 2>&1 && fail "inet portcullis exists before the start"
start=$(date +%s%N)
C systemctl start portcullis || fail "systemctl start portcullis failed"
ms=$((($(date +%s%N) - start) / 1000000))
# No wait: Type=notify means the rules are in force when start returns.
ip netns exec "$HOSTNS" nft list table inet portcullis >"$TMP/table" 2>&1 ||
	fail "systemctl start returned but inet portcullis is not in the kernel: $(cat "$TMP/table")"
grep -q redirect "$TMP/table" || fail "the installed table has no redirect into the proxy: $(cat "$TMP/table")"
pass "systemctl start returned (${ms} ms) with inet portcullis installed in the container's namespace"
[[ $(C systemctl is-active portcullis) == active ]] || fail "the unit is not active"
st=$(status_text)
[[ $st == "enforcing /etc/portcullis/rules.json (rules version 1: 2 containers, 1 access entries)" ]] ||
	fail "STATUS= says '$st'"
pass "systemctl status says: $st"
# The sandbox still lets the daemon read /proc/sys/net/bridge (no
# ProcSubset=pid): it reports same-bridge enforcement, not "cannot read"
# (a fresh network namespace starts with bridge-nf-call-* at 1).
bridge=$(C /usr/local/bin/portcullis status | jq -r '"\(.bridge_netfilter.enforced) \(.counters.bridge_netfilter_ok) \(.bridge_netfilter.detail)"')
[[ $bridge == "true 1 "* ]] || fail "under the unit, status does not report same-bridge enforcement: $bridge"
pass "status under the unit: bridge_netfilter enforced (the daemon reads /proc/sys/net/bridge)"

# The daemon's identity and capabilities (/proc inside the container).
pid=$(C systemctl show -p MainPID --value portcullis)
[[ $pid =~ ^[1-9][0-9]*$ ]] || fail "no MainPID ($pid)"
C cat "/proc/$pid/status" >"$TMP/proc-status"
read -r _ ruid euid suid fsuid < <(grep '^Uid:' "$TMP/proc-status")
for u in "$ruid" "$euid" "$suid" "$fsuid"; do
	((u != 0)) || fail "the daemon runs with uid 0: $(grep '^Uid:' "$TMP/proc-status")"
done
# CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12): 0x1400, nothing else.
for f in CapPrm CapEff CapBnd CapAmb; do
	v=$(awk -v f="$f:" '$1 == f { print $2 }' "$TMP/proc-status")
	[[ $v == 0000000000001400 ]] || fail "$f is $v, expected 0000000000001400 (CAP_NET_ADMIN + CAP_NET_BIND_SERVICE only)"
done
grep -q '^NoNewPrivs:[[:space:]]*1' "$TMP/proc-status" || fail "NoNewPrivs is not set"
pass "the daemon (pid $pid) runs as uid $euid with only CAP_NET_ADMIN + CAP_NET_BIND_SERVICE"

expect_request /allowed 200
expect_request /secret 403
expect_dropped 8080

log "systemctl reload with a file that also allows /secret"
rules /allowed /secret >"$TMP/rules2.json"
C install -m 0644 /dev/stdin /etc/portcullis/rules.json <"$TMP/rules2.json"
C systemctl reload portcullis || fail "systemctl reload of a valid file failed"
# No wait: the reload job ends when the daemon has applied the file.
expect_request /secret 200 "" " (after systemctl reload)"
expect_request /other 403
[[ $(C systemctl is-active portcullis) == active ]] || fail "the unit is not active after reload"

log "systemctl reload with a broken file"
printf '{ "version": 1, "containers": ' | C install -m 0644 /dev/stdin /etc/portcullis/rules.json
if C systemctl reload portcullis 2>"$TMP/reload.err"; then
	fail "systemctl reload of a broken file succeeded"
fi
pass "systemctl reload of a broken file fails: $(head -n 1 "$TMP/reload.err")"
[[ $(C systemctl is-active portcullis) == active ]] || fail "the unit is not active after a refused reload"
expect_request /secret 200 "" " (the previous rules stay)"
expect_request /other 403
st=$(status_text)
[[ $st == *"last reload refused, previous rules kept"* ]] || fail "STATUS= does not report the refused reload: '$st'"
pass "systemctl status reports the refusal"

log "systemctl reload with a valid file the daemon cannot apply (proxy port moved)"
jq '. + {"proxy": {"listen_port": 15999}}' "$TMP/rules2.json" >"$TMP/rules3.json"
C install -m 0644 /dev/stdin /etc/portcullis/rules.json <"$TMP/rules3.json"
C /usr/local/bin/portcullis check /etc/portcullis/rules.json >/dev/null || fail "portcullis check refuses the moved-port file"
if C systemctl reload portcullis 2>"$TMP/reload.err"; then
	fail "systemctl reload of an unappliable file succeeded"
fi
pass "systemctl reload of a valid but unappliable file fails"
expect_request /secret 200 "" " (the previous rules stay)"

log "restoring the good file"
C install -m 0644 /dev/stdin /etc/portcullis/rules.json <"$TMP/rules2.json"
C systemctl reload portcullis || fail "systemctl reload of the restored file failed"
st=$(status_text)
[[ $st == "enforcing /etc/portcullis/rules.json (rules version "*": 2 containers, 1 access entries)" ]] ||
	fail "STATUS= after a good reload says '$st'"
pass "a good reload clears the refusal from the status"

# The journal: the daemon's lines are JSON objects.
C journalctl -u portcullis --no-pager -o cat >"$TMP/journal"
grep '^{' "$TMP/journal" >"$TMP/journal.json" || fail "no JSON lines in the journal: $(tail -n 5 "$TMP/journal")"
jq -e . "$TMP/journal.json" >/dev/null || fail "a journal line that looks like JSON does not parse"
n=$(wc -l <"$TMP/journal.json")
jq -e -s 'map(select(.fields.message == "rules installed")) | length >= 1' "$TMP/journal.json" >/dev/null ||
	fail "no JSON 'rules installed' line in the journal"
jq -e -s 'map(select(.level == "ERROR" and (.fields.message | startswith("reload refused")))) | length >= 2' \
	"$TMP/journal.json" >/dev/null || fail "the refused reloads are not logged as JSON errors"
pass "journalctl -u portcullis has $n JSON log lines (start, reloads, refusals)"

log "systemctl stop"
C systemctl stop portcullis || fail "systemctl stop failed"
[[ $(C systemctl is-active portcullis) == inactive ]] || fail "the unit is not inactive after stop"
# SIGTERM drains and exits 0 (a timeout would say Result=timeout).
res=$(C systemctl show -p Result --value portcullis)
code=$(C systemctl show -p ExecMainStatus --value portcullis)
[[ $res == success && $code == 0 ]] || fail "stop: Result=$res ExecMainStatus=$code, expected success and 0"
jq -e -s 'map(select(.fields.message | startswith("stopping"))) | length == 1' \
	< <(C journalctl -u portcullis --no-pager -o cat | grep '^{') >/dev/null || fail "no JSON 'stopping' line in the journal"
pass "systemctl stop: the daemon drained and exited 0"
ip netns exec "$HOSTNS" nft list table inet portcullis >/dev/null 2>&1 ||
	fail "systemctl stop removed inet portcullis"
pass "after systemctl stop inet portcullis is still installed"
expect_request /secret 000 "" " (stopped: the redirected flow is refused, fail closed)"
expect_dropped 8080 " (stopped)"

log "the Docker drop-in, on a host that has the docker group"
C groupadd --system docker
gid=$(C getent group docker | cut -d: -f3)
C install -d -m 0755 /etc/systemd/system/portcullis.service.d
C install -m 0644 /mnt/stage/docker.conf /etc/systemd/system/portcullis.service.d/docker.conf
C systemctl daemon-reload
C systemctl start portcullis || fail "systemctl start with the docker drop-in failed"
pid=$(C systemctl show -p MainPID --value portcullis)
groups=$(C awk '$1 == "Groups:" { $1 = ""; print }' "/proc/$pid/status")
[[ " $groups " == *" $gid "* ]] || fail "with the drop-in the daemon is not in group docker ($gid): groups '$groups'"
pass "with the drop-in the daemon gets the docker group ($gid) and still starts without Docker running"
expect_request /secret 200 "" " (restarted)"
C systemctl stop portcullis
