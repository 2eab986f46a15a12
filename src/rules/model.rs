//! The rule file as typed data, exactly the contract of `spec/rules.md`.
//!
//! Every struct denies unknown fields: a typo such as `"metods"` must be an
//! error, never a silently weaker rule. Values that accept several shapes
//! (a name or a list, a header condition) have hand-written visitors so the
//! error says what was expected instead of serde's "did not match any
//! variant".

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub version: u64,
    #[serde(default)]
    pub mode: Option<Mode>,
    pub containers: BTreeMap<String, ContainerSpec>,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    #[serde(default)]
    pub frontends: Vec<Frontend>,
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    #[serde(default)]
    pub cache: BTreeMap<String, CacheSpec>,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub proxy: Option<ProxySettings>,
    /// Networks in which every address must belong to a known container.
    #[serde(default)]
    pub guard: Option<Guard>,
    /// Log what the kernel's default deny drops, through NFLOG.
    #[serde(default)]
    pub log_drops: Option<LogDrops>,
}

/// `log_drops`: the default deny's drops between managed containers are
/// sent (rate-limited) to an NFLOG group the daemon reads, and logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogDrops {
    /// Most packets logged per second, over all pairs (default 10; the
    /// rest are still dropped and counted, not logged).
    #[serde(default)]
    pub per_second: Option<u32>,
    /// The NFLOG group (default 2121); no other program may read it.
    #[serde(default)]
    pub nflog_group: Option<u16>,
}

/// `guard`: the networks Portcullis guards. An address inside one that
/// belongs to no known container is denied to and from managed containers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// CIDRs, IPv4 or IPv6 (`"198.19.0.0/16"`, `"fd00:19::/64"`), and
    /// Docker networks by name (`{"docker_network": "appnet"}`).
    pub networks: Vec<GuardNetwork>,
}

/// One entry of `guard.networks`. A string is always a CIDR (a name in a
/// string is refused with a hint, never guessed at: `"appnet"` and a
/// mistyped `"198.19.0.0"` must not both quietly mean something); a Docker
/// network is named in an object, the way `{"docker": NAME}` names a
/// container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardNetwork {
    /// `"198.19.0.0/16"` (checked by validation, with its position).
    Cidr(String),
    /// `{"docker_network": "appnet"}`: the subnets the Docker engine gives
    /// that network, resolved by the daemon.
    Docker(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    #[serde(default)]
    pub address: Option<OneOrMany<String>>,
    #[serde(default)]
    pub docker: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// The HTTP version the proxy speaks to an upstream: HTTP/1.1, or HTTP/2
/// with prior knowledge (`h2c`). Any client protocol reaches either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
pub enum UpstreamProtocol {
    #[default]
    #[serde(rename = "http1")]
    Http1,
    #[serde(rename = "h2c")]
    H2c,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEntry {
    /// Optional name, used instead of the file position as the entry's
    /// `rule` label in the metrics.
    #[serde(default)]
    pub name: Option<String>,
    pub from: OneOrMany<String>,
    pub to: String,
    pub ports: Vec<i64>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub http: Option<Vec<HttpMatcher>>,
    /// The protocol the destination speaks to the proxy; default: the one
    /// each client speaks (a transparent proxy's natural choice).
    #[serde(default)]
    pub upstream_protocol: Option<UpstreamProtocol>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatcher {
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, HeaderCond>>,
}

/// A condition on one request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCond {
    Exact(String),
    Present,
    Absent,
    Prefix(String),
    Suffix(String),
    Regex(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    pub name: String,
    pub listen: String,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub default_pool: Option<String>,
    #[serde(default)]
    pub limits: Option<Limits>,
    /// TLS termination: the frontend speaks HTTPS instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<FrontendTls>,
}

/// `frontends[i].tls`: the certificates a TLS frontend serves (the
/// daemon reads and checks the files; see [`crate::tls`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendTls {
    /// Chosen by SNI among their names; the first is the default.
    pub certificates: Vec<CertificateFiles>,
    /// A plain-HTTP listener (`"IP:PORT"`) answering every request with a
    /// `308` to the same host and target over HTTPS on this frontend.
    #[serde(default)]
    pub redirect_http: Option<String>,
    /// `Strict-Transport-Security` on the responses of this frontend.
    #[serde(default)]
    pub hsts: Option<HstsSpec>,
}

/// `frontends[i].tls.hsts`: RFC 6797's header, added to every response a
/// member sends through this TLS frontend (unless it sent its own).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HstsSpec {
    /// `max-age`, in seconds (0 tells browsers to forget the policy).
    pub max_age_s: u32,
    #[serde(default)]
    pub include_subdomains: bool,
}

/// One certificate: PEM files, the chain (leaf first) and its key.
/// Relative paths are relative to the rule file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub pool: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub members: Vec<PoolMember>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub hash_key: Option<String>,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// What the members speak (default `http1`).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConnections,
    Hash,
}

