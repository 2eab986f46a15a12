//! The control plane: the daemon loop that (re)loads rules and publishes
//! snapshots, the admin endpoint, nftables drift repair and systemd
//! notification. Container addresses come from [`crate::discovery`].

pub mod admin;
pub mod bridge;
pub mod daemon;
pub mod drift;
pub mod drop_log;
pub mod notify;
pub mod report;
pub mod rulefile;
