//! The trait boundary: the daemon's directory build goes through whatever
//! [`Discovery`] it holds, so a second source (Kubernetes) plugs in without
//! touching the daemon. A fake source stands in for the platform.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::{BoxFuture, Discovery, Known, Names, NothingKnown, Outcome, Resolution};
use crate::nft;
use crate::policy::guard::Cidr;
use crate::policy::Policy;

const RULES: &str = r#"{
  "version": 1,
  "guard": { "networks": ["198.19.9.0/24", { "docker_network": "shop-net" }, { "docker_network": "shop-v6" }] },
  "containers": {
    "client": { "address": "198.19.9.2" },
    "web": { "docker": "shop-web" },
    "db": { "docker": "shop-db" }
  },
  "access": [
    { "from": "client", "to": "web", "ports": [80] },
    { "from": "web", "to": "db", "ports": [5432] }
  ]
}"#;

fn policy() -> Policy {
    Policy::compile(crate::rules::parse("rules.json", RULES).expect("rules parse"))
        .expect("rules compile")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).expect("cidr")
}

/// What the fake was told in [`Discovery::report`].
#[derive(Debug, Clone, PartialEq)]
struct Told {
    names: Names,
    unreachable: bool,
    unplaced: Vec<String>,
    unresolved_networks: Vec<String>,
    network_errors: Vec<String>,
}

/// A source that knows a fixed map of names, or cannot be reached at all.
struct Fake {
    known: HashMap<String, Vec<IpAddr>>,
    /// Networks it answers for: their subnets, or an error.
    networks: HashMap<String, Result<Vec<Cidr>, String>>,
    down: bool,
    asked: Mutex<Vec<Names>>,
    told: Mutex<Vec<Told>>,
}

impl Fake {
    fn new(known: &[(&str, &[&str])], down: bool) -> Fake {
        Fake {
            known: known
                .iter()
                .map(|(n, a)| (n.to_string(), a.iter().map(|a| ip(a)).collect()))
                .collect(),
            networks: HashMap::new(),
            down,
            asked: Mutex::default(),
            told: Mutex::default(),
        }
    }

    fn network(mut self, name: &str, found: Result<&[&str], &str>) -> Fake {
        let found = found
            .map(|nets| nets.iter().map(|n| cidr(n)).collect())
            .map_err(str::to_owned);
        self.networks.insert(name.to_owned(), found);
        self
    }
}

/// What a reload finds in force (the snapshot's part a source can miss).
struct Before {
    addresses: HashMap<&'static str, Vec<IpAddr>>,
    subnets: HashMap<&'static str, Vec<Cidr>>,
}

