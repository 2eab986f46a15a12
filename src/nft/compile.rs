//! Policy + current addresses (and the subnets of guarded Docker networks)
//! → [`Ruleset`]: the pure, compiling half of the nftables layer. Every set
//! element and guard rule carries a comment naming the rule-file entry it
//! came from, so `nft list` explains itself.

use super::ruleset::{AddrPair, FlowKey, GuardNet, Managed, Ruleset};
use crate::policy::guard::GuardedNet;
use crate::policy::Policy;
use crate::state::directory::Directory;
use std::net::IpAddr;

fn same_family(a: &IpAddr, b: &IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Builds the ruleset `run` installs for `policy` with the addresses in `dir`.
pub fn compile(policy: &Policy, dir: &Directory) -> Ruleset {
    let mut rs = Ruleset {
        proxy_port: policy.proxy_port,
        audit: policy.audit,
        log_drops: policy.log_drops,
        ..Ruleset::default()
    };
    for (i, c) in policy.containers.iter().enumerate() {
        for &addr in dir.addresses(i as u16) {
            rs.managed.push(Managed {
                addr,
                comment: c.name.clone(),
            });
        }
    }
    for e in &policy.entries {
        let to = policy.container_name(e.to);
        let rule = format!("{}:{}:{}", e.rule.path, e.rule.pos.line, e.rule.pos.col);
        for &f in &e.from {
            let from = policy.container_name(f);
            let comment = format!("{rule} {from}->{to}");
            for &src in dir.addresses(f) {
                for &dst in dir.addresses(e.to).iter().filter(|d| same_family(&src, d)) {
                    for &port in &e.ports {
                        let key = FlowKey {
                            src,
                            dst,
                            proto: e.proto,
                            port,
                            comment: comment.clone(),
                        };
                        if e.http.is_some() {
                            rs.redirect.push(key);
                        } else {
                            rs.allow.push(key);
                        }
                    }
                    if e.audit && !policy.audit {
                        rs.audit_pairs.push(AddrPair {
                            src,
                            dst,
                            comment: format!("{rule} audit {from}->{to}"),
                        });
                    }
                }
            }
        }
    }
    // Named Docker networks get the subnets the directory holds for them
    // (none while unresolved: reported by the discovery source).
    for g in policy.guard_subnets(&dir.networks) {
        let rule = &g.guarded.rule;
        let mut comment = format!("{}:{}:{}", rule.path, rule.pos.line, rule.pos.col);
        if let GuardedNet::Docker(name) = &g.guarded.net {
            comment.push_str(&format!(" docker network {name}"));
        }
        rs.guard.push(GuardNet {
            net: g.net,
            comment,
        });
    }
    rs.managed.sort();
    rs.allow.sort();
    rs.redirect.sort();
    rs.audit_pairs.sort();
    rs.audit_pairs
        .dedup_by(|a, b| a.src == b.src && a.dst == b.dst);
    rs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::ruleset::L4;

    #[test]
    fn example_redirects_app2_to_app1_and_manages_all() {
        let set =
            crate::rules::parse("rules.json", include_str!("../../rules/example.json")).unwrap();
        let policy = Policy::compile(set).unwrap();
        let dir = Directory::build(&policy, |name| {
            assert_eq!(name, "app2");
            vec!["198.19.0.3".parse().unwrap()]
        });
        let rs = compile(&policy, &dir);
        assert_eq!(rs.proxy_port, 15001);
        assert_eq!(rs.managed.len(), 3);
        assert!(rs.allow.is_empty());
        assert_eq!(rs.redirect.len(), 1);
        let r = &rs.redirect[0];
        assert_eq!(
            (r.src.to_string(), r.dst.to_string(), r.proto, r.port),
            ("198.19.0.3".into(), "198.19.0.2".into(), L4::Tcp, 80)
        );
        assert_eq!(r.comment, "access[0]:9:5 app2->app1");
    }

    #[test]
    fn unresolved_docker_container_gets_no_elements() {
        let set =
            crate::rules::parse("rules.json", include_str!("../../rules/example.json")).unwrap();
        let policy = Policy::compile(set).unwrap();
        let rs = compile(&policy, &Directory::build(&policy, |_| vec![]));
        assert_eq!(rs.managed.len(), 2);
        assert!(rs.redirect.is_empty());
    }
}
