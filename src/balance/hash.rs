//! Weighted rendezvous (highest random weight) hashing for `"balance": "hash"`.
//!
//! Each (key, member) pair gets a pseudo-random score; the key goes to the
//! usable member with the highest score. A member that leaves therefore
//! takes away only the keys it was winning, and those spread over the
//! others in proportion to their weights; every other key stays where it
//! was. With weights, the score is `-w / ln(u)` for `u` uniform in (0, 1)
//! (Schindelhauer and Schomaker's weighted distributed hash tables), which
//! gives each member a share of keys proportional to its weight.
//!
//! Hashes are XXH3 (stable across processes and releases), so a key maps
//! to the same member after a restart of the daemon.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::{HashKey, PickInput};

/// The seed of a member, from its `"container:port"` target.
pub fn member_seed(target: &str) -> u64 {
    xxh3_64(target.as_bytes())
}

/// The hash of a request's key: the chosen header's value if the request
/// has it exactly once, else the client address.
pub fn key_hash(key: &HashKey, input: &PickInput<'_>) -> u64 {
    if let HashKey::Header(name) = key {
        let mut found = input
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name));
        if let (Some(h), None) = (found.next(), found.next()) {
            return xxh3_64(crate::wire::head::trim(h.value));
        }
    }
    match input.client {
        std::net::IpAddr::V4(a) => xxh3_64(&a.octets()),
        std::net::IpAddr::V6(a) => xxh3_64(&a.octets()),
    }
}

/// The score of a member for a key; the highest wins.
pub fn score(key_hash: u64, seed: u64, weight: u32) -> f64 {
    let h = xxh3_64_with_seed(&key_hash.to_le_bytes(), seed);
    // 53 random bits → u in (0, 1), never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight) / u.ln()
}
