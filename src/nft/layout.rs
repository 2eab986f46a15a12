//! The fixed shape of table `inet portcullis`, derived from a [`Ruleset`]:
//! which sets exist and what they hold, which chains exist and which rules
//! each one has, in order.
//!
//! Both outputs walk this one description — [`super::render`] prints it as
//! nft text, [`super::apply`] turns it into a netlink batch — so the two
//! cannot drift apart on what is installed. Only *how* a rule is spelled
//! (text vs. bytecode) lives in those modules.
//!
//! The shape does not depend on the rules: every set and every rule is
//! always there (an empty set matches nothing), so a reload only changes
//! set contents, the proxy port and the audit switch.

use std::net::IpAddr;

use super::ruleset::{Cidr, DropLog, Ruleset, L4};

/// Longest comment kept, in bytes. nft accepts 128, but libnftnl's rule
/// comment buffer holds 128 bytes *including* the 2-byte TLV header and the
/// NUL, so 125 is the most both install paths can carry identically.
pub(crate) const COMMENT_MAX: usize = 125;

/// Log prefix of everything that audit mode lets through.
pub(crate) const AUDIT_PREFIX: &str = "portcullis audit_deny ";

/// NFLOG prefix of the default deny's drops (`log_drops`).
pub const DROP_PREFIX: &str = "portcullis drop ";

// === impl Family ===

/// IP family of a set or a family-specific rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub(crate) fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Suffix of the set names (`allow4`, `allow6`).
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }

    /// Protocol keyword of the address matches (`ip saddr`, `ip6 saddr`).
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// `meta nfproto` value (NFPROTO_IPV4 / NFPROTO_IPV6).
    pub(crate) fn nfproto(self) -> u8 {
        match self {
            Family::V4 => 2,
            Family::V6 => 10,
        }
    }

    pub(crate) fn addr_len(self) -> u32 {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// Offset of the source address in the network header.
    pub(crate) fn saddr_offset(self) -> u32 {
        match self {
            Family::V4 => 12,
            Family::V6 => 8,
        }
    }

    /// Offset of the destination address in the network header.
    pub(crate) fn daddr_offset(self) -> u32 {
        self.saddr_offset() + self.addr_len()
    }

    fn addr_field(self) -> Field {
        match self {
            Family::V4 => Field::Ipv4Addr,
            Family::V6 => Field::Ipv6Addr,
        }
    }
}

// === impl Field ===

/// One component of a set key, as nft's datatypes name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
}

impl Field {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::Ipv4Addr => "ipv4_addr",
            Field::Ipv6Addr => "ipv6_addr",
            Field::InetProto => "inet_proto",
            Field::InetService => "inet_service",
        }
    }

    /// nft's datatype id (what `NFTA_SET_KEY_TYPE` carries).
    pub(crate) fn type_id(self) -> u32 {
        match self {
            Field::Ipv4Addr => 7,
            Field::Ipv6Addr => 8,
            Field::InetProto => 12,
            Field::InetService => 13,
        }
    }

    /// Length of the value itself, unpadded.
    pub(crate) fn len(self) -> u32 {
        match self {
            Field::Ipv4Addr => 4,
            Field::Ipv6Addr => 16,
            Field::InetProto => 1,
            Field::InetService => 2,
        }
    }

    /// Length in a concatenation: rounded up to 32-bit registers.
    pub(crate) fn padded_len(self) -> u32 {
        self.len().div_ceil(4) * 4
    }
}

// === impl KeyShape ===

/// What a set's key is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyShape {
    /// `ipvX_addr`: one address.
    Addr,
    /// `ipvX_addr . ipvX_addr . inet_proto . inet_service`.
    Flow,
    /// `ipvX_addr . ipvX_addr`.
    Pair,
}

impl KeyShape {
    pub(crate) fn fields(self, family: Family) -> Vec<Field> {
        let a = family.addr_field();
        match self {
            KeyShape::Addr => vec![a],
            KeyShape::Flow => vec![a, a, Field::InetProto, Field::InetService],
            KeyShape::Pair => vec![a, a],
        }
    }
}

// === impl Key ===

