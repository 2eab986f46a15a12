//! The demo's probe table: which requests it sends, what each is expected
//! to show, and what the rules say about it.
//!
//! "What the rules say" is computed by the same functions the daemon and
//! `portcullis explain` decide with ([`Policy::probe`] for access flows,
//! [`RouteTable::decide`] for frontend requests), so a demo row where
//! the rules and the expectation disagree means the rules changed, not
//! that the demo has its own idea of them.

use std::net::Ipv4Addr;

use portcullis::balance::Balancer;
use portcullis::policy::probe::RequestProbe;
use portcullis::policy::route_decision::FrontendRequest;
#[cfg(doc)]
use portcullis::policy::routes::RouteTable;
use portcullis::policy::{Layer, Policy, Verdict, L4};

/// What a probe is expected to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Reached app1 (HTTP 200 from the service, or a UDP reply).
    Reached,
    /// Refused by the proxy with 403.
    Forbidden,
    /// Dropped in the kernel: the client timed out.
    Dropped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Reached => "reached",
            Outcome::Forbidden => "403",
            Outcome::Dropped => "dropped",
        }
    }
}

/// One probe of scenarios 1–2, sent to app1 from `from`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub from: &'static str,
    pub port: u16,
    pub proto: L4,
    pub method: &'static str,
    pub path: &'static str,
    pub headers: &'static [&'static str],
    pub expect: Outcome,
}

