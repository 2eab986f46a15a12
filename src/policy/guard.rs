//! Guarded networks: address ranges in which every address must belong to
//! a known container. Without them an address Portcullis cannot place (a
//! misspelt or stopped Docker container, a container that came back on a
//! new address, a stranger that took an old one) is simply not managed and
//! reaches every managed container; inside a guarded network such an
//! address is denied to and from managed containers until it is placed.
//!
//! This module holds the CIDR type the rule file, the nftables compiler and
//! `explain` share, and the one decision about an unplaced address.

use super::{Decision, Layer, Policy};
use crate::rules::RuleRef;
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
        let net = Cidr {
            addr,
            prefix: prefix as u8,
        };
        let masked = Cidr {
            addr: net.network_of(addr),
            prefix: net.prefix,
        };
        if masked.addr != addr {
            return Err(CidrError::HostBits(masked));
        }
        Ok(net)
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

/// One guarded network of the rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub net: Cidr,
    /// Its place in the rule file (`guard.networks[N]`).
    pub rule: RuleRef,
}

impl Policy {
    /// The guarded network holding `ip`, if any.
    pub fn guarded(&self, ip: IpAddr) -> Option<&Guarded> {
        self.guard.iter().find(|g| g.net.contains(ip))
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
    /// (`outbound`: the managed container is the source). Denied if the
    /// address is in a guarded network, else not Portcullis's to decide.
    pub fn decide_unplaced(&self, managed: &str, unplaced: IpAddr, outbound: bool) -> Decision {
        let pair = if outbound {
            format!("{managed} -> {unplaced}")
        } else {
            format!("{unplaced} -> {managed}")
        };
        match self.guarded(unplaced) {
            Some(g) => Decision::deny(
                Layer::Nftables,
                Some(g.rule.clone()),
                format!(
                    "denied by guard: {unplaced} is in guarded network {} and belongs to no known container, so {pair} is dropped until it is placed",
                    g.net
                ),
                self.audit,
                None,
            ),
            None => Decision {
                verdict: super::Verdict::Allow,
                layer: Layer::Nftables,
                rule: None,
                reason: format!(
                    "{unplaced} is in no guarded network and belongs to no known container: Portcullis does not filter {pair}"
                ),
                audit_deny: false,
                status: None,
            },
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
