//! Portcullis: a host-level HTTP firewall and load balancer for containers.
//!
//! A JSON rule file ([`rules`]) is validated whole and compiled into a
//! [`policy::Policy`]; from that, [`nft`] derives the kernel ruleset (drop,
//! accept, redirect) and [`proxy`] enforces the HTTP rules on the redirected
//! connections. `src/main.rs` only starts the process; [`cli`] maps commands
//! onto the library.
#![deny(unsafe_code)]

pub mod balance;
pub mod cache;
pub mod cli;
pub mod control;
pub mod diff;
pub mod discovery;
pub mod fuzzing;
pub mod nft;
pub mod policy;
pub mod proxy;
pub mod rules;
pub mod state;
pub mod tls;
pub mod wire;
