//! HTTP as it travels: strict HTTP/1.1 request and response heads
//! ([`head`]) and path normalisation ([`normalize`]).
//!
//! The bottom layer of the crate: the rule validator, the compiled policy,
//! the cache and the proxy all read requests through it, and it reads
//! nothing of theirs, so what a rule was checked against and what the proxy
//! forwards are parsed by the same code.

pub mod head;
pub mod normalize;
