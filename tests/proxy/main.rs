//! The real proxy, driven with raw bytes through the kernel redirect in a
//! private network-namespace lab ([`lab`]). Needs root; fails loudly
//! without it, never skips.

mod audit;
mod corpus;
mod docker_down;
mod drift;
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

/// An unreachable Docker engine does not stop the daemon: fixed containers
/// are enforced, Docker ones reported unplaced in status, metrics and log.
#[test]
fn starts_without_the_docker_engine() {
    docker_down::run();
}