/// One set element's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Addr(IpAddr),
    Flow {
        src: IpAddr,
        dst: IpAddr,
        proto: L4,
        port: u16,
    },
    Pair {
        src: IpAddr,
        dst: IpAddr,
    },
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Key {
    /// The key as the kernel stores it: fields in network byte order, each
    /// padded with zeros to a multiple of 4 bytes.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        match self {
            Key::Addr(a) => octets(a),
            Key::Flow {
                src,
                dst,
                proto,
                port,
            } => {
                let mut b = octets(src);
                b.extend(octets(dst));
                b.extend([proto.number(), 0, 0, 0]);
                let [hi, lo] = port.to_be_bytes();
                b.extend([hi, lo, 0, 0]);
                b
            }
            Key::Pair { src, dst } => {
                let mut b = octets(src);
                b.extend(octets(dst));
                b
            }
        }
    }

    /// The key in nft syntax (`198.19.0.3 . 198.19.0.2 . tcp . 80`).
    pub(crate) fn text(&self) -> String {
        match self {
            Key::Addr(a) => a.to_string(),
            Key::Flow {
                src,
                dst,
                proto,
                port,
            } => format!("{src} . {dst} . {} . {port}", proto.name()),
            Key::Pair { src, dst } => format!("{src} . {dst}"),
        }
    }

    /// The order `nft list` prints elements in, so the rendered text reads
    /// exactly like the listing, as a sort key: single values by numeric
    /// value, and concatenations by their key bytes read as one
    /// little-endian integer (nft imports concatenated keys in host byte
    /// order before sorting), i.e. by the bytes reversed.
    fn listing_key(&self) -> Vec<u8> {
        let mut b = self.bytes();
        if !matches!(self, Key::Addr(_)) {
            b.reverse();
        }
        b
    }
}

// === impl SetLayout ===

/// One set element: a key and the comment saying where it came from
/// (sanitised; empty means none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) key: Key,
    pub(crate) comment: String,
}

/// One named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetLayout {
    pub(crate) name: String,
    pub(crate) family: Family,
    pub(crate) shape: KeyShape,
    /// Sorted as `nft list` prints them, without duplicate keys.
    pub(crate) elements: Vec<Element>,
    /// Every element has a `counter` that the rules' lookups of the set
    /// increment (`counter` in the set's declaration).
    pub(crate) counter: bool,
}

impl SetLayout {
    fn new(base: &str, family: Family, shape: KeyShape, mut elements: Vec<Element>) -> Self {
        // By comment, then (stable) by key: one key per element, not two
        // per comparison (a drops set of 100 containers has 9,900).
        elements.sort_by(|a, b| a.comment.cmp(&b.comment));
        elements.sort_by_cached_key(|e| e.key.listing_key());
        // The same key from two sources (e.g. two access entries naming the
        // same flow) is one element: a duplicate is an error for the kernel.
        // Keep every source in the comment.
        let mut unique: Vec<Element> = Vec::with_capacity(elements.len());
        for e in elements {
            match unique.last_mut() {
                Some(last) if last.key == e.key => {
                    if !e.comment.is_empty() && last.comment != e.comment {
                        let joined = if last.comment.is_empty() {
                            e.comment
                        } else {
                            format!("{}; {}", last.comment, e.comment)
                        };
                        last.comment = sanitize_comment(&joined);
                    }
                }
                _ => unique.push(e),
            }
        }
        SetLayout {
            name: format!("{base}{}", family.suffix()),
            family,
            shape,
            elements: unique,
            counter: false,
        }
    }

    pub(crate) fn fields(&self) -> Vec<Field> {
        self.shape.fields(self.family)
    }

    /// `NFTA_SET_KEY_TYPE`: for a concatenation nft folds the field types,
    /// six bits each, first field in the highest bits.
    pub(crate) fn key_type(&self) -> u32 {
        self.fields()
            .iter()
            .fold(0, |acc, f| (acc << 6) | f.type_id())
    }

    /// `NFTA_SET_KEY_LEN`: the padded field lengths added up.
    pub(crate) fn key_len(&self) -> u32 {
        let fields = self.fields();
        if fields.len() == 1 {
            fields[0].len()
        } else {
            fields.iter().map(|f| f.padded_len()).sum()
        }
    }

