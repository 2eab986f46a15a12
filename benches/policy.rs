//! Hot-path costs: path normalisation, request-head parsing, the access
//! decision (flow lookup + matchers, and the whole of `decide_access`) and
//! the frontend decision on the example rules, plus the flow
//! lookup in a large policy to show it does not grow with the rule count.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::policy::access::{Access, FlowOwner, HttpRequest};
use portcullis::policy::matcher::RequestView;
use portcullis::policy::route_decision::FrontendRequest;
use portcullis::policy::{Policy, L4};
use portcullis::wire::head::{head_end, parse_request, MAX_HEADERS};
use portcullis::wire::normalize::normalize_path;

mod support;

fn example() -> Policy {
    let set = portcullis::rules::parse("example.json", include_str!("../rules/example.json"))
        .expect("valid");
    Policy::compile(set).expect("compiles")
}

/// `n` containers in a chain, each allowed to call the next on 16 ports.
fn large(n: usize) -> Policy {
    let access: Vec<String> = (0..n - 1)
        .map(|i| format!("{{ \"from\": \"c{i}\", \"to\": \"c{}\", \"ports\": [{}], \"http\": [{{ \"methods\": [\"GET\"], \"path_prefix\": \"/api\" }}] }}", i + 1, (8000..8016).map(|p| p.to_string()).collect::<Vec<_>>().join(",")))
        .collect();
    support::policy(n, &access)
}

fn bench(c: &mut Criterion) {
    c.bench_function("normalize clean path", |b| {
        b.iter(|| normalize_path(black_box("/foo/bar/baz.json")))
    });
    c.bench_function("normalize dirty path", |b| {
        b.iter(|| normalize_path(black_box("/foo/./bar//%62az/../x.json")))
    });

    let raw = b"PUT /bar/item?x=1 HTTP/1.1\r\nHost: app1\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Bar: bar\r\nContent-Length: 5\r\n\r\n";
    c.bench_function("parse request head", |b| {
        b.iter(|| {
            let end = head_end(black_box(raw)).ok().flatten().unwrap_or(raw.len());
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            parse_request(&raw[..end], &mut storage)
                .map(|h| h.framing)
                .ok()
        })
    });

    let p = example();
    let (app2, app1) = (
        p.container_id("app2").unwrap_or(0),
        p.container_id("app1").unwrap_or(0),
    );
    let headers = [httparse::Header {
        name: "X-Bar",
        value: b"bar",
    }];
    c.bench_function("decide request (example rules)", |b| {
        b.iter(|| {
            let e = p.flow(app2, app1, L4::Tcp, 80);
            e.map(|e| {
                Policy::check_request(
                    e,
                    &RequestView {
                        method: black_box("PUT"),
                        path: black_box("/bar/item"),
                        headers: &headers,
                    },
                )
            })
        })
    });

    // The proxy's whole decision for an allowed request: fields, target,
    // path, matchers (`Policy::decide_access`, which explain shares).
    let access_headers = [
        httparse::Header {
            name: "Host",
            value: b"app1",
        },
        httparse::Header {
            name: "X-Bar",
            value: b"bar",
        },
    ];
    c.bench_function("decide access, allowed (example rules)", |b| {
        b.iter(|| {
            p.flow(app2, app1, L4::Tcp, 80).map(|e| {
                matches!(
                    p.decide_access(
                        FlowOwner::Entry(e),
                        &HttpRequest {
                            method: black_box("PUT"),
                            target: black_box("/bar/item?x=1"),
                            headers: &access_headers,
                        },
                    ),
                    Access::Allow { .. }
                )
            })
        })
    });

    // The frontend decision (`RouteTable::decide`) for a routed request.
    let lb = portcullis::balance::Balancer::compile(&p);
    if let Some(fe) = lb.frontend("edge") {
        let host = [httparse::Header {
            name: "Host",
            value: b"other.test",
        }];
        c.bench_function("decide route (example rules)", |b| {
            b.iter(|| {
                fe.decide(
                    &p.fields,
                    &FrontendRequest {
                        method: "GET",
                        target: black_box("/three/x?y=1"),
                        headers: &host,
                    },
                )
                .map(|r| r.matched.pool())
                .ok()
            })
        });
    }

    for n in [10usize, 1000, 10_000] {
        let p = large(n);
        let (a, z) = (
            p.container_id(&format!("c{}", n / 2)).unwrap_or(0),
            p.container_id(&format!("c{}", n / 2 + 1)).unwrap_or(0),
        );
        c.bench_function(&format!("decide request ({n} containers)"), |b| {
            b.iter(|| {
                p.flow(a, z, L4::Tcp, black_box(8007)).map(|e| {
                    Policy::check_request(
                        e,
                        &RequestView {
                            method: "GET",
                            path: "/api/x",
                            headers: &[],
                        },
                    )
                })
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
