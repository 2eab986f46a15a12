//! The trait boundary: the daemon's directory build goes through whatever
//! [`Discovery`] it holds, so a second source (Kubernetes) plugs in without
//! touching the daemon. A fake source stands in for the platform.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::{BoxFuture, Discovery, Outcome, Resolution};
use crate::nft;
use crate::policy::Policy;

const RULES: &str = r#"{
  "version": 1,
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

/// What the fake was told in [`Discovery::report`].
#[derive(Debug, Clone, PartialEq)]
struct Told {
    names: Vec<String>,
    unreachable: bool,
    unplaced: Vec<String>,
}

/// A source that knows a fixed map of names, or cannot be reached at all.
struct Fake {
    known: HashMap<String, Vec<IpAddr>>,
    down: bool,
    asked: Mutex<Vec<Vec<String>>>,
    told: Mutex<Vec<Told>>,
}

impl Fake {
    fn new(known: &[(&str, &[&str])], down: bool) -> Fake {
        Fake {
            known: known
                .iter()
                .map(|(n, a)| (n.to_string(), a.iter().map(|a| ip(a)).collect()))
                .collect(),
            down,
            asked: Mutex::default(),
            told: Mutex::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fake platform is down")]
struct Down;

impl Discovery for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn names(&self, policy: &Policy) -> Vec<String> {
        policy
            .containers
            .iter()
            .filter_map(|c| c.docker.clone())
            .collect()
    }

    fn resolve<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Resolution> {
        self.asked.lock().expect("lock").push(names.to_vec());
        Box::pin(async move {
            if self.down {
                return Resolution {
                    addresses: HashMap::new(),
                    unreachable: Some(Box::new(Down)),
                };
            }
            Resolution {
                addresses: names
                    .iter()
                    .map(|n| (n.clone(), self.known.get(n).cloned().unwrap_or_default()))
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
            names: outcome.names.to_vec(),
            unreachable: outcome.unreachable.is_some(),
            unplaced: outcome.unplaced.iter().map(|s| s.to_string()).collect(),
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

/// Addresses the source gives are placed (and reach the kernel ruleset);
/// a name it cannot place is unplaced, reported, and opens nothing.
#[tokio::test]
async fn the_directory_holds_what_the_source_places() {
    let policy = policy();
    let fake = Fake::new(&[("shop-web", &["198.19.9.3", "fd00::3"])], false);
    let dir = super::directory(&fake, &policy, |_| panic!("source is reachable")).await;

    // Every discovered container is asked for, in the rules' order.
    assert_eq!(
        *fake.asked.lock().expect("lock"),
        vec![vec!["shop-db".to_owned(), "shop-web".to_owned()]]
    );
    assert_eq!(dir.container_at(ip("198.19.9.3")), Some(id(&policy, "web")));
    assert_eq!(dir.container_at(ip("fd00::3")), Some(id(&policy, "web")));
    assert_eq!(dir.addresses(id(&policy, "db")), &[] as &[IpAddr]);
    assert_eq!(dir.unplaced(&policy), vec!["db"]);
    assert_eq!(
        *fake.told.lock().expect("lock"),
        vec![Told {
            names: vec!["shop-db".into(), "shop-web".into()],
            unreachable: false,
            unplaced: vec!["db".into()],
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
}

/// A source that cannot be reached leaves the known addresses in force and
/// is told so; containers nothing was known of stay unplaced.
#[tokio::test]
async fn an_unreachable_source_keeps_what_was_known() {
    let policy = policy();
    let fake = Fake::new(&[("shop-web", &["198.19.9.3"])], true);
    let dir = super::directory(&fake, &policy, |name| match name {
        "shop-web" => vec![ip("198.19.9.7")],
        _ => Vec::new(),
    })
    .await;
    assert_eq!(dir.container_at(ip("198.19.9.7")), Some(id(&policy, "web")));
    assert_eq!(dir.container_at(ip("198.19.9.3")), None);
    assert_eq!(dir.unplaced(&policy), vec!["db"]);
    let told = fake.told.lock().expect("lock").clone();
    assert_eq!(told.len(), 1);
    assert!(told[0].unreachable);
    assert_eq!(told[0].unplaced, vec!["db".to_owned()]);
}

/// Rules without discovered containers: the source is asked for nothing
/// and fixed addresses are placed as written.
#[tokio::test]
async fn fixed_addresses_need_no_source() {
    let policy = Policy::compile(
        crate::rules::parse(
            "rules.json",
            r#"{ "version": 1,
                 "containers": { "a": { "address": "198.19.9.2" }, "b": { "address": "198.19.9.4" } },
                 "access": [ { "from": "a", "to": "b", "ports": [80] } ] }"#,
        )
        .expect("rules parse"),
    )
    .expect("rules compile");
    let fake = Fake::new(&[], false);
    let dir = super::directory(&fake, &policy, |_| Vec::new()).await;
    assert_eq!(
        *fake.asked.lock().expect("lock"),
        vec![Vec::<String>::new()]
    );
    assert_eq!(dir.container_at(ip("198.19.9.4")), Some(id(&policy, "b")));
    assert!(dir.unplaced(&policy).is_empty());
}