    pub(crate) fn is_concat(&self) -> bool {
        self.shape != KeyShape::Addr
    }

    /// `ipv4_addr . ipv4_addr . inet_proto . inet_service`.
    pub(crate) fn type_text(&self) -> String {
        self.fields()
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(" . ")
    }
}

// === impl ChainLayout ===

/// Base chain hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookPoint {
    Prerouting,
    Forward,
    Input,
}

impl HookPoint {
    pub(crate) fn name(self) -> &'static str {
        match self {
            HookPoint::Prerouting => "prerouting",
            HookPoint::Forward => "forward",
            HookPoint::Input => "input",
        }
    }
}

/// Base chain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainKind {
    Nat,
    Filter,
}

impl ChainKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ChainKind::Nat => "nat",
            ChainKind::Filter => "filter",
        }
    }
}

/// One base chain (policy accept: Portcullis only ever decides about
/// traffic it manages, everything else falls through to other tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainLayout {
    pub(crate) name: &'static str,
    pub(crate) hook: HookPoint,
    pub(crate) kind: ChainKind,
    /// Numeric priority, as the kernel takes it.
    pub(crate) priority: i32,
    /// The same priority as nft spells it (`dstnat - 10`).
    pub(crate) priority_text: &'static str,
    pub(crate) rules: Vec<RuleLayout>,
}

/// What a rule does; how it is spelled is up to the renderer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stmt {
    /// `ip saddr . ip daddr . meta l4proto . tcp dport @redirect4 counter redirect to :PORT`
    Redirect {
        family: Family,
        set: String,
        port: u16,
    },
    /// `ct state established,related accept`
    Established,
    /// `icmpv6 type 133-137 ip6 hoplimit 255 counter accept`: IPv6
    /// neighbour discovery (router/neighbour solicitation and advertisement,
    /// redirect) is never dropped. Between containers on one bridge
    /// (`br_netfilter`) the unicast advertisements and the reachability
    /// probes go from one managed address to another and conntrack leaves
    /// them untracked, so the default deny would drop them and the
    /// containers could not resolve each other at all, whatever the access
    /// entries allow. RFC 4861 makes receivers discard ND whose hop limit
    /// is not 255; a routed packet reaches the forward hook with its hop
    /// limit already decremented, so only on-link ND passes here.
    NeighbourDiscovery,
    /// `ip saddr . ip daddr . meta l4proto . tcp dport @allow4 counter accept`
    Allow {
        family: Family,
        proto: L4,
        set: String,
    },
    /// `ip saddr . ip daddr @audit4 counter log prefix "portcullis audit_deny " accept`
    AuditPair { family: Family, set: String },
    /// `ip saddr . ip daddr @drops4`: a lookup with no verdict, for the
    /// per-element counters of the set (each pair of managed containers'
    /// addresses): what the default deny right after it drops, counted per
    /// pair. If a pair is missing from the set nothing changes but its
    /// count; the drop is the next rule's.
    /// With `log`: `... limit rate N/second log prefix "portcullis drop "
    /// group G`, the same packets sent to NFLOG, at most N a second (the
    /// limit only ends this rule early, it drops nothing).
    CountPair {
        family: Family,
        set: String,
        log: Option<DropLog>,
    },
    /// `ip saddr @managed4 ip daddr @managed4 counter drop`, or in global
    /// audit mode `... counter log prefix "portcullis audit_deny " accept`.
    DefaultDeny {
        family: Family,
        set: String,
        audit: bool,
    },
    /// `ip saddr @managed4 ip daddr NET ip daddr != @managed4 counter drop`
    /// (`outbound`), or `ip saddr NET ip saddr != @managed4 ip daddr
    /// @managed4 counter drop`: a managed container and an address of a
    /// guarded network that belongs to no known container. In global
    /// audit mode `... counter log prefix "portcullis audit_deny " accept`.
    Guard {
        family: Family,
        set: String,
        net: Cidr,
        outbound: bool,
        audit: bool,
    },
    /// `tcp dport PORT ct status dnat counter accept`
    ProxyRedirected { port: u16 },
    /// `tcp dport PORT counter drop`
    ProxyDirect { port: u16 },
}

