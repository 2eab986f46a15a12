//! Smooth weighted round-robin (the nginx algorithm), precomputed.
//!
//! Every step adds each member's weight to its current value, picks the
//! largest, and subtracts the total from the winner. Over one cycle of
//! `sum(weights)` picks each member is chosen exactly `weight` times, and
//! the picks are spread out (5:1:1 gives `a a b a c a a`) instead of
//! arriving in bursts. The cycle is computed once when rules load; at
//! request time a pool only advances an atomic cursor through it.

/// One full cycle of member indexes for `weights` (each at least 1).
pub fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total.max(0) as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u32);
    }
    seq
}
