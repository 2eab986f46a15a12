//! nftables: the kernel half of Portcullis.
//!
//! Portcullis owns exactly one table, `inet portcullis`. A compiled policy
//! plus the resolved container addresses become a [`Ruleset`] (plain data,
//! [`ruleset`]); from it, the fixed layout of the table (which sets and
//! rules, in which chains) is derived once, and then either
//!
//! - printed as nft text ([`render::to_nft_text`]) — what `portcullis nft`
//!   shows, loadable with `nft -f` as one atomic replacement, and spelled
//!   exactly as `nft list table inet portcullis` prints it; or
//! - installed over netlink ([`apply::install`]) as one batch, one atomic
//!   transaction: the old table is replaced whole or not at all.
//!
//! Both paths encode the same objects the same way, which the root-only
//! tests check by installing each way and comparing `nft list` output.
//! Hook priorities and the expected listing are documented in
//! `nft/README.md`; `nft/example.nft` is the rendering of the example in
//! the rule-file contract.
//!
//! All FFI of the crate lives in `expr.rs` and `apply.rs` (each marked
//! `#![allow(unsafe_code)]`); everything else here is safe and pure.

pub mod apply;
pub mod compile;
mod expr;
mod layout;
pub mod nflog;
pub mod readback;
pub mod render;
pub mod ruleset;

#[cfg(test)]
mod tests;
/// For tests elsewhere in the crate that touch table `inet portcullis`.
#[cfg(test)]
#[allow(unused_imports)]
pub(crate) use tests::kernel_lock;

pub use apply::{exists, install, remove, NftError};
pub use layout::DROP_PREFIX;
pub use render::{table_text, to_nft_text};
pub use ruleset::{AddrPair, FlowKey, Managed, Ruleset, L4, TABLE};
