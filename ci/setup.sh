#!/usr/bin/env bash
# Installs what Portcullis needs on a fresh Debian 12 host (as root):
# nftables + the C libraries the nftnl/mnl crates link to, iproute2 for the
# namespace labs, curl and h2load (nghttp2-client) for the HTTP/2 tests,
# promtool (prometheus, its service never started) for the /metrics check, and
# (with --docker) the Docker engine, started with IPv4
# forwarding enabled first so Docker keeps the FORWARD policy at ACCEPT.
# Idempotent; fails loudly when something cannot be had.
set -euo pipefail

want_docker=0
[ "${1:-}" = "--docker" ] && want_docker=1

die() { echo "setup: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

pkgs=(nftables libnftnl-dev libmnl-dev iproute2 pkg-config gcc libc6-dev curl ca-certificates nghttp2-client prometheus)
[ "$want_docker" = 1 ] && pkgs+=(docker.io)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: install the prometheus package for promtool without
  # starting its service.
  policy=/usr/sbin/policy-rc.d made_policy=''
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  rc=0
  apt-get install -y -qq "${missing[@]}" >/dev/null || rc=$?
  [ -n "$made_policy" ] && rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed"
fi
command -v promtool >/dev/null || die "promtool not found after installing prometheus"

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) first"
command -v nft >/dev/null || die "nft not found after installing nftables"

sysctl -qw net.ipv4.ip_forward=1

if [ "$want_docker" = 1 ]; then
  if ! timeout 5 docker info >/dev/null 2>&1; then
    echo "setup: starting dockerd"
    setsid dockerd >/tmp/portcullis-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
      timeout 5 docker info >/dev/null 2>&1 && break
      sleep 1
    done
    timeout 5 docker info >/dev/null 2>&1 || die "dockerd did not start (see /tmp/portcullis-dockerd.log)"
  fi
fi