/// One rule: what it does and the comment saying why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleLayout {
    pub(crate) stmt: Stmt,
    pub(crate) comment: String,
}

// === impl Layout ===

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) sets: Vec<SetLayout>,
    pub(crate) chains: Vec<ChainLayout>,
}

fn same_family(a: &IpAddr, b: &IpAddr, family: Family) -> bool {
    Family::of(a) == family && Family::of(b) == family
}

/// Most elements of each `drops` set. Every ordered pair of managed
/// addresses of two different containers is one element: 100 containers
/// with one address each are 9,900. Beyond this the pairs of the
/// containers listed last (by address) are not counted on their own; they
/// are still dropped, and counted in the default deny's total.
pub(crate) const MAX_COUNTED_PAIRS: usize = 16_384;

/// Base name of the sets counting the default deny's drops per pair.
pub(crate) const DROPS: &str = "drops";

/// The `drops` set of `family`: every ordered pair of managed addresses of
/// different containers (a container's own addresses never pass the
/// forward hook to each other through the default deny as a pair of two
/// containers), commented `source->destination`.
fn drop_pairs(rs: &Ruleset, family: Family) -> Vec<Element> {
    let managed: Vec<_> = rs
        .managed
        .iter()
        .filter(|m| Family::of(&m.addr) == family)
        .collect();
    let mut out = Vec::new();
    for src in &managed {
        for dst in managed.iter().filter(|d| d.comment != src.comment) {
            if out.len() == MAX_COUNTED_PAIRS {
                return out;
            }
            out.push(Element {
                key: Key::Pair {
                    src: src.addr,
                    dst: dst.addr,
                },
                comment: sanitize_comment(&format!("{}->{}", src.comment, dst.comment)),
            });
        }
    }
    out
}

