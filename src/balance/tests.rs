//! Selection tests: weight spreading, smooth interleaving, consistent
//! hashing's redistribution, least connections, health and ejection.

use super::*;
use crate::state::directory::Directory;
use std::collections::HashMap;

/// A policy with containers c0..c{n-1} and one pool `p` over them.
fn setup(n: usize, weights: &[u64], balance: &str) -> (Balancer, Directory) {
    let containers: Vec<String> = (0..n)
        .map(|i| format!("\"c{i}\": {{ \"address\": \"198.19.0.{}\" }}", i + 2))
        .collect();
    let members: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{ \"target\": \"c{i}:80\", \"weight\": {} }}",
                weights.get(i).copied().unwrap_or(1)
            )
        })
        .collect();
    let text = format!(
        r#"{{ "version": 1, "containers": {{ {} }},
  "pools": {{ "p": {{ "members": [{}], {balance} }} }} }}"#,
        containers.join(", "),
        members.join(", ")
    );
    let set = crate::rules::parse("rules.json", &text).expect("valid rules");
    let policy = Policy::compile(set).expect("compiles");
    let dir = Directory::build(&policy, |_| Vec::new());
    (Balancer::compile(&policy), dir)
}

fn counts(pool: &Pool, dir: &Directory, picks: usize) -> Vec<usize> {
    let mut c = vec![0; pool.members.len()];
    for _ in 0..picks {
        let p = pool.pick(dir, 0, &[]).expect("a member");
        c[p.index] += 1;
    }
    c
}

fn client(i: u32) -> u64 {
    let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
    let input = PickInput {
        client: ip,
        headers: &[],
    };
    hash::key_hash(&HashKey::ClientIp, &input)
}

