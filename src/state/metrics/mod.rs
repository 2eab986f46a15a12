//! Counters of the data plane, exposed in Prometheus text format on the
//! admin endpoint.
//!
//! Two kinds, rendered one after the other: the plain totals below (one
//! atomic each, the names tests and scripts read since the start), and the
//! labelled families of [`labelled`] (through the `prometheus-client`
//! crate): requests by decision and rule, responses by frontend, pool,
//! member and status class, latency histograms, active connections, cache
//! per service, reloads and build info.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod labelled;
pub mod series;
pub use labelled::Labelled;

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
            /// The labelled families.
            pub labelled: Labelled,
        }
        impl Metrics {
            /// Prometheus exposition text (format 0.0.4, which
            /// `promtool check metrics` reads).
            pub fn render(&self) -> String {
                let mut s = String::new();
                $(
                    let _ = writeln!(s, "# HELP portcullis_{} {}", stringify!($name), $help);
                    // Prometheus convention: counters end in `_total`, the rest are gauges.
                    let kind = if stringify!($name).ends_with("_total") { "counter" } else { "gauge" };
                    let _ = writeln!(s, "# TYPE portcullis_{} {kind}", stringify!($name));
                    let _ = writeln!(s, "portcullis_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                self.labelled.render(&mut s);
                s
            }
            /// Name/value pairs, for `portcullis status`.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    connections_total: "Redirected connections accepted by the transparent proxy.",
    requests_allowed_total: "Requests forwarded because a rule allowed them.",
    requests_denied_total: "Requests refused with 403 by the access rules.",
    requests_audit_denied_total: "Requests enforce mode would have refused, let through in audit mode.",
    requests_bad_total: "Requests refused as malformed (400/501).",
    requests_timeout_total: "Requests refused with 408: head not within header_timeout_ms, body not within body_timeout_ms or stalled past idle_timeout_ms.",
    clients_send_timeout_total: "Connections closed because the client (in a tunnel: either side) read nothing for send_timeout_ms.",
    requests_header_too_large_total: "Requests refused with 431: head over max_header_bytes or too many fields.",
    requests_body_too_large_total: "Requests refused with 413: body over max_body_bytes.",
    requests_rate_limited_total: "Requests refused with 429: over requests_per_second/burst of their source.",
    connections_limited_total: "Connections refused with 429: max_connections_per_source of their source reached.",
    connections_idle_closed_total: "Keep-alive connections closed after idle_timeout_ms without a request.",
    tunnels_total: "WebSocket upgrades and CONNECT tunnels opened after the rules allowed them.",
    h2_connections_total: "HTTP/2 (prior knowledge) connections on redirected flows.",
    h2_streams_total: "HTTP/2 streams (requests) received.",
    upstream_errors_total: "Requests answered 502/504 because the upstream failed.",
    frontend_requests_total: "Requests that entered a frontend.",
    frontend_no_route_total: "Frontend requests answered 404 because no route matched.",
    frontend_unavailable_total: "Frontend requests answered 503 because the pool had no healthy member.",
    upstream_retries_total: "Frontend requests sent again to another pool member after a failure.",
    reloads_total: "Successful rule reloads.",
    reload_failures_total: "Rule reloads refused (the previous rules stayed).",
    cache_hits_total: "Requests to cached services answered from the cache.",
    cache_misses_total: "Requests to cached services answered by the upstream.",
    cache_stores_total: "Responses stored in the cache.",
    cache_evictions_total: "Cache entries evicted to stay within max_bytes.",
    cache_revalidations_total: "Stale cache entries confirmed by a 304 from the upstream.",
    cache_coalesced_total: "Cache misses that waited for a concurrent fetch of the same key.",
    cache_invalidations_total: "Unsafe requests that invalidated stored responses.",
    cache_bytes: "Bytes held by the cache (status, headers and bodies).",
    docker_engine_up: "1 while the Docker engine answers (events followed), 0 while it cannot be reached and the known addresses stay in force.",
    docker_unresolved_containers: "Docker containers of the rule file without a known address (not running, unknown, or the engine unreachable).",
    docker_unresolved_networks: "Docker networks of guard.networks without a known subnet (unknown to the engine, none configured, or never answered for): they guard nothing until they resolve.",
    nft_in_sync: "1 while the kernel holds the nftables rules portcullis installed, 0 while it does not (drift, or the table cannot be read).",
    bridge_netfilter_ok: "1 while traffic between containers on one bridge reaches nftables (br_netfilter loaded, net.bridge.bridge-nf-call-iptables and -ip6tables 1) or the rules name no container; 0 while access rules between containers on one bridge are NOT enforced.",
    nft_drift_repairs_total: "Times table inet portcullis was changed or removed by something else and applied again.",
    kernel_drop_log_up: "1 while the NFLOG group of log_drops is read; 0 while it cannot be bound (another reader), or without log_drops.",
    kernel_drops_logged_total: "Packets of the default deny logged through NFLOG (log_drops; at most per_second of them).",
}

/// The comment of the nftables rule dropping what no entry allows between
/// managed containers, before its `(ipv4)` / `(ipv6)`.
const DEFAULT_DENY: &str = "default deny between managed containers (";

/// Appends the kernel's drop counters read from nftables
/// ([`crate::nft::readback::rule_counters`]): packets and bytes dropped by
/// the default-deny rule of each address family. They are the kernel's
/// own counters, so they restart at 0 when a reload installs the table
/// again (Prometheus reads that as a counter reset).
pub fn render_kernel_drops(out: &mut String, counters: &[crate::nft::readback::RuleCounter]) {
    let drops: Vec<(&str, u64, u64)> = counters
        .iter()
        .filter_map(|c| {
            let family = c.comment.strip_prefix(DEFAULT_DENY)?.strip_suffix(')')?;
            Some((family, c.packets, c.bytes))
        })
        .collect();
    if drops.is_empty() {
        return;
    }
    for (name, help, bytes) in [
        ("kernel_drops_total", "Packets nftables dropped between managed containers because no access entry allows them, by address family (the total of all pairs).", false),
        ("kernel_dropped_bytes_total", "Bytes nftables dropped between managed containers because no access entry allows them, by address family.", true),
    ] {
        let _ = writeln!(out, "# HELP portcullis_{name} {help}");
        let _ = writeln!(out, "# TYPE portcullis_{name} counter");
        for (family, packets, b) in &drops {
            let v = if bytes { b } else { packets };
            let _ = writeln!(out, "portcullis_{name}{{family=\"{family}\"}} {v}");
        }
    }
}

/// Appends what the default deny dropped per pair of containers, from
/// the counters of the `drops` sets' elements
/// ([`crate::nft::readback::pair_counters`]), summed per (source,
/// destination) container as `name_of` names their addresses. An address
/// `name_of` does not know (the directory moved on since the table was
/// installed; the next install resets these counters) is left out here
/// and still counted in `kernel_drops_total`. Series only for pairs that
/// dropped something: the label values are container names from the rule
/// file, so their number is bounded by its containers squared.
pub fn render_kernel_pair_drops<'a>(
    out: &mut String,
    pairs: &[crate::nft::readback::PairCounter],
    name_of: impl Fn(std::net::IpAddr) -> Option<&'a str>,
) {
    let mut by_pair: std::collections::BTreeMap<(&str, &str), (u64, u64)> = Default::default();
    for p in pairs.iter().filter(|p| p.packets > 0) {
        let (Some(src), Some(dst)) = (name_of(p.src), name_of(p.dst)) else {
            continue;
        };
        let sum = by_pair.entry((src, dst)).or_default();
        sum.0 += p.packets;
        sum.1 += p.bytes;
    }
    for (name, help, bytes) in [
        ("kernel_pair_drops_total", "Packets nftables dropped between two managed containers because no access entry allows them, by source and destination container.", false),
        ("kernel_pair_dropped_bytes_total", "Bytes nftables dropped between two managed containers, by source and destination container.", true),
    ] {
        let _ = writeln!(out, "# HELP portcullis_{name} {help}");
        let _ = writeln!(out, "# TYPE portcullis_{name} counter");
        for ((src, dst), (packets, b)) in &by_pair {
            let v = if bytes { b } else { packets };
            let _ = writeln!(
                out,
                "portcullis_{name}{{source=\"{}\",destination=\"{}\"}} {v}",
                label_value(src),
                label_value(dst)
            );
        }
    }
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::readback::RuleCounter;

    #[test]
    fn pair_drops_are_summed_per_container_pair_and_escaped() {
        use crate::nft::readback::PairCounter;
        let p = |s: [u8; 4], d: [u8; 4], packets, bytes| PairCounter {
            src: s.into(),
            dst: d.into(),
            packets,
            bytes,
        };
        let pairs = [
            p([10, 0, 0, 1], [10, 0, 0, 2], 2, 120),
            // A second address of the same source container.
            p([10, 0, 0, 3], [10, 0, 0, 2], 1, 60),
            p([10, 0, 0, 2], [10, 0, 0, 1], 0, 0),
            // An address the directory no longer knows.
            p([10, 0, 0, 9], [10, 0, 0, 2], 5, 300),
        ];
        let name = |ip: std::net::IpAddr| match ip.to_string().as_str() {
            "10.0.0.1" | "10.0.0.3" => Some("web\"1"),
            "10.0.0.2" => Some("db"),
            _ => None,
        };
        let mut s = String::new();
        render_kernel_pair_drops(&mut s, &pairs, name);
        assert!(
            s.contains(
                "portcullis_kernel_pair_drops_total{source=\"web\\\"1\",destination=\"db\"} 3\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("portcullis_kernel_pair_dropped_bytes_total{source=\"web\\\"1\",destination=\"db\"} 180\n"),
            "{s}"
        );
        assert!(
            !s.contains("destination=\"web"),
            "no series for a pair that dropped nothing: {s}"
        );
        assert_eq!(s.matches("\"} ").count(), 2, "{s}");
    }

    #[test]
    fn kernel_drops_come_from_the_default_deny_rules_only() {
        let rule = |comment: &str, packets, bytes| RuleCounter {
            comment: comment.into(),
            packets,
            bytes,
        };
        let mut s = String::new();
        render_kernel_drops(
            &mut s,
            &[
                rule("access entries allowed at l4 (tcp, ipv4)", 50, 5000),
                rule("default deny between managed containers (ipv4)", 3, 180),
                rule("default deny between managed containers (ipv6)", 0, 0),
            ],
        );
        assert!(
            s.contains("portcullis_kernel_drops_total{family=\"ipv4\"} 3\n"),
            "{s}"
        );
        assert!(
            s.contains("portcullis_kernel_drops_total{family=\"ipv6\"} 0\n"),
            "{s}"
        );
        assert!(
            s.contains("portcullis_kernel_dropped_bytes_total{family=\"ipv4\"} 180\n"),
            "{s}"
        );
        assert!(!s.contains("5000"), "{s}");
        let mut none = String::new();
        render_kernel_drops(
            &mut none,
            &[rule(
                "audit mode: log what default deny would drop (ipv4)",
                1,
                1,
            )],
        );
        assert_eq!(none, "");
    }
}