impl Layout {
    pub(crate) fn new(rs: &Ruleset) -> Layout {
        let mut sets = Vec::new();
        for family in Family::BOTH {
            let elements = rs
                .managed
                .iter()
                .filter(|m| Family::of(&m.addr) == family)
                .map(|m| Element {
                    key: Key::Addr(m.addr),
                    comment: sanitize_comment(&m.comment),
                })
                .collect();
            sets.push(SetLayout::new("managed", family, KeyShape::Addr, elements));
        }
        // A flow key whose two addresses differ in family can match no
        // packet; leaving it out changes nothing about what is matched.
        let flows = |keys: &[super::ruleset::FlowKey], family| -> Vec<Element> {
            keys.iter()
                .filter(|k| same_family(&k.src, &k.dst, family))
                .map(|k| Element {
                    key: Key::Flow {
                        src: k.src,
                        dst: k.dst,
                        proto: k.proto,
                        port: k.port,
                    },
                    comment: sanitize_comment(&k.comment),
                })
                .collect()
        };
        for family in Family::BOTH {
            sets.push(SetLayout::new(
                "allow",
                family,
                KeyShape::Flow,
                flows(&rs.allow, family),
            ));
        }
        for family in Family::BOTH {
            sets.push(SetLayout::new(
                "redirect",
                family,
                KeyShape::Flow,
                flows(&rs.redirect, family),
            ));
        }
        for family in Family::BOTH {
            let elements = rs
                .audit_pairs
                .iter()
                .filter(|p| same_family(&p.src, &p.dst, family))
                .map(|p| Element {
                    key: Key::Pair {
                        src: p.src,
                        dst: p.dst,
                    },
                    comment: sanitize_comment(&p.comment),
                })
                .collect();
            sets.push(SetLayout::new("audit", family, KeyShape::Pair, elements));
        }
        for family in Family::BOTH {
            let mut drops = SetLayout::new(DROPS, family, KeyShape::Pair, drop_pairs(rs, family));
            drops.counter = true;
            sets.push(drops);
        }

        let set = |base: &str, family: Family| format!("{base}{}", family.suffix());
        let rule = |stmt: Stmt, comment: String| RuleLayout { stmt, comment };
        let v = |family: Family| match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        let port = rs.proxy_port;

        let prerouting = Family::BOTH
            .iter()
            .map(|&f| {
                rule(
                    Stmt::Redirect {
                        family: f,
                        set: set("redirect", f),
                        port,
                    },
                    format!("http-filtered access flows ({}) into the proxy", v(f)),
                )
            })
            .collect();

        let mut forward = vec![
            rule(
                Stmt::Established,
                "replies and related traffic of accepted connections".to_string(),
            ),
            rule(
                Stmt::NeighbourDiscovery,
                "ipv6 neighbour discovery on the link is never dropped".to_string(),
            ),
        ];
        for f in Family::BOTH {
            for proto in [L4::Tcp, L4::Udp] {
                forward.push(rule(
                    Stmt::Allow {
                        family: f,
                        proto,
                        set: set("allow", f),
                    },
                    format!("access entries allowed at l4 ({}, {})", proto.name(), v(f)),
                ));
            }
        }
        for f in Family::BOTH {
            forward.push(rule(
                Stmt::AuditPair {
                    family: f,
                    set: set("audit", f),
                },
                format!("access entries in audit mode: log, do not drop ({})", v(f)),
            ));
        }
        for f in Family::BOTH {
            forward.push(rule(
                Stmt::CountPair {
                    family: f,
                    set: set(DROPS, f),
                    log: rs.log_drops,
                },
                format!(
                    "count what default deny drops, per pair of managed containers ({})",
                    v(f)
                ),
            ));
        }
        for f in Family::BOTH {
            let comment = if rs.audit {
                format!("audit mode: log what default deny would drop ({})", v(f))
            } else {
                format!("default deny between managed containers ({})", v(f))
            };
            forward.push(rule(
                Stmt::DefaultDeny {
                    family: f,
                    set: set("managed", f),
                    audit: rs.audit,
                },
                comment,
            ));
        }

        // After default deny: no packet matches both (default deny needs
        // both ends known, these one end unknown), and accepted flows only
        // ever hold known addresses, so they still win.
        for g in &rs.guard {
            let f = Family::of(&g.net.addr);
            for outbound in [true, false] {
                let what = if outbound {
                    "managed -> unplaced"
                } else {
                    "unplaced -> managed"
                };
                let verdict = if rs.audit { "audit" } else { "deny" };
                forward.push(rule(
                    Stmt::Guard {
                        family: f,
                        set: set("managed", f),
                        net: g.net,
                        outbound,
                        audit: rs.audit,
                    },
                    sanitize_comment(&format!(
                        "guard {verdict} {what} in {} {}",
                        g.net, g.comment
                    )),
                ));
            }
        }

        let input = vec![
            rule(
                Stmt::ProxyRedirected { port },
                "proxy port: connections redirected by portcullis".to_string(),
            ),
            rule(
                Stmt::ProxyDirect { port },
                "proxy port: direct connections are refused".to_string(),
            ),
        ];

        let chains = vec![
            ChainLayout {
                name: "prerouting",
                hook: HookPoint::Prerouting,
                kind: ChainKind::Nat,
                priority: -110,
                priority_text: "dstnat - 10",
                rules: prerouting,
            },
            ChainLayout {
                name: "forward",
                hook: HookPoint::Forward,
                kind: ChainKind::Filter,
                priority: -10,
                priority_text: "filter - 10",
                rules: forward,
            },
            ChainLayout {
                name: "input",
                hook: HookPoint::Input,
                kind: ChainKind::Filter,
                priority: -10,
                priority_text: "filter - 10",
                rules: input,
            },
        ];
        Layout { sets, chains }
    }
}

