//! Guarded networks: address ranges in which every address must belong to
//! a known container. Without them an address Portcullis cannot place (a
//! misspelt or stopped Docker container, a container that came back on a
//! new address, a stranger that took an old one) is simply not managed and
//! reaches every managed container; inside a guarded network such an
//! address is denied to and from managed containers until it is placed.
//!
//! A guarded network is a CIDR of the rule file or a Docker network named
//! there; a named one guards the subnets the daemon resolved for it
//! ([`NamedSubnets`], held beside the container addresses in the
//! directory), so the rules and `explain` are decided from the same data.
//!
//! This module holds the CIDR type the rule file, the nftables compiler and
//! `explain` share, and the one decision about an unplaced address.

use super::{Decision, Layer, Policy};
use crate::rules::RuleRef;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// An IP network: an address with its host bits zero and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why a string is not a usable guarded network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("expected a network \"ADDRESS/PREFIX\" such as \"198.19.0.0/16\" or \"fd00:19::/64\"")]
    Syntax,
    #[error("prefix /{prefix} is out of range for {family} (1-{max})")]
    Prefix {
        prefix: u32,
        family: &'static str,
        max: u8,
    },
    #[error("host bits are set: the network is {0}")]
    HostBits(Cidr),
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX`. The prefix is required (a bare address is
    /// too easily a typo for a network), `/0` is refused (it would guard
    /// every address there is), and so are host bits (`198.19.0.1/16`
    /// usually means the author had something else in mind).
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let net = Cidr::parse_any(s)?;
        let masked = net.masked();
        if masked.addr != net.addr {
            return Err(CidrError::HostBits(masked));
        }
        Ok(net)
    }

    /// Parses a subnet someone else wrote (a Docker network's IPAM
    /// config): as [`Cidr::parse`], but host bits are cleared rather than
    /// refused (the range meant is not in doubt there).
    pub fn parse_subnet(s: &str) -> Result<Cidr, CidrError> {
        Cidr::parse_any(s).map(|n| n.masked())
    }

    fn parse_any(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = s.split_once('/').ok_or(CidrError::Syntax)?;
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Syntax)?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
            return Err(CidrError::Syntax);
        }
        let prefix: u32 = prefix.parse().map_err(|_| CidrError::Syntax)?;
        let (family, max) = match addr {
            IpAddr::V4(_) => ("IPv4", 32u8),
            IpAddr::V6(_) => ("IPv6", 128u8),
        };
        if prefix == 0 || prefix > u32::from(max) {
            return Err(CidrError::Prefix {
                prefix,
                family,
                max,
            });
        }
        Ok(Cidr {
            addr,
            prefix: prefix as u8,
        })
    }

    /// The network itself (host bits cleared).
    fn masked(&self) -> Cidr {
        Cidr {
            addr: self.network_of(self.addr),
            prefix: self.prefix,
        }
    }

    /// The address's bytes in network order (4 or 16).
    pub fn octets(&self) -> Vec<u8> {
        match self.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// The prefix as a byte mask of the address's length.
    pub fn mask(&self) -> Vec<u8> {
        let len = if self.addr.is_ipv4() { 4 } else { 16 };
        (0..len)
            .map(|i| {
                let bits = (u32::from(self.prefix)).saturating_sub(i * 8).min(8);
                if bits == 0 {
                    0
                } else {
                    0xffu8 << (8 - bits)
                }
            })
            .collect()
    }

    fn network_of(&self, addr: IpAddr) -> IpAddr {
        let mask = self.mask();
        match addr {
            IpAddr::V4(a) => {
                let mut o = a.octets();
                o.iter_mut().zip(&mask).for_each(|(b, m)| *b &= m);
                IpAddr::from(o)
            }
            IpAddr::V6(a) => {
                let mut o = a.octets();
                o.iter_mut().zip(&mask).for_each(|(b, m)| *b &= m);
                IpAddr::from(o)
            }
        }
    }

    /// Whether `ip` (IPv4-mapped IPv6 read as IPv4) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.network_of(ip) == self.addr
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What one entry of `guard.networks` guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardedNet {
    /// A range written in the rule file.
    Cidr(Cidr),
    /// A Docker network, by name: the subnets resolved for it
    /// ([`NamedSubnets`]), none while it is unresolved.
    Docker(String),
}

/// One guarded network of the rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub net: GuardedNet,
    /// Its place in the rule file (`guard.networks[N]`).
    pub rule: RuleRef,
}

/// The subnets in force for each Docker network named in `guard.networks`,
/// by name. A name with no entry, or an empty list, guards nothing: it is
/// unresolved (and reported as such).
pub type NamedSubnets = BTreeMap<String, Vec<Cidr>>;

/// A subnet in force and the entry it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardedSubnet<'a> {
    pub net: Cidr,
    pub guarded: &'a Guarded,
}

impl fmt::Display for GuardedSubnet<'_> {
    /// `198.19.0.0/16`, or `198.19.5.0/24 (Docker network appnet)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.guarded.net {
            GuardedNet::Cidr(_) => write!(f, "{}", self.net),
            GuardedNet::Docker(name) => write!(f, "{} (Docker network {name})", self.net),
        }
    }
}

