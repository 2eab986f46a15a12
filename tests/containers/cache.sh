#!/usr/bin/env bash
# Scenario 5 of spec/scenarios.md with real containers: app1 is listed under
# `cache` in the example rule file, and app2 reaches it with `GET /foo...`
# (the access entry app2 -> app1:80). Requests are sent from inside app2;
# app1's own request counter (/__stats, read from the host) shows whether a
# request reached it. testsvc's query knobs (cc=, vary=, etag=, size=,
# delay_ms=) make app1 answer with the caching headers each check needs.
#
# Env: PORTCULLIS_BIN, TESTSVC_BIN (prebuilt binaries), PC_RUN_ID.
# Prints one PASS/FAIL line per check and ends with `N passed, M failed`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/containers/lib.sh
source "$HERE/lib.sh"

TEMPLATE=$HERE/rules/three-containers.json.tmpl
ADMIN=''
FRONT=''
TIMEOUT_MS=30000

# get TARGET [HEADER]...: one request from app2 to app1:80, the probe's JSON line.
get() {
	local target=$1
	shift
	local -a headers=()
	local h
	for h in "$@"; do headers+=(--header "$h"); done
	pc_probe_in app2 --timeout-ms "$TIMEOUT_MS" "${headers[@]}" "http://${PC_IP[app1]}$target"
}

# What a response was, as one phrase: `STATUS X-CACHE age=yes|no`.
phrase() {
	jq -r '
		def field($n): [.headers[]? | select(.[0] | ascii_downcase == $n) | .[1]];
		if .result == "http" then
			"\(.status) \(field("x-cache")[0] // "none") age=\(if (field("age") | length) == 1 and (field("age")[0] | test("^[0-9]+$")) then "yes" else "no" end)"
		else .result end' <<<"$1" 2>/dev/null || echo "unparsable: ${1:-none}"
}

# The request counter app1 wrote into its echo body when it made the response.
echo_counter() { jq -r '.body | fromjson | .counter' <<<"$1" 2>/dev/null || echo none; }

# rose BEFORE: how much app1's counter rose since BEFORE.
rose() {
	local after
	after=$(pc_counter app1)
	if [[ $1 =~ ^[0-9]+$ && $after =~ ^[0-9]+$ ]]; then echo $((after - $1)); else echo unreadable; fi
}

repeated_get_is_cached() {
	local t='/foo/cached?cc=max-age%3D60' before a b c
	before=$(pc_counter app1)
	a=$(get "$t")
	b=$(get "$t")
	c=$(get "$t")
	pc_expect "cacheable GET: first, second, third" "200 MISS age=no; 200 HIT age=yes; 200 HIT age=yes" \
		"$(phrase "$a"); $(phrase "$b"); $(phrase "$c")"
	pc_expect "cacheable GET: hits carry the first response's body" "same same" \
		"$([[ $(echo_counter "$b") == "$(echo_counter "$a")" ]] && echo same || echo differs) $([[ $(echo_counter "$c") == "$(echo_counter "$a")" ]] && echo same || echo differs)"
	pc_expect "cacheable GET x3: app1's counter rose by" 1 "$(rose "$before")"
}

not_cached() {
	local what=$1 t=$2 before a b
	before=$(pc_counter app1)
	a=$(get "$t")
	b=$(get "$t")
	pc_expect "$what: twice" "200 MISS age=no; 200 MISS age=no" "$(phrase "$a"); $(phrase "$b")"
	pc_expect "$what x2: app1's counter rose by" 2 "$(rose "$before")"
}