/// Makes a comment safe to put in nft's `comment "..."` and in netlink
/// user data: `"` becomes `'`, control characters become spaces, and it is
/// cut to [`COMMENT_MAX`] bytes on a character boundary.
pub(crate) fn sanitize_comment(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(COMMENT_MAX));
    for c in s.chars() {
        let c = match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        };
        if out.len() + c.len_utf8() > COMMENT_MAX {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn sanitize_replaces_quotes_and_controls_and_truncates() {
        assert_eq!(sanitize_comment("a \"b\"\n\tc"), "a 'b'  c");
        let long = "é".repeat(100); // 200 bytes
        let cut = sanitize_comment(&long);
        assert!(cut.len() <= COMMENT_MAX);
        assert_eq!(cut.len(), 124); // 62 two-byte chars; a 63rd would make 126
        assert_eq!(sanitize_comment(&"x".repeat(300)).len(), COMMENT_MAX);
    }

    /// Neighbour discovery between bridged managed containers is unicast
    /// from one managed address to another and untracked by conntrack: it
    /// must be accepted before the default deny (and in audit mode too),
    /// or containers on one bridge cannot resolve each other (issue 11).
    #[test]
    fn neighbour_discovery_is_accepted_before_the_default_deny() {
        for audit in [false, true] {
            let rs = Ruleset {
                audit,
                ..Ruleset::default()
            };
            let l = Layout::new(&rs);
            let forward = l
                .chains
                .iter()
                .find(|c| c.name == "forward")
                .expect("forward chain");
            let at =
                |want: &dyn Fn(&Stmt) -> bool| forward.rules.iter().position(|r| want(&r.stmt));
            let nd = at(&|s| *s == Stmt::NeighbourDiscovery).expect("an ND rule");
            let first_deny = at(&|s| matches!(s, Stmt::DefaultDeny { .. })).expect("default deny");
            assert!(nd < first_deny, "ND at {nd}, default deny at {first_deny}");
            for c in &l.chains {
                if c.name != "forward" {
                    assert!(c.rules.iter().all(|r| r.stmt != Stmt::NeighbourDiscovery));
                }
            }
        }
    }

    #[test]
    fn key_types_and_lengths_match_nft() {
        let rs = Ruleset::default();
        let l = Layout::new(&rs);
        let by_name = |n: &str| l.sets.iter().find(|s| s.name == n).cloned();
        let allow4 = by_name("allow4").expect("allow4");
        assert_eq!(allow4.key_type(), 0x001c_730d);
        assert_eq!(allow4.key_len(), 16);
        let allow6 = by_name("allow6").expect("allow6");
        assert_eq!(allow6.key_len(), 40);
        assert_eq!(by_name("audit4").expect("audit4").key_len(), 8);
        assert_eq!(by_name("audit6").expect("audit6").key_len(), 32);
        assert_eq!(by_name("managed4").expect("managed4").key_type(), 7);
        assert_eq!(by_name("managed6").expect("managed6").key_len(), 16);
    }

    #[test]
    fn flow_key_bytes_pad_fields_and_use_network_order() {
        let k = Key::Flow {
            src: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 3)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
            proto: L4::Tcp,
            port: 0x1f90,
        };
        assert_eq!(
            k.bytes(),
            [198, 19, 0, 3, 198, 19, 0, 2, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        let k6 = Key::Flow {
            src: IpAddr::V6(Ipv6Addr::LOCALHOST),
            dst: IpAddr::V6(Ipv6Addr::LOCALHOST),
            proto: L4::Udp,
            port: 53,
        };
        assert_eq!(k6.bytes().len(), 40);
    }

    #[test]
    fn duplicates_merge_and_mixed_families_are_dropped() {
        use super::super::ruleset::{FlowKey, Ruleset};
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let six = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let flow = |src, dst, c: &str| FlowKey {
            src,
            dst,
            proto: L4::Tcp,
            port: 80,
            comment: c.to_string(),
        };
        let rs = Ruleset {
            allow: vec![flow(a, b, "second"), flow(a, b, "first"), flow(a, six, "x")],
            ..Ruleset::default()
        };
        let l = Layout::new(&rs);
        let allow4 = &l
            .sets
            .iter()
            .find(|s| s.name == "allow4")
            .expect("set")
            .elements;
        assert_eq!(allow4.len(), 1);
        assert_eq!(allow4[0].comment, "first; second");
        let allow6 = &l
            .sets
            .iter()
            .find(|s| s.name == "allow6")
            .expect("set")
            .elements;
        assert!(allow6.is_empty());
    }
}
