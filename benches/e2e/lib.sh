# Shared by run.sh and instructions.sh (sourced after tests/containers/lib.sh):
# the binaries to measure, the kernel lock, and the backend namespace.

# bench_binaries: PORTCULLIS_BIN and TESTSVC_BIN (a release build unless both
# are given), and PORTCULLIS_BASELINE_BIN checked if set. Before the lock:
# builds are slow.
bench_binaries() {
	if [[ -z ${PORTCULLIS_BIN:-} || -z ${TESTSVC_BIN:-} ]]; then
		command -v cargo >/dev/null || pc_die "cargo not found (or set PORTCULLIS_BIN and TESTSVC_BIN)"
		pc_log "building portcullis and testsvc (release)"
		(cd "$PC_REPO" && cargo build --release -p portcullis -p testsvc --bins) >&2 ||
			pc_die "release build failed"
		export PORTCULLIS_BIN=${PORTCULLIS_BIN:-$PC_TARGET_DIR/release/portcullis}
		export TESTSVC_BIN=${TESTSVC_BIN:-$PC_TARGET_DIR/release/testsvc}
	fi
	if [[ -n ${PORTCULLIS_BASELINE_BIN:-} ]]; then
		[[ -x $PORTCULLIS_BASELINE_BIN ]] || pc_die "PORTCULLIS_BASELINE_BIN=$PORTCULLIS_BASELINE_BIN is not an executable"
	fi
	return 0
}

# bench_relock SCRIPT ARGS...: runs SCRIPT again holding the kernel lock
# (portcullis installs table inet portcullis), with BENCH_LOCKED set.
bench_relock() {
	local lock=/tmp/portcullis-kernel.lock
	pc_log "waiting for $lock (other sessions' kernel tests)"
	exec env BENCH_LOCKED=1 flock "$lock" "$@"
}

# bench_backend_ns NS VETH: namespace NS with eth0 at BACKEND=198.19.N.2/24,
# the host's end VETH at .1; sets NS_MADE so the caller's cleanup removes it.
bench_backend_ns() {
	local ns=$1 veth=$2 prefix attempt
	for ((attempt = 0; ; attempt++)); do
		((attempt < 30)) || pc_die "no free /24 in 198.19.0.0/16 after 30 tries"
		prefix=198.19.$((RANDOM % 200 + 20))
		ip -4 route show | grep -qF "$prefix." && continue
		ip -4 addr show | grep -qF "$prefix." && continue
		break
	done
	BACKEND=$prefix.2
	pc_log "backend namespace $ns at $BACKEND (veth $veth)"
	ip netns add "$ns"
	NS_MADE=1
	ip link add "$veth" type veth peer name eth0 netns "$ns"
	ip addr add "$prefix.1/24" dev "$veth"
	ip link set "$veth" up
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "$BACKEND/24" dev eth0
	ip -n "$ns" link set eth0 up
}

# bench_backend_ns_down NS VETH: removes what bench_backend_ns made. The veth
# goes first: deleting a namespace frees its devices asynchronously, so the
# host's end could still be listed right after `ip netns del`.
bench_backend_ns_down() {
	[[ -n ${NS_MADE:-} ]] || return 0
	ip link del "$2" 2>/dev/null
	ip netns del "$1"
	NS_MADE=''
}