const fn http(
    from: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [&'static str],
    expect: Outcome,
) -> Probe {
    Probe {
        from,
        port: 80,
        proto: L4::Tcp,
        method,
        path,
        headers,
        expect,
    }
}

/// The probes of scenarios 1 and 2 against app1.
pub fn probes() -> Vec<Probe> {
    use Outcome::*;
    vec![
        http("app3", "GET", "/foo", &[], Dropped),
        Probe {
            port: 8080,
            ..http("app3", "GET", "/", &[], Dropped)
        },
        Probe {
            port: 5353,
            proto: L4::Udp,
            ..http("app3", "", "", &[], Dropped)
        },
        http("app2", "GET", "/foo", &[], Reached),
        http("app2", "GET", "/foo/x?y=1", &[], Reached),
        http("app2", "PUT", "/bar", &["X-Bar: bar"], Reached),
        // app1 is cached (example rule file): no-cache makes this repeat
        // of GET /foo reach app1, which must see the replaced source.
        http(
            "app2",
            "GET",
            "/foo",
            &["X-Portcullis-Source: app3", "Cache-Control: no-cache"],
            Reached,
        ),
        http("app2", "POST", "/foo", &[], Forbidden),
        http("app2", "GET", "/bar", &[], Forbidden),
        http("app2", "PUT", "/bar", &[], Forbidden),
        http("app2", "PUT", "/bar", &["X-Bar: baz"], Forbidden),
        http("app2", "GET", "/foobar", &[], Forbidden),
        http("app2", "GET", "/foo/../admin", &[], Forbidden),
        Probe {
            port: 8080,
            ..http("app2", "GET", "/foo", &[], Dropped)
        },
        Probe {
            port: 5353,
            proto: L4::Udp,
            ..http("app2", "", "", &[], Dropped)
        },
    ]
}

impl Probe {
    /// The probe's headers as (name, value), split like a request line.
    pub fn header_pairs(&self) -> Vec<(&'static str, &'static str)> {
        self.headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .map(|(n, v)| (n.trim(), v.trim()))
            .collect()
    }

    pub fn describe(&self) -> String {
        let target = if self.proto == L4::Udp {
            "datagram".to_owned()
        } else {
            format!(
                "{} {}{}",
                self.method,
                self.path,
                self.headers
                    .iter()
                    .map(|h| format!(" [{h}]"))
                    .collect::<String>()
            )
        };
        format!(
            "{} -> app1:{}/{} {target}",
            self.from,
            self.port,
            self.proto.name()
        )
    }

    /// What the policy says, mapped onto an outcome (the same question as
    /// `portcullis explain`).
    pub fn explained(&self, policy: &Policy) -> Outcome {
        let headers: Vec<httparse::Header> = self
            .header_pairs()
            .into_iter()
            .map(|(name, v)| httparse::Header {
                name,
                value: v.as_bytes(),
            })
            .collect();
        let request = RequestProbe {
            method: self.method,
            target: self.path,
            headers: &headers,
        };
        // The very function `portcullis explain` answers with.
        let Ok(d) = policy.probe(self.from, "app1", self.proto, self.port, Some(&request)) else {
            return Outcome::Dropped;
        };
        match (d.verdict, d.layer) {
            (Verdict::Allow, _) => Outcome::Reached,
            (Verdict::Deny, Layer::Proxy) => Outcome::Forbidden,
            (Verdict::Deny, Layer::Nftables) => Outcome::Dropped,
        }
    }
}

/// One request of scenarios 3–4, from the host to frontend `edge`.
#[derive(Debug, Clone, Copy)]
pub struct FrontendProbe {
    pub host: &'static str,
    pub path: &'static str,
    /// The pool the rules are expected to route to (a status such as
    /// `404`: refused by the frontend).
    pub pool: &'static str,
    /// The service expected to answer (a status: the frontend itself).
    pub service: &'static str,
}

const fn fe(
    host: &'static str,
    path: &'static str,
    pool: &'static str,
    service: &'static str,
) -> FrontendProbe {
    FrontendProbe {
        host,
        path,
        pool,
        service,
    }
}

/// Scenarios 3 and 4, and two hostile requests the frontend must read as
/// the rules do (host case and port, a dot segment, an encoded `/`).
pub const FRONTEND_PROBES: [FrontendProbe; 8] = [
    fe("two.example", "/", "two", "app2"),
    fe("three.example", "/two", "three", "app3"),
    fe("other.test", "/two/x?y=1", "two", "app2"),
    fe("other.test", "/three", "three", "app3"),
    fe("other.test", "/one", "one", "app1"),
    fe("other.test", "/four", "404", "404"),
    fe("Two.EXAMPLE:8080", "/three/../x/%61", "two", "app2"),
    fe("other.test", "/two%2f..%2fone", "400", "400"),
];

impl FrontendProbe {
    /// The pool frontend `edge` routes this request to, or the status it
    /// refuses it with: what `explain --frontend` says, by the proxy's own
    /// decision function.
    pub fn routed(&self, policy: &Policy, lb: &Balancer) -> String {
        let headers = [httparse::Header {
            name: "Host",
            value: self.host.as_bytes(),
        }];
        let request = FrontendRequest {
            method: "GET",
            target: self.path,
            headers: &headers,
        };
        let Some(fe) = lb.frontend("edge") else {
            return "no frontend edge".to_owned();
        };
        match fe.decide(&policy.fields, &request) {
            Ok(r) => lb
                .pool(r.matched.pool())
                .map_or_else(|| "missing pool".to_owned(), |p| p.name.clone()),
            Err(refusal) => refusal.status().to_string(),
        }
    }
}

/// The example rule file (`rules/example.json`) placed in the lab: app1..3
/// at `app[i]`, the proxy and admin on the given ports, frontend `edge` on
/// 127.0.0.1:`front`.
pub fn lab_rules(
    app: [Ipv4Addr; 3],
    proxy_port: u16,
    admin_port: u16,
    front: u16,
) -> Result<String, String> {
    let text = include_str!("../../rules/example.json")
        .replace(
            "{ \"docker\": \"app2\" }",
            &format!("{{ \"address\": \"{}\" }}", app[1]),
        )
        .replace("198.19.0.2", &app[0].to_string())
        .replace("198.19.0.4", &app[2].to_string())
        .replace("\"0.0.0.0:8080\"", &format!("\"127.0.0.1:{front}\""));
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("rules/example.json: {e}"))?;
    v["proxy"] = serde_json::json!({
        "listen_port": proxy_port,
        "admin": format!("127.0.0.1:{admin_port}"),
    });
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let apps = [1, 2, 3].map(|i| Ipv4Addr::new(198, 19, 150, 1 + i));
        let text = lab_rules(apps, 15001, 19901, 18080).expect("lab rules");
        portcullis::rules::parse("lab.json", &text)
            .and_then(Policy::compile)
            .expect("the example rules placed in the lab compile")
    }

    /// The demo's expectations are what the example rules say: if
    /// rules/example.json changes, this fails before a root-only run does.
    #[test]
    fn the_example_rules_say_what_the_demo_expects() {
        let policy = policy();
        for p in probes() {
            assert_eq!(p.explained(&policy), p.expect, "{}", p.describe());
        }
        let lb = Balancer::compile(&policy);
        for f in FRONTEND_PROBES {
            assert_eq!(f.routed(&policy, &lb), f.pool, "{} {}", f.host, f.path);
        }
    }

    /// Each outcome is exercised, so a table that could only pass one way
    /// would show here.
    #[test]
    fn the_table_covers_every_outcome() {
        for o in [Outcome::Reached, Outcome::Forbidden, Outcome::Dropped] {
            assert!(probes().iter().any(|p| p.expect == o), "{o:?}");
        }
    }
}
