//! The real proxy, driven with raw bytes through the kernel redirect in a
//! private network-namespace lab ([`lab`]). Needs root; fails loudly
//! without it, never skips.

mod cache;
mod corpus;
mod http2;
#[allow(dead_code)] // each test uses the helpers it needs
mod lab;
mod limits;
mod slowloris;
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