impl Policy {
    /// The Docker networks named in `guard.networks`, in file order.
    pub fn guard_docker_networks(&self) -> Vec<String> {
        self.guard
            .iter()
            .filter_map(|g| match &g.net {
                GuardedNet::Docker(name) => Some(name.clone()),
                GuardedNet::Cidr(_) => None,
            })
            .collect()
    }

    /// Every guarded subnet in force, in rule-file order: each CIDR, and
    /// the subnets `named` holds for each Docker network.
    pub fn guard_subnets<'a>(
        &'a self,
        named: &'a NamedSubnets,
    ) -> impl Iterator<Item = GuardedSubnet<'a>> + 'a {
        self.guard.iter().flat_map(move |g| {
            let nets: &[Cidr] = match &g.net {
                GuardedNet::Cidr(c) => std::slice::from_ref(c),
                GuardedNet::Docker(name) => named.get(name).map_or(&[], Vec::as_slice),
            };
            nets.iter()
                .map(move |&net| GuardedSubnet { net, guarded: g })
        })
    }

    /// The named networks `named` holds no subnet for.
    pub fn unresolved_guard_networks<'a>(&'a self, named: &NamedSubnets) -> Vec<&'a str> {
        self.guard
            .iter()
            .filter_map(|g| match &g.net {
                GuardedNet::Docker(name) if named.get(name).is_none_or(Vec::is_empty) => {
                    Some(name.as_str())
                }
                _ => None,
            })
            .collect()
    }

    /// The guarded subnet holding `ip`, if any.
    pub fn guarded<'a>(&'a self, ip: IpAddr, named: &'a NamedSubnets) -> Option<GuardedSubnet<'a>> {
        self.guard_subnets(named).find(|g| g.net.contains(ip))
    }

    /// The fixed container address `ip` belongs to, if any.
    pub fn container_with_address(&self, ip: IpAddr) -> Option<super::ContainerId> {
        let ip = ip.to_canonical();
        self.containers
            .iter()
            .position(|c| c.addresses.contains(&ip))
            .map(|i| i as super::ContainerId)
    }

    /// What nftables does with a new connection between the managed
    /// container `managed` and an address that belongs to no container
    /// (`outbound`: the managed container is the source), with the named
    /// networks' subnets `named`. Denied if the address is in a guarded
    /// network, else not Portcullis's to decide (and a named network that
    /// is unresolved is said to be, since it might hold the address).
    pub fn decide_unplaced(
        &self,
        managed: &str,
        unplaced: IpAddr,
        outbound: bool,
        named: &NamedSubnets,
    ) -> Decision {
        let pair = if outbound {
            format!("{managed} -> {unplaced}")
        } else {
            format!("{unplaced} -> {managed}")
        };
        if let Some(g) = self.guarded(unplaced, named) {
            return Decision::deny(
                Layer::Nftables,
                Some(g.guarded.rule.clone()),
                format!(
                    "denied by guard: {unplaced} is in guarded network {g} and belongs to no known container, so {pair} is dropped until it is placed"
                ),
                self.audit,
                None,
            );
        }
        let mut reason = format!(
            "{unplaced} is in no guarded network and belongs to no known container: Portcullis does not filter {pair}"
        );
        let unresolved = self.unresolved_guard_networks(named);
        if !unresolved.is_empty() {
            reason.push_str(&format!(
                " (unresolved, so guarding nothing here: Docker network {})",
                unresolved.join(", ")
            ));
        }
        Decision {
            verdict: super::Verdict::Allow,
            layer: Layer::Nftables,
            rule: None,
            reason,
            audit_deny: false,
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_refuses_ambiguous_ones() {
        let n = Cidr::parse("198.19.0.0/16").unwrap();
        assert_eq!(n.to_string(), "198.19.0.0/16");
        assert_eq!(n.mask(), [255, 255, 0, 0]);
        assert!(n.contains("198.19.200.1".parse().unwrap()));
        assert!(n.contains("::ffff:198.19.0.9".parse().unwrap()));
        assert!(!n.contains("198.20.0.1".parse().unwrap()));
        assert!(!n.contains("fd00::1".parse().unwrap()));
        let six = Cidr::parse("fd00:19::/61").unwrap();
        assert_eq!(six.mask()[7], 0xf8);
        assert!(six.contains("fd00:19:0:7::1".parse().unwrap()));
        assert!(!six.contains("fd00:19:0:8::1".parse().unwrap()));
        assert_eq!(Cidr::parse("198.19.0.0"), Err(CidrError::Syntax));
        assert_eq!(Cidr::parse("198.19.0.0/+8"), Err(CidrError::Syntax));
        assert_eq!(Cidr::parse("appnet"), Err(CidrError::Syntax));
        assert!(matches!(
            Cidr::parse("0.0.0.0/0"),
            Err(CidrError::Prefix { .. })
        ));
        assert!(matches!(
            Cidr::parse("198.19.0.0/33"),
            Err(CidrError::Prefix { .. })
        ));
        assert_eq!(
            Cidr::parse("198.19.0.1/16").unwrap_err().to_string(),
            "host bits are set: the network is 198.19.0.0/16"
        );
        assert!(n.overlaps(&Cidr::parse("198.19.3.0/24").unwrap()));
        assert!(!n.overlaps(&Cidr::parse("198.18.0.0/16").unwrap()));
        assert!(!n.overlaps(&six));
    }
}
