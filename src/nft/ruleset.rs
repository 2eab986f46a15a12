//! The nftables ruleset as plain data: what `portcullis nft` prints and what
//! `portcullis run` installs. Built from a compiled [`crate::policy::Policy`]
//! plus the resolved container addresses by a pure function, so it can be
//! unit-tested without a kernel and rendered two ways (nft text, netlink
//! batch) from one source of truth.

use std::net::IpAddr;

/// Name of the one table Portcullis owns (family `inet`).
pub const TABLE: &str = "portcullis";

pub use crate::policy::guard::Cidr;
pub use crate::policy::DropLog;
pub use crate::policy::L4;

/// One (source, destination, protocol, destination port) key. `src` and
/// `dst` are always the same IP family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: L4,
    pub port: u16,
    /// Where it came from, e.g. `access[0] rules.json:14:5 app2->app1`.
    pub comment: String,
}

/// A (source, destination) address pair whose otherwise-dropped traffic is
/// let through and logged as `audit_deny` (an access entry in audit mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrPair {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub comment: String,
}

/// A managed container address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Managed {
    pub addr: IpAddr,
    /// The container's name.
    pub comment: String,
}

/// A guarded network: within it, an address that is not in `managedN`
/// is denied to and from managed containers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuardNet {
    pub net: Cidr,
    /// Where it came from, e.g. `guard.networks[0]:3:17`.
    pub comment: String,
}

/// Everything Portcullis installs, in table `inet portcullis`.
///
/// Shape (`nft list table inet portcullis`; the full expected listing for
/// the contract's example is `nft/example.nft`, the reasons in
/// `nft/README.md`):
/// ```text
/// table inet portcullis {
///   set managed4  { type ipv4_addr }                                           (+ managed6)
///   set allow4    { type ipv4_addr . ipv4_addr . inet_proto . inet_service }   (+ allow6)
///   set redirect4 { type ipv4_addr . ipv4_addr . inet_proto . inet_service }   (+ redirect6)
///   set audit4    { type ipv4_addr . ipv4_addr }                               (+ audit6)
///   chain prerouting { type nat hook prerouting priority dstnat - 10; policy accept;
///     ip saddr . ip daddr . meta l4proto . tcp dport @redirect4 counter redirect to :PROXY }
///   chain forward { type filter hook forward priority filter - 10; policy accept;
///     ct state established,related accept
///     ip saddr . ip daddr . meta l4proto . tcp dport @allow4 counter accept   (+ udp)
///     ip saddr . ip daddr @audit4 counter log prefix "portcullis audit_deny " accept
///     ip saddr @managed4 ip daddr @managed4 counter drop   (global audit: log "audit_deny" + accept)
///     per guarded network (none without `guard`; global audit: log + accept):
///     ip saddr @managed4 ip daddr NET ip daddr != @managed4 counter drop
///     ip saddr NET ip saddr != @managed4 ip daddr @managed4 counter drop }
///   chain input { type filter hook input priority filter - 10; policy accept;
///     tcp dport PROXY ct status dnat counter accept
///     tcp dport PROXY counter drop }
/// }
/// ```
/// (each ipv4 rule has an ipv6 twin; every rule and element has a comment).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Port of the transparent proxy listener on the host.
    pub proxy_port: u16,
    /// Global audit mode: the default-deny rule logs `audit_deny` and accepts.
    pub audit: bool,
    /// Addresses of all managed containers (both families mixed).
    pub managed: Vec<Managed>,
    /// L4 flows accepted in the forward chain.
    pub allow: Vec<FlowKey>,
    /// TCP flows redirected into the proxy in the prerouting chain.
    pub redirect: Vec<FlowKey>,
    /// Pairs whose denied traffic is audited rather than dropped.
    pub audit_pairs: Vec<AddrPair>,
    /// Guarded networks, in rule-file order (both families mixed).
    pub guard: Vec<GuardNet>,
    /// Log the default deny's drops to NFLOG (rate-limited).
    pub log_drops: Option<DropLog>,
}
