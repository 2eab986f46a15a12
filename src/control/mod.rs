//! The control plane: container addresses, Docker discovery, the admin
//! endpoint and metrics, and the daemon loop that (re)loads rules.

pub mod admin;
pub mod daemon;
pub mod docker;
pub mod drift;
pub mod notify;
pub mod rulefile;