#[test]
fn smooth_round_robin_interleaves() {
    assert_eq!(wrr::smooth_sequence(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(wrr::smooth_sequence(&[1, 1, 1]), [0, 1, 2]);
    assert_eq!(wrr::smooth_sequence(&[2, 1]), [0, 1, 0]);
}

#[test]
fn round_robin_spreads_by_weight() {
    let (lb, dir) = setup(3, &[3, 1, 2], r#""balance": "round_robin""#);
    let pool = &lb.pools[0];
    assert_eq!(counts(pool, &dir, 600), [300, 100, 200]);
}

#[test]
fn unhealthy_and_ejected_members_get_nothing() {
    let (lb, dir) = setup(3, &[1, 1, 1], r#""balance": "round_robin""#);
    let pool = &lb.pools[0];
    pool.members[1].set_healthy(false);
    let c = counts(pool, &dir, 300);
    assert_eq!(c[1], 0);
    assert_eq!(c[0] + c[2], 300);
    assert_eq!(pool.members[1].status(&dir), MemberStatus::Unhealthy);

    // Passive: consecutive failures eject; fewer do not.
    for _ in 0..PASSIVE_EJECT_AFTER - 1 {
        pool.report(&dir, 0, Outcome::ConnectFailure);
    }
    pool.report(&dir, 0, Outcome::Success);
    pool.report(&dir, 0, Outcome::ConnectFailure);
    assert_eq!(pool.members[0].status(&dir), MemberStatus::Healthy);
    for _ in 0..PASSIVE_EJECT_AFTER {
        pool.report(&dir, 0, Outcome::ConnectFailure);
    }
    assert_eq!(pool.members[0].status(&dir), MemberStatus::Ejected);
    assert_eq!(counts(pool, &dir, 50), [0, 0, 50]);

    // Recovery by the active checks clears the ejection too.
    pool.members[0].set_healthy(true);
    pool.members[1].set_healthy(true);
    assert_eq!(counts(pool, &dir, 300), [100, 100, 100]);

    for m in &pool.members {
        m.set_healthy(false);
    }
    assert!(pool.pick(&dir, 0, &[]).is_none(), "no healthy member: 503");
}

#[test]
fn only_gateway_failures_count() {
    let (lb, dir) = setup(2, &[1, 1], r#""balance": "round_robin""#);
    let pool = &lb.pools[0];
    // A member answering 500/501 (e.g. to `BREW /`) is alive: never ejected.
    for code in [500, 501, 505, 400, 200] {
        for _ in 0..10 {
            pool.report(&dir, 0, Outcome::of_status(code));
        }
    }
    // Neither is one whose client's body the proxy refused.
    for _ in 0..10 {
        pool.report(&dir, 0, Outcome::Neutral);
    }
    assert_eq!(pool.members[0].status(&dir), MemberStatus::Healthy);
    // 502, 503 and 504 from the member are gateway failures.
    for code in [502, 503, 504] {
        assert_eq!(Outcome::of_status(code), Outcome::GatewayFailure);
    }
    for _ in 0..PASSIVE_EJECT_AFTER {
        pool.report(&dir, 0, Outcome::of_status(503));
    }
    assert_eq!(pool.members[0].status(&dir), MemberStatus::Ejected);
}

#[test]
fn responses_never_eject_below_half_the_pool() {
    let fail = |pool: &Pool, dir: &Directory, i: usize| {
        for _ in 0..PASSIVE_EJECT_AFTER {
            pool.report(dir, i, Outcome::GatewayFailure);
        }
    };
    // Four members: gateway failures everywhere eject two, never more.
    let (lb, dir) = setup(4, &[1, 1, 1, 1], r#""balance": "round_robin""#);
    let pool = &lb.pools[0];
    for _ in 0..5 {
        for i in 0..4 {
            fail(pool, &dir, i);
        }
    }
    let ejected = pool
        .members
        .iter()
        .filter(|m| m.status(&dir) == MemberStatus::Ejected)
        .count();
    assert_eq!(ejected, 2);
    assert_eq!(counts(pool, &dir, 10).iter().filter(|&&c| c > 0).count(), 2);

    // One member: never ejected for responses; it still takes traffic.
    let (lb, dir) = setup(1, &[1], r#""balance": "round_robin""#);
    let pool = &lb.pools[0];
    for _ in 0..10 {
        fail(pool, &dir, 0);
    }
    assert_eq!(pool.members[0].status(&dir), MemberStatus::Healthy);
    assert!(pool.pick(&dir, 0, &[]).is_some());
    // But a member that cannot be connected to is ejected even then.
    for _ in 0..PASSIVE_EJECT_AFTER {
        pool.report(&dir, 0, Outcome::ConnectFailure);
    }
    assert_eq!(pool.members[0].status(&dir), MemberStatus::Ejected);

    // Members out by the active checks count as gone: with one of two
    // unhealthy, responses cannot eject the other.
    let (lb, dir) = setup(2, &[1, 1], r#""balance": "round_robin""#);
    let pool = &lb.pools[0];
    pool.members[1].set_healthy(false);
    fail(pool, &dir, 0);
    assert_eq!(pool.members[0].status(&dir), MemberStatus::Healthy);
}

#[test]
fn excluded_members_are_skipped_for_retries() {
    let (lb, dir) = setup(2, &[1, 1], r#""balance": "round_robin""#);
    let pool = &lb.pools[0];
    for _ in 0..10 {
        assert_eq!(pool.pick(&dir, 0, &[0]).map(|p| p.index), Some(1));
    }
    assert!(pool.pick(&dir, 0, &[0, 1]).is_none());
}

#[test]
fn members_without_address_are_skipped() {
    let (lb, _) = setup(2, &[1, 1], r#""balance": "round_robin""#);
    let pool = &lb.pools[0];
    let mut dir = Directory::default();
    dir.addrs = vec![vec![], vec!["198.19.0.3".parse().unwrap()]];
    assert_eq!(pool.members[0].status(&dir), MemberStatus::NoAddress);
    let c = counts(pool, &dir, 20);
    assert_eq!(c, [0, 20]);
}

#[test]
fn least_connections_prefers_idle_members() {
    let (lb, dir) = setup(3, &[1, 1, 2], r#""balance": "least_connections""#);
    let pool = &lb.pools[0];
    // Hold picks open: in-flight requests count until dropped.
    let held: Vec<Pick<'_>> = (0..4).map(|_| pool.pick(&dir, 0, &[]).unwrap()).collect();
    let mut load = [0usize; 3];
    for p in &held {
        load[p.index] += 1;
    }
    // Weight 2 takes twice the load of the others.
    assert_eq!(load, [1, 1, 2]);
    let busy = held.iter().position(|p| p.index == 0).unwrap();
    let mut held = held;
    held.remove(busy);
    assert_eq!(pool.members[0].inflight(), 0);
    assert_eq!(pool.pick(&dir, 0, &[]).map(|p| p.index), Some(0));
    drop(held);
    assert!(pool.members.iter().all(|m| m.inflight() == 0));
}

#[test]
fn hash_sends_one_key_to_one_member() {
    let (lb, dir) = setup(
        4,
        &[1, 1, 1, 1],
        r#""balance": "hash", "hash_key": "header:X-User""#,
    );
    let pool = &lb.pools[0];
    let h = |v: &'static [u8]| {
        let headers = [httparse::Header {
            name: "x-user",
            value: v,
        }];
        pool.request_key(&PickInput {
            client: "10.0.0.1".parse().unwrap(),
            headers: &headers,
        })
    };
    for user in [&b"alice"[..], b"bob", b"carol"] {
        let first = pool.pick(&dir, h(user), &[]).unwrap().index;
        for _ in 0..20 {
            assert_eq!(pool.pick(&dir, h(user), &[]).unwrap().index, first);
        }
    }
    // Without the header the client address decides (stable, too).
    let k = pool.request_key(&PickInput {
        client: "10.0.0.1".parse().unwrap(),
        headers: &[],
    });
    assert_eq!(k, client(1));
}

#[test]
fn hash_member_leaving_moves_only_its_keys() {
    const N: usize = 5;
    const KEYS: u32 = 20_000;
    let (lb, dir) = setup(N, &[1; N], r#""balance": "hash", "hash_key": "client_ip""#);
    let pool = &lb.pools[0];
    let before: Vec<usize> = (0..KEYS)
        .map(|k| pool.pick(&dir, client(k), &[]).unwrap().index)
        .collect();
    // Even spread: each member within 10% of KEYS/N.
    let mut per = [0usize; N];
    for &m in &before {
        per[m] += 1;
    }
    let fair = KEYS as usize / N;
    for (i, &c) in per.iter().enumerate() {
        assert!(
            c.abs_diff(fair) < fair / 10,
            "member {i} has {c} of {KEYS} keys"
        );
    }

    let gone = 2;
    pool.members[gone].set_healthy(false);
    let after: Vec<usize> = (0..KEYS)
        .map(|k| pool.pick(&dir, client(k), &[]).unwrap().index)
        .collect();
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    // Exactly the leaving member's keys move, and they are ~1/N of all.
    assert_eq!(moved, per[gone]);
    assert!(before
        .iter()
        .zip(&after)
        .all(|(&b, &a)| b == a || b == gone));
    let share = moved as f64 / f64::from(KEYS);
    assert!((share - 1.0 / N as f64).abs() < 0.03, "moved share {share}");
    // ...and spread over the others, not dumped on one.
    let mut to: HashMap<usize, usize> = HashMap::new();
    for (&b, &a) in before.iter().zip(&after) {
        if b == gone {
            *to.entry(a).or_default() += 1;
        }
    }
    assert_eq!(to.len(), N - 1);

    // Coming back restores the original mapping.
    pool.members[gone].set_healthy(true);
    let again: Vec<usize> = (0..KEYS)
        .map(|k| pool.pick(&dir, client(k), &[]).unwrap().index)
        .collect();
    assert_eq!(again, before);
}

#[test]
fn hash_respects_weights() {
    const KEYS: u32 = 20_000;
    let (lb, dir) = setup(2, &[1, 3], r#""balance": "hash", "hash_key": "client_ip""#);
    let pool = &lb.pools[0];
    let heavy = (0..KEYS)
        .filter(|&k| pool.pick(&dir, client(k), &[]).unwrap().index == 1)
        .count();
    let share = heavy as f64 / f64::from(KEYS);
    assert!((share - 0.75).abs() < 0.02, "weight 3 of 4 got {share}");
}

#[test]
fn reload_keeps_known_health() {
    let (old, dir) = setup(3, &[1, 1, 1], r#""balance": "round_robin""#);
    old.pools[0].members[1].set_healthy(false);
    let (new, _) = setup(3, &[1, 1, 2], r#""balance": "least_connections""#);
    new.carry_state_from(&old);
    let status: Vec<MemberStatus> = new.pools[0]
        .members
        .iter()
        .map(|m| m.status(&dir))
        .collect();
    assert_eq!(
        status,
        [
            MemberStatus::Healthy,
            MemberStatus::Unhealthy,
            MemberStatus::Healthy
        ]
    );
}
