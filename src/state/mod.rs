//! What the data plane reads: the published [`snapshot::Snapshot`] (the
//! compiled rules, the container [`directory::Directory`] and the frontend
//! balancer, swapped as one), and the [`metrics::Metrics`] every part counts
//! into.
//!
//! The control plane ([`crate::control`]) produces the snapshots; the proxy,
//! the cache and the health checks only read them. Nothing here imports the
//! proxy or the control plane.

pub mod directory;
pub mod metrics;
pub mod snapshot;