vary_per_variant() {
	local t='/foo/vary?cc=max-age%3D60&vary=Accept-Language' before en1 de1 en2 de2
	before=$(pc_counter app1)
	en1=$(get "$t" 'Accept-Language: en')
	de1=$(get "$t" 'Accept-Language: de')
	en2=$(get "$t" 'Accept-Language: en')
	de2=$(get "$t" 'Accept-Language: de')
	pc_expect "Vary: en, de, en, de" "200 MISS age=no; 200 MISS age=no; 200 HIT age=yes; 200 HIT age=yes" \
		"$(phrase "$en1"); $(phrase "$de1"); $(phrase "$en2"); $(phrase "$de2")"
	local seen_en seen_de
	seen_en=$(jq -r '.body | fromjson | [.headers[] | select(.[0] | ascii_downcase == "accept-language") | .[1]] | join(",")' <<<"$en2" 2>/dev/null || echo none)
	seen_de=$(jq -r '.body | fromjson | [.headers[] | select(.[0] | ascii_downcase == "accept-language") | .[1]] | join(",")' <<<"$de2" 2>/dev/null || echo none)
	pc_expect "Vary: each hit is its own variant (language app1 saw)" "en de" "$seen_en $seen_de"
	pc_expect "Vary: app1's counter rose by" 2 "$(rose "$before")"
}

revalidation() {
	local t='/foo/reval?cc=max-age%3D0&etag=v1' before a b
	before=$(pc_counter app1)
	a=$(get "$t")
	b=$(get "$t")
	pc_expect "stale entry with ETag: second answer" "200 HIT age=yes" "$(phrase "$b")"
	pc_expect "stale entry with ETag: the 304 kept the stored body" same \
		"$([[ $(echo_counter "$b") == "$(echo_counter "$a")" && $(echo_counter "$a") =~ ^[0-9]+$ ]] && echo same || echo differs)"
	pc_expect "stale entry with ETag: app1 was asked (conditionally) both times" 2 "$(rose "$before")"
}

too_large_passes_through() {
	# max_bytes 64 MiB: the per-entry bound is 8 MiB.
	local t='/foo/big?cc=max-age%3D60&size=9000000' before a b
	before=$(pc_counter app1)
	a=$(get "$t")
	b=$(get "$t")
	pc_expect "9 MB cacheable response: twice, whole" "200 MISS age=no 9000000; 200 MISS age=no 9000000" \
		"$(phrase "$a") $(jq -r .body_bytes <<<"$a" 2>/dev/null); $(phrase "$b") $(jq -r .body_bytes <<<"$b" 2>/dev/null)"
	pc_expect "9 MB response x2: app1's counter rose by" 2 "$(rose "$before")"
}

concurrent_misses() {
	local t='/foo/burst?cc=max-age%3D60&delay_ms=3000' before i
	local -a pids=()
	before=$(pc_counter app1)
	for ((i = 0; i < 50; i++)); do
		get "$t" >"$PC_TMP/burst.$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || true; done
	local statuses counters misses
	statuses=$(cat "$PC_TMP"/burst.* | jq -r '.status // .result' | sort | uniq -c | awk '{ printf "%sx%s ", $1, $2 }')
	counters=$(cat "$PC_TMP"/burst.* | jq -r '.body | fromjson | .counter' 2>/dev/null | sort -u | wc -l)
	misses=$(for f in "$PC_TMP"/burst.*; do phrase "$(cat "$f")"; done | grep -c ' MISS ' || true)
	pc_expect "50 concurrent GETs of one uncached URL: statuses" "50x200 " "$statuses"
	pc_expect "50 concurrent GETs: distinct bodies, MISS answers" "1 body, 1 MISS" "$counters body, $misses MISS"
	pc_expect "50 concurrent GETs: app1's counter rose by" 1 "$(rose "$before")"
	pc_log "coalesced waiters: $(pc_probe "http://$ADMIN/metrics" | jq -r .body | awk '$1 == "portcullis_cache_coalesced_total" { print $2 }')"
}

