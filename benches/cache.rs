//! The cache's per-request work besides the stores themselves: reading
//! the upstream head into a cache request (method class, primary key,
//! request directives), the variant key for a `Vary`, parsing response
//! directives, and deciding whether a stored response may answer.

use std::time::{Duration, SystemTime};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::cache::freshness::{
    current_age, http_date, usable, AgeFacts, CacheControl, RequestFacts, StoredFacts,
};
use portcullis::cache::key::CacheRequest;

/// An upstream head as a frontend writes it.
const HEAD: &[u8] = b"GET /bench?cc=max-age=60 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nuser-agent: wrk\r\naccept: */*\r\naccept-encoding: gzip\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nforwarded: for=127.0.0.1;proto=http;host=\"127.0.0.1:8080\"\r\n\r\n";

fn bench(c: &mut Criterion) {
    c.bench_function("cache request from the upstream head", |b| {
        b.iter(|| CacheRequest::parse(black_box(HEAD)).map(|r| r.bypass))
    });
    let req = CacheRequest::parse(HEAD).expect("a cacheable GET");
    let vary = ["accept-encoding".to_owned()];
    c.bench_function("variant key (Vary: accept-encoding)", |b| {
        b.iter(|| req.variant(black_box(&vary)))
    });
    let cc: &[u8] = b"public, max-age=60, must-revalidate";
    c.bench_function("parse response Cache-Control", |b| {
        b.iter(|| CacheControl::parse([black_box(cc)]))
    });
    c.bench_function("parse HTTP date", |b| {
        b.iter(|| http_date(black_box(b"Wed, 02 Dec 2026 12:00:00 GMT")))
    });
    let now = SystemTime::now();
    let stored = StoredFacts {
        lifetime: Duration::from_secs(60),
        age: AgeFacts {
            date: Some(now - Duration::from_secs(5)),
            age: None,
            request_time: now - Duration::from_secs(5),
            response_time: now - Duration::from_secs(5),
        },
        no_cache: false,
        must_revalidate: true,
        has_validator: true,
    };
    let facts = RequestFacts {
        get: true,
        ..RequestFacts::default()
    };
    c.bench_function("freshness: may a stored response answer", |b| {
        b.iter(|| usable(black_box(&stored), &facts, now))
    });
    c.bench_function("freshness: current age", |b| {
        b.iter(|| current_age(black_box(&stored.age), now))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
