//! The real proxy, driven with raw bytes through the kernel redirect in a
//! private network-namespace lab ([`lab`]). Needs root; fails loudly
//! without it, never skips.

mod audit;
mod bodies;
mod cache;
mod corpus;
mod docker_down;
mod drift;
mod guard;
mod http2;
mod integrity;
mod ipv6;
#[allow(dead_code)] // each test uses the helpers it needs
mod lab;
mod limits;
mod member;
mod metrics;
mod pool_health;
mod reload;
mod retries;
mod slowloris;
mod translate;
mod tunnel;

/// ≥60 malformed or smuggling requests and a table of hostile upstream
/// responses, each refused as HTTP says with nothing reaching the upstream.
#[test]
fn hostile_requests_and_responses_are_refused() {
    let lab = lab::Lab::start(corpus::RULES);
    corpus::run_request_corpus(&lab);
    corpus::run_response_corpus(&lab);
}

/// Hundreds of clients sending their heads slowly do not stop a normal
/// client from being served, and each of them is answered 408.
#[test]
fn slowloris_does_not_starve_normal_clients() {
    slowloris::run();
}

/// max_body_bytes (413), max_header_bytes (431), header_timeout_ms (408),
/// idle_timeout_ms, max_connections_per_source and requests_per_second
/// with burst (429): answered, counted, logged with the source; entry
/// limits override global ones; one source does not starve another.
#[test]
fn limits_are_enforced_per_source() {
    limits::run();
}

/// WebSocket upgrades and CONNECT are tunnelled only after the rules
/// allow them and the upstream agrees; h2c upgrades are never honoured.
#[test]
fn tunnels_only_after_the_rule_check() {
    tunnel::run();
}

/// HTTP/2 prior knowledge with curl and h2load: every stream is checked
/// like an HTTP/1 request and forwarded over HTTP/2; rapid reset and
/// CONTINUATION floods are contained.
#[test]
fn http2_streams_are_checked_and_bounded() {
    http2::run();
}

/// Audit mode lets every would-be denial through — matcher refusals and
/// the proxy's default deny alike — and counts and logs each.
#[test]
fn audit_mode_never_blocks() {
    audit::run();
}

/// Something else flushing, deleting or editing table inet portcullis is
/// noticed and repaired within about a second, counted and logged, and the
/// rule file's enforcement is back.
#[test]
fn nftables_drift_is_repaired() {
    drift::run();
}

/// `portcullis reload` exits 0 once a changed file is in force, and 1 for a
/// broken file or one the daemon cannot apply, the previous rules kept.
#[test]
fn reload_command_reports_the_reloads_result() {
    reload::run();
}

/// The upstream receives exactly what the rules checked (issue 9): no
/// `Connection` option drops a checked or framing field, no underscore
/// lookalike passes, `..;` is refused, HTTP/2 `:authority` wins and
/// trailers are filtered; recorded on the upstreams' side.
#[test]
fn upstream_receives_what_the_rules_checked() {
    let lab = lab::Lab::start(integrity::RULES);
    integrity::run(&lab);
}

/// Clients cannot eject pool members: a member's 501 to `BREW /` counts as
/// alive, and 502s never eject more than half of a pool (nor a lone
/// member); the members receive every request.
#[test]
fn clients_cannot_eject_pool_members() {
    pool_health::run();
}

/// A request re-sent after a reused upstream connection failed is re-sent
/// only when idempotent: the upstream saw a POST exactly once.
#[test]
fn only_idempotent_requests_are_resent() {
    retries::run();
}

/// Request bodies are received and checked before an upstream is chosen:
/// a malformed or trickled body never reaches it (400/408, no connection),
/// a large one streams whole; a client that stops reading is cut after
/// send_timeout_ms; a stalled HTTP/2 body gets 408 (issue 9, class 8).
#[test]
fn slow_or_broken_bodies_never_reach_an_upstream_half_made() {
    bodies::run();
}

/// Only a 2xx/3xx to an unsafe method invalidates (RFC 9111 §4.4).
#[test]
fn cache_invalidates_only_on_success() {
    cache::run(cache::invalidation_needs_a_non_error_answer);
}

/// A POST with as many fields as a client may send still invalidates.
#[test]
fn cache_invalidation_survives_many_fields() {
    cache::run(cache::many_fields_do_not_skip_invalidation);
}

/// A HEAD revalidation never replaces a stored body with nothing.
#[test]
fn cache_head_keeps_the_stored_body() {
    cache::run(cache::head_never_replaces_a_stored_body);
}

/// An accepted unsafe request over HTTP/2 invalidates too.
#[test]
fn cache_http2_unsafe_requests_invalidate() {
    cache::run(cache::http2_unsafe_requests_invalidate_too);
}

/// A URL keeps at most 16 variants.
#[test]
fn cache_variants_are_bounded() {
    cache::run(cache::variants_per_url_are_bounded);
}

/// A client that does not read its response holds no one waiting.
#[test]
fn cache_slow_reader_holds_no_one_hostage() {
    cache::run(cache::a_slow_reader_holds_no_one_hostage);
}

/// A waiting client that left stops waiting.
#[test]
fn cache_waiter_that_left_stops_waiting() {
    cache::run(cache::a_waiter_whose_client_left_stops_waiting);
}

/// 1 000 requests with new 30 KB paths and `Accept-Encoding` variants do
/// not grow the daemon's RSS past the cache's `max_bytes` plus a fixed
/// overhead.
#[test]
fn cache_memory_is_bounded_by_max_bytes() {
    cache::memory_is_bounded_by_max_bytes();
}

/// An unreachable Docker engine does not stop the daemon: fixed containers
/// are enforced, Docker ones reported unplaced in status, metrics and log.
#[test]
fn starts_without_the_docker_engine() {
    docker_down::run();
}

/// Any client protocol reaches any upstream protocol on access flows
/// (HTTP/2 client to an HTTP/1.1 service and back, HTTP/1.1 client to an
/// h2c service), and HTTP/2 clients get the cache, decoded chunked bodies
/// and unsized request bodies from the one pipeline.
#[test]
fn protocols_are_translated_both_ways() {
    translate::run();
}

/// IPv6 end to end (issue 11): allowed HTTP is redirected into the proxy,
/// refused requests get 403 and never reach the upstream, ports without an
/// entry are dropped, L4-only ports connect, and neighbour discovery works
/// between bridged managed containers.
#[test]
fn ipv6_allow_deny_redirect_and_neighbour_discovery() {
    ipv6::run();
}

/// `/metrics` passes `promtool check metrics` after allowed, denied and
/// frontend traffic, and its labelled series count that traffic under the
/// rule file's positions and names.
#[test]
fn metrics_are_labelled_by_rule_and_pass_promtool() {
    metrics::run();
}
