//! The per-request cost of the rate limit (`SourceTable::take_token`) with
//! a table that has seen a million distinct client addresses: it must not
//! grow with the number of sources (O(1) per request, bounded table).

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::proxy::limits::{Key, Rate, Scope, Source, SourceTable};
use tokio::time::Instant;

fn key(i: u64) -> Key {
    Key {
        source: Source::Address(IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_u128 << 96) | u128::from(i),
        ))),
        scope: Scope::Frontend(SocketAddr::from(([198, 19, 0, 1], 443))),
    }
}

fn bench(c: &mut Criterion) {
    let rate = Rate {
        per_second: 100.0,
        burst: 200.0,
    };
    let now = Instant::now();
    let filled = |n: u64| {
        let t = SourceTable::default();
        for i in 0..n {
            t.take_token(key(i), rate, now);
        }
        t
    };

    let small = filled(1_000);
    c.bench_function("take_token hot key, 1k sources seen", |b| {
        b.iter(|| small.take_token(black_box(key(7)), rate, now))
    });
    let large = filled(1_000_000);
    c.bench_function("take_token hot key, 1M sources seen", |b| {
        b.iter(|| large.take_token(black_box(key(999_999)), rate, now))
    });
    // Every request from a new address: inserts and generation turnover.
    let mut next = 1_000_000u64;
    c.bench_function("take_token new address each time, 1M sources seen", |b| {
        b.iter(|| {
            next += 1;
            large.take_token(black_box(key(next)), rate, now)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
