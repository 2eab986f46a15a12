//! Frontend hot-path costs: route lookup (constant in the number of routes:
//! compare 10 with 1000 hosts) and member selection per balance algorithm.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::balance::{Balancer, PickInput};
use portcullis::policy::routes::route_host;
use portcullis::policy::Policy;
use portcullis::state::directory::Directory;

/// One frontend with `hosts` exact hosts × 3 prefixes plus wildcard and
/// host-less routes; pools of 4 members per algorithm.
fn setup(hosts: usize) -> (Policy, Directory) {
    let mut routes = Vec::new();
    for h in 0..hosts {
        for p in ["/api", "/api/v2", "/static"] {
            routes.push(format!(
                "{{ \"host\": \"h{h}.example\", \"path_prefix\": \"{p}\", \"pool\": \"rr\" }}"
            ));
        }
    }
    routes.push("{ \"host\": \"*.example\", \"pool\": \"hash\" }".into());
    routes.push("{ \"path_prefix\": \"/lc\", \"pool\": \"lc\" }".into());
    let members = r#"["c0:80", "c1:80", {"target": "c2:80", "weight": 3}, "c3:80"]"#;
    let text = format!(
        r#"{{ "version": 1,
  "containers": {{ "c0": {{ "address": "198.19.0.2" }}, "c1": {{ "address": "198.19.0.3" }},
                   "c2": {{ "address": "198.19.0.4" }}, "c3": {{ "address": "198.19.0.5" }} }},
  "frontends": [ {{ "name": "edge", "listen": "127.0.0.1:8080", "routes": [{}] }} ],
  "pools": {{ "rr": {{ "members": {members} }},
             "lc": {{ "members": {members}, "balance": "least_connections" }},
             "hash": {{ "members": {members}, "balance": "hash", "hash_key": "client_ip" }} }} }}"#,
        routes.join(",\n")
    );
    let policy =
        Policy::compile(portcullis::rules::parse("bench.json", &text).expect("valid")).unwrap();
    let dir = Directory::build(&policy, |_| Vec::new());
    (policy, dir)
}

fn bench(c: &mut Criterion) {
    for hosts in [10, 1000] {
        let (policy, _) = setup(hosts);
        let lb = Balancer::compile(&policy);
        let fe = &lb.frontends[0];
        c.bench_function(&format!("route lookup exact host ({hosts} hosts)"), |b| {
            b.iter(|| {
                let h = route_host(black_box(b"H7.Example:8080")).unwrap();
                fe.lookup(Some(&h), black_box("/api/v2/orders/17"))
            })
        });
        c.bench_function(&format!("route lookup wildcard ({hosts} hosts)"), |b| {
            b.iter(|| fe.lookup(Some(black_box("a.b.example")), black_box("/x/y/z")))
        });
    }
    let (policy, dir) = setup(10);
    let lb = Balancer::compile(&policy);
    let input = PickInput {
        client: "198.51.100.7".parse().unwrap(),
        headers: &[],
    };
    for pool in &lb.pools {
        c.bench_function(&format!("pick member ({})", pool.name), |b| {
            b.iter(|| {
                let key = pool.request_key(black_box(&input));
                pool.pick(&dir, key, &[]).map(|p| p.index)
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
