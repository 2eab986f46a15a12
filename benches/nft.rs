//! Compiling the nftables ruleset at scale: the policy and addresses of
//! 1,000 containers with 10,000 access entries into the `Ruleset`, and
//! that into nft text (which walks the same layout the netlink batch is
//! built from). Installing it needs root and a kernel: that is measured
//! by the nft tests, not here.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::nft::{compile::compile, to_nft_text};
use portcullis::policy::Policy;
use portcullis::state::directory::Directory;

mod support;

/// `containers` containers with fixed addresses; `entries` access entries,
/// each from one container to another on 4 ports, a tenth of them with
/// HTTP rules (redirected into the proxy).
fn policy(containers: usize, entries: usize) -> Policy {
    let access: Vec<String> = (0..entries)
        .map(|i| {
            let (from, to) = (i % containers, (i / containers + 1 + i) % containers);
            let port = 8000 + (i / containers) * 4;
            let ports = (port..port + 4)
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let http = if i % 10 == 0 {
                ", \"http\": [{ \"path_prefix\": \"/\" }]"
            } else {
                ""
            };
            format!("{{ \"from\": \"c{from}\", \"to\": \"c{to}\", \"ports\": [{ports}]{http} }}")
        })
        .collect();
    support::policy(containers, &access)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("nft");
    group.sample_size(10);
    for (containers, entries) in [(100, 1_000), (1_000, 10_000)] {
        let p = policy(containers, entries);
        let dir = Directory::build(&p, |_| Vec::new());
        group.bench_function(
            format!("compile ruleset ({containers} containers, {entries} entries)"),
            |b| b.iter(|| compile(black_box(&p), &dir).allow.len()),
        );
        let rs = compile(&p, &dir);
        group.bench_function(
            format!("render nft text ({containers} containers, {entries} entries)"),
            |b| b.iter(|| to_nft_text(black_box(&rs)).len()),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