/// `"container:port"` or `{ "target": "container:port", "weight": N }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    pub target: String,
    pub weight: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
    #[serde(default)]
    pub healthy_after: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    pub max_bytes: u64,
    #[serde(default)]
    pub default_ttl_s: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub max_header_bytes: Option<u64>,
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub header_timeout_ms: Option<u64>,
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_connections_per_source: Option<u64>,
    #[serde(default)]
    pub requests_per_second: Option<u64>,
    #[serde(default)]
    pub burst: Option<u64>,
    /// Request body bytes (as sent) read and checked before an upstream is
    /// chosen and connected; a larger body streams.
    #[serde(default)]
    pub request_buffer_bytes: Option<u64>,
    /// Total time for a request body, from the end of its head.
    #[serde(default)]
    pub body_timeout_ms: Option<u64>,
    /// Longest a write to a client may wait for it to read.
    #[serde(default)]
    pub send_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    #[serde(default)]
    pub listen_port: Option<i64>,
    #[serde(default)]
    pub admin: Option<String>,
    /// What the proxy does with request header names containing `_`
    /// (default [`HeadersWithUnderscores::RejectLookalikes`]).
    #[serde(default)]
    pub headers_with_underscores: Option<HeadersWithUnderscores>,
}

/// `proxy.headers_with_underscores`: CGI-style servers read `X_Foo` as
/// `X-Foo`, so an underscore spelling can smuggle a field past a rule or
/// past the proxy's own `X-Portcullis-Source`. No choice forwards such a
/// lookalike (references: nginx `underscores_in_headers`, Envoy
/// `headers_with_underscores_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeadersWithUnderscores {
    /// `400` for an underscore spelling of a field the proxy or a rule
    /// relies on (`Host`, framing, `X-Portcullis-Source`, every header a
    /// rule or a `hash_key` names); other underscore names pass.
    #[default]
    RejectLookalikes,
    /// Every name with `_` is removed before the rules see the request.
    Drop,
    /// `400` for every name with `_`.
    Reject,
}

// === impl OneOrMany ===

/// A single value or a list of them (`"from": "app2"` or `["app2", "app3"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let one = T::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(OneOrMany(vec![one]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element()? {
                    out.push(x);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

// === impl HeaderCond ===

impl<'de> Deserialize<'de> for HeaderCond {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderCond;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a header condition: \"exact value\", true, false, or one of {\"prefix\": …}, {\"suffix\": …}, {\"regex\": …}",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderCond, E> {
                Ok(HeaderCond::Exact(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<HeaderCond, E> {
                Ok(if v {
                    HeaderCond::Present
                } else {
                    HeaderCond::Absent
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderCond, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "empty header condition: expected {\"prefix\"|\"suffix\"|\"regex\": \"…\"}",
                    ));
                };
                let value: String = map.next_value()?;
                let cond = match key.as_str() {
                    "prefix" => HeaderCond::Prefix(value),
                    "suffix" => HeaderCond::Suffix(value),
                    "regex" => HeaderCond::Regex(value),
                    other => {
                        return Err(de::Error::unknown_field(
                            other,
                            &["prefix", "suffix", "regex"],
                        ))
                    }
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "a header condition has exactly one of prefix, suffix or regex",
                    ));
                }
                Ok(cond)
            }
        }
        d.deserialize_any(V)
    }
}

// === impl GuardNetwork ===

impl<'de> Deserialize<'de> for GuardNetwork {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GuardNetwork;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a network: \"ADDRESS/PREFIX\" or {\"docker_network\": \"NAME\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GuardNetwork, E> {
                Ok(GuardNetwork::Cidr(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GuardNetwork, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "empty guarded network: expected {\"docker_network\": \"NAME\"}",
                    ));
                };
                if key != "docker_network" {
                    return Err(de::Error::unknown_field(&key, &["docker_network"]));
                }
                let name: String = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "a guarded Docker network has exactly one field, docker_network",
                    ));
                }
                Ok(GuardNetwork::Docker(name))
            }
        }
        d.deserialize_any(V)
    }
}

// === impl PoolMember ===

impl<'de> Deserialize<'de> for PoolMember {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            target: String,
            #[serde(default = "one")]
            weight: u64,
        }
        fn one() -> u64 {
            1
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PoolMember;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"container:port\" or {\"target\": \"container:port\", \"weight\": N}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PoolMember, E> {
                Ok(PoolMember {
                    target: v.to_owned(),
                    weight: 1,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PoolMember, A::Error> {
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PoolMember {
                    target: f.target,
                    weight: f.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}
