//! Which address belongs to which managed container, right now.
//!
//! The policy names containers; packets and sockets carry addresses. Fixed
//! addresses come from the rule file, Docker containers are resolved by a
//! discovery source (`crate::discovery`, which feeds this module and is
//! never imported by it) and change as containers restart, so the
//! directory is rebuilt and republished (with the policy) whenever either
//! changes. The subnets of the Docker networks named in `guard.networks`
//! come from the same source and move with the same events, so they are
//! held here too: one comparison tells whether anything moved.

use crate::policy::guard::{Cidr, NamedSubnets};
use crate::policy::{ContainerId, Policy};
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// Addresses of each container, indexed by [`ContainerId`].
    pub addrs: Vec<Vec<IpAddr>>,
    by_addr: HashMap<IpAddr, ContainerId>,
    /// Subnets in force for each Docker network of `guard.networks`.
    pub networks: NamedSubnets,
}

impl Directory {
    /// Builds the directory from fixed addresses plus `docker`, which maps
    /// a Docker container name to its current addresses (empty if it is
    /// not running or cannot be resolved): what a discovery source found.
    pub fn build(policy: &Policy, mut docker: impl FnMut(&str) -> Vec<IpAddr>) -> Directory {
        let mut addrs = Vec::with_capacity(policy.containers.len());
        let mut by_addr = HashMap::new();
        for (i, c) in policy.containers.iter().enumerate() {
            let mut list = c.addresses.clone();
            if let Some(d) = &c.docker {
                for a in docker(d) {
                    // A Docker address that collides with a fixed one is
                    // ignored: the rule file wins, ambiguity never does.
                    if !by_addr.contains_key(&a) && !list.contains(&a) {
                        list.push(a);
                    }
                }
            }
            for a in &list {
                by_addr.entry(*a).or_insert(i as ContainerId);
            }
            addrs.push(list);
        }
        Directory {
            addrs,
            by_addr,
            networks: NamedSubnets::new(),
        }
    }

    /// Adds the subnets of the Docker networks `policy` guards by name:
    /// `subnets` maps a network name to those in force (empty: unresolved).
    pub fn with_networks(
        mut self,
        policy: &Policy,
        mut subnets: impl FnMut(&str) -> Vec<Cidr>,
    ) -> Directory {
        self.networks = policy
            .guard_docker_networks()
            .into_iter()
            .map(|name| {
                let mut nets = subnets(&name);
                nets.sort();
                nets.dedup();
                (name, nets)
            })
            .collect();
        self
    }

    /// The subnets in force for the guarded Docker network `name`.
    pub fn subnets(&self, name: &str) -> &[Cidr] {
        self.networks.get(name).map_or(&[], Vec::as_slice)
    }

    /// The managed container owning `ip`, if any.
    pub fn container_at(&self, ip: IpAddr) -> Option<ContainerId> {
        self.by_addr.get(&ip.to_canonical()).copied()
    }

    /// The Docker containers of `policy` without a known address (not
    /// running, unknown to the engine, or the engine unreachable).
    pub fn unplaced<'p>(&self, policy: &'p Policy) -> Vec<&'p str> {
        policy
            .containers
            .iter()
            .enumerate()
            .filter(|(i, c)| c.docker.is_some() && self.addresses(*i as ContainerId).is_empty())
            .map(|(_, c)| c.name.as_str())
            .collect()
    }

    pub fn addresses(&self, id: ContainerId) -> &[IpAddr] {
        self.addrs
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

impl crate::balance::Addresses for Directory {
    fn addresses(&self, id: ContainerId) -> &[IpAddr] {
        Directory::addresses(self, id)
    }
}