impl Known for Before {
    fn addresses(&self, name: &str) -> Vec<IpAddr> {
        self.addresses.get(name).cloned().unwrap_or_default()
    }
    fn subnets(&self, name: &str) -> Vec<Cidr> {
        self.subnets.get(name).cloned().unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fake platform is down")]
struct Down;

impl Discovery for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn names(&self, policy: &Policy) -> Names {
        Names::docker(policy)
    }

    fn resolve<'a>(&'a self, names: &'a Names) -> BoxFuture<'a, Resolution> {
        self.asked.lock().expect("lock").push(names.clone());
        Box::pin(async move {
            if self.down {
                return Resolution {
                    unreachable: Some(Box::new(Down)),
                    ..Resolution::default()
                };
            }
            Resolution {
                addresses: names
                    .containers
                    .iter()
                    .map(|n| (n.clone(), self.known.get(n).cloned().unwrap_or_default()))
                    .collect(),
                // A network it does not know: none there (a 404).
                networks: names
                    .networks
                    .iter()
                    .map(|n| {
                        (
                            n.clone(),
                            self.networks.get(n).cloned().unwrap_or(Ok(Vec::new())),
                        )
                    })
                    .collect(),
                unreachable: None,
            }
        })
    }

    fn follow(&self, _changed: mpsc::Sender<()>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn reachable(&self) -> bool {
        !self.down
    }

    fn report(&self, outcome: &Outcome<'_>) {
        self.told.lock().expect("lock").push(Told {
            names: outcome.names.clone(),
            unreachable: outcome.unreachable.is_some(),
            unplaced: outcome.unplaced.iter().map(|s| s.to_string()).collect(),
            unresolved_networks: outcome
                .unresolved_networks
                .iter()
                .map(|s| s.to_string())
                .collect(),
            network_errors: outcome
                .network_errors
                .iter()
                .map(|(n, e)| format!("{n}: {e}"))
                .collect(),
        });
    }
}

fn id(policy: &Policy, name: &str) -> u16 {
    policy
        .containers
        .iter()
        .position(|c| c.name == name)
        .expect("container in the rules") as u16
}

/// A [`Known`] that must not be asked: the source answered.
struct Unasked;

impl Known for Unasked {
    fn addresses(&self, name: &str) -> Vec<IpAddr> {
        panic!("the source is reachable, yet the known addresses of {name} were asked for")
    }
    fn subnets(&self, name: &str) -> Vec<Cidr> {
        panic!("the source is reachable, yet the known subnets of {name} were asked for")
    }
}

fn names(containers: &[&str], networks: &[&str]) -> Names {
    Names {
        containers: containers.iter().map(|s| s.to_string()).collect(),
        networks: networks.iter().map(|s| s.to_string()).collect(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Addresses the source gives are placed (and reach the kernel ruleset);
/// a name it cannot place is unplaced, reported, and opens nothing. The
/// subnets of a guarded network are guarded like the rule file's CIDRs; a
/// network the source does not know guards nothing and is reported.
#[tokio::test]
async fn the_directory_holds_what_the_source_places() {
    let policy = policy();
    let fake = Fake::new(&[("shop-web", &["198.19.9.3", "fd00::3"])], false)
        .network("shop-net", Ok(&["198.19.10.0/24", "fd00:198:19:10::/64"]));
    let dir = super::directory(&fake, &policy, &Unasked).await;

    // Every discovered container and guarded network is asked for, in the
    // rules' order.
    assert_eq!(
        *fake.asked.lock().expect("lock"),
        vec![names(&["shop-db", "shop-web"], &["shop-net", "shop-v6"])]
    );
    assert_eq!(dir.container_at(ip("198.19.9.3")), Some(id(&policy, "web")));
    assert_eq!(dir.container_at(ip("fd00::3")), Some(id(&policy, "web")));
    assert_eq!(dir.addresses(id(&policy, "db")), &[] as &[IpAddr]);
    assert_eq!(dir.unplaced(&policy), vec!["db"]);
    assert_eq!(
        dir.subnets("shop-net"),
        &[cidr("198.19.10.0/24"), cidr("fd00:198:19:10::/64")]
    );
    assert_eq!(dir.subnets("shop-v6"), &[] as &[Cidr]);
    assert_eq!(
        *fake.told.lock().expect("lock"),
        vec![Told {
            names: names(&["shop-db", "shop-web"], &["shop-net", "shop-v6"]),
            unreachable: false,
            unplaced: strings(&["db"]),
            unresolved_networks: strings(&["shop-v6"]),
            network_errors: vec![],
        }]
    );

    // What the kernel gets: client -> web opens for the placed address
    // (IPv4 only: the client has no IPv6 one); web -> db opens nothing,
    // db has no address.
    let rs = nft::compile::compile(&policy, &dir);
    let allowed: Vec<(String, String, u16)> = rs
        .allow
        .iter()
        .map(|k| (k.src.to_string(), k.dst.to_string(), k.port))
        .collect();
    assert_eq!(
        allowed,
        vec![("198.19.9.2".into(), "198.19.9.3".into(), 80)],
        "only the placed address is opened"
    );
    assert!(rs.redirect.is_empty());
    // The CIDR, then the named network's subnets, each naming its entry.
    let guarded: Vec<(String, String)> = rs
        .guard
        .iter()
        .map(|g| (g.net.to_string(), g.comment.clone()))
        .collect();
    assert_eq!(
        guarded,
        vec![
            ("198.19.9.0/24".into(), "guard.networks[0]:3:27".into()),
            (
                "198.19.10.0/24".into(),
                "guard.networks[1]:3:44 docker network shop-net".into()
            ),
            (
                "fd00:198:19:10::/64".into(),
                "guard.networks[1]:3:44 docker network shop-net".into()
            ),
        ]
    );
}

/// A source that cannot be reached leaves the known addresses and subnets
/// in force and is told so; containers and networks nothing was known of
/// stay unplaced and unresolved.
#[tokio::test]
async fn an_unreachable_source_keeps_what_was_known() {
    let policy = policy();
    let fake = Fake::new(&[("shop-web", &["198.19.9.3"])], true)
        .network("shop-net", Ok(&["198.19.12.0/24"]));
    let before = Before {
        addresses: HashMap::from([("shop-web", vec![ip("198.19.9.7")])]),
        subnets: HashMap::from([("shop-net", vec![cidr("198.19.10.0/24")])]),
    };
    let dir = super::directory(&fake, &policy, &before).await;
    assert_eq!(dir.container_at(ip("198.19.9.7")), Some(id(&policy, "web")));
    assert_eq!(dir.container_at(ip("198.19.9.3")), None);
    assert_eq!(dir.unplaced(&policy), vec!["db"]);
    assert_eq!(dir.subnets("shop-net"), &[cidr("198.19.10.0/24")]);
    let told = fake.told.lock().expect("lock").clone();
    assert_eq!(told.len(), 1);
    assert!(told[0].unreachable);
    assert_eq!(told[0].unplaced, strings(&["db"]));
    assert_eq!(told[0].unresolved_networks, strings(&["shop-v6"]));

    // At start nothing is known: the named networks guard nothing, and
    // say so.
    let dir = super::directory(&fake, &policy, &NothingKnown).await;
    assert!(dir.subnets("shop-net").is_empty());
    let told = fake.told.lock().expect("lock").clone();
    assert_eq!(
        told[1].unresolved_networks,
        strings(&["shop-net", "shop-v6"])
    );
    let rs = nft::compile::compile(&policy, &dir);
    assert_eq!(
        rs.guard.len(),
        1,
        "only the CIDR is guarded: {:?}",
        rs.guard
    );
}

/// The engine answers, but not usably for one network: that network keeps
/// its subnets (and the error is reported). A network the engine says is
/// gone guards nothing any more: nothing can be on it.
#[tokio::test]
async fn a_network_error_keeps_its_subnets_and_a_gone_network_guards_nothing() {
    let policy = policy();
    let fake = Fake::new(&[], false).network("shop-net", Err("500 boom"));
    let before = Before {
        addresses: HashMap::new(),
        subnets: HashMap::from([
            ("shop-net", vec![cidr("198.19.10.0/24")]),
            ("shop-v6", vec![cidr("fd00:198:19:11::/64")]),
        ]),
    };
    let dir = super::directory(&fake, &policy, &before).await;
    assert_eq!(dir.subnets("shop-net"), &[cidr("198.19.10.0/24")]);
    assert_eq!(dir.subnets("shop-v6"), &[] as &[Cidr]);
    let told = fake.told.lock().expect("lock").clone();
    assert_eq!(told[0].network_errors, strings(&["shop-net: 500 boom"]));
    assert_eq!(told[0].unresolved_networks, strings(&["shop-v6"]));
}

/// Rules without discovered containers or guarded networks: the source is
/// asked for nothing and fixed addresses are placed as written.
#[tokio::test]
async fn fixed_addresses_need_no_source() {
    let policy = Policy::compile(
        crate::rules::parse(
            "rules.json",
            r#"{ "version": 1,
                 "guard": { "networks": ["198.19.9.0/24"] },
                 "containers": { "a": { "address": "198.19.9.2" }, "b": { "address": "198.19.9.4" } },
                 "access": [ { "from": "a", "to": "b", "ports": [80] } ] }"#,
        )
        .expect("rules parse"),
    )
    .expect("rules compile");
    let fake = Fake::new(&[], false);
    let dir = super::directory(&fake, &policy, &Unasked).await;
    assert_eq!(*fake.asked.lock().expect("lock"), vec![Names::default()]);
    assert!(fake.names(&policy).is_empty());
    assert_eq!(dir.container_at(ip("198.19.9.4")), Some(id(&policy, "b")));
    assert!(dir.unplaced(&policy).is_empty());
    assert!(dir.networks.is_empty());
}