admin_purge() {
	local t='/foo/cached?cc=max-age%3D60' before purged a
	local url="http://$ADMIN/cache/purge?service=app1%3A80&target=%2Ffoo%2Fcached%3Fcc%3Dmax-age%253D60"
	purged=$(pc_probe --method POST "$url" | jq -r '"\(.status) \(.body | fromjson | .purged)"' 2>/dev/null || echo unparsable)
	pc_expect "admin: POST /cache/purge of /foo/cached" "200 1" "$purged"
	before=$(pc_counter app1)
	a=$(get "$t")
	pc_expect "after the purge: /foo/cached" "200 MISS age=no" "$(phrase "$a")"
	pc_expect "after the purge: app1's counter rose by" 1 "$(rose "$before")"
	pc_expect "admin: purge of a service not under cache" 404 \
		"$(pc_probe --method POST "http://$ADMIN/cache/purge?service=app3%3A80" | jq -r '.status // .result')"
	local hits
	hits=$(pc_probe "http://$ADMIN/metrics" | jq -r .body | awk '$1 == "portcullis_cache_hits_total" { print ($2 > 0) ? "counted" : "zero" }')
	pc_expect "metrics: portcullis_cache_hits_total" counted "${hits:-absent}"
}

# h2_get TARGET: one HTTP/2 (prior knowledge) request to the frontend, as
# `STATUS HTTP_VERSION X-CACHE COUNTER`.
h2_get() {
	local out
	out=$(curl -s --http2-prior-knowledge --max-time 30 -D "$PC_TMP/h2.head" -o "$PC_TMP/h2.body" \
		-w '%{http_code} %{http_version}' "http://$FRONT$1" 2>/dev/null) || out="failed"
	local xcache
	xcache=$(awk 'tolower($1) == "x-cache:" { sub(/\r$/, "", $2); print $2 }' "$PC_TMP/h2.head" 2>/dev/null)
	echo "$out ${xcache:-none} $(jq -r .counter "$PC_TMP/h2.body" 2>/dev/null || echo none)"
}

# The cache answers whichever way a request came: HTTP/2 clients of the
# frontend (pool "one" is app1:80, which is cached) get stored responses,
# the member (HTTP/1.1 only) is asked once.
h2_cache_hit() {
	local t='/one/h2?cc=max-age%3D60' before a b ca cb same=differs
	before=$(pc_counter app1)
	a=$(h2_get "$t")
	b=$(h2_get "$t")
	pc_expect "HTTP/2 client via the frontend: first, second (status, version, x-cache)" \
		"200 2 MISS; 200 2 HIT" "$(cut -d' ' -f1-3 <<<"$a"); $(cut -d' ' -f1-3 <<<"$b")"
	ca=$(cut -d' ' -f4 <<<"$a")
	cb=$(cut -d' ' -f4 <<<"$b")
	if [[ $ca =~ ^[0-9]+$ && $ca == "$cb" ]]; then same=same; fi
	pc_expect "HTTP/2 cache hit carries the first response's body ($a / $b)" same "$same"
	pc_expect "HTTP/2 GET x2: app1's counter rose by" 1 "$(rose "$before")"
}

start_portcullis() {
	local frontend proxy admin_port
	pc_free_port frontend
	FRONT=127.0.0.1:$frontend
	pc_free_port proxy
	pc_free_port admin_port
	ADMIN=127.0.0.1:$admin_port
	local rules=$PC_TMP/rules.json
	pc_render_rules "$TEMPLATE" "$rules" \
		APP1_ADDRESS="${PC_IP[app1]}" APP2_DOCKER="$PC_NAME-app2" APP3_ADDRESS="${PC_IP[app3]}" \
		FRONTEND_LISTEN="127.0.0.1:$frontend" PROXY_PORT="$proxy" ADMIN_ADDRESS="$ADMIN"
	pc_portcullis_start "$rules" "$ADMIN"
}

main() {
	pc_lab_setup all
	start_portcullis
	repeated_get_is_cached
	not_cached "Cache-Control: no-store" '/foo/nostore?cc=no-store'
	not_cached "Cache-Control: private" '/foo/private?cc=private,max-age%3D60'
	vary_per_variant
	revalidation
	too_large_passes_through
	concurrent_misses
	admin_purge
	h2_cache_hit
	local alive=exited
	kill -0 "$PC_PORTCULLIS_PID" 2>/dev/null && alive=running
	pc_expect "portcullis still running after the checks" running "$alive"
	pc_summary
}

main "$@"
