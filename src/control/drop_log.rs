//! `log_drops`: one JSON log line for each packet the kernel's default deny
//! dropped between managed containers, as NFLOG hands them over (at most
//! `per_second`, limited in the kernel; the rest are dropped and counted
//! all the same, see `portcullis_kernel_pair_drops_total`).
//!
//! A thread of its own reads the group ([`crate::nft::nflog`], a blocking
//! socket with a receive timeout) and names both ends with the directory
//! of the snapshot in force, so the line says `app2 -> app1:5432` rather
//! than two addresses. It follows reloads: a changed group is bound anew,
//! a removed `log_drops` unbinds. Failing to bind (another program reads
//! the group) is a warning, `kernel_drop_log_up 0` and a line in `status`;
//! it is retried, and it never touches enforcement.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::report::Report;
use crate::nft::nflog::{Dropped, NflogReader};
use crate::state::metrics::Metrics;
use crate::state::snapshot::Snapshot;

/// How often a group that could not be bound is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Starts the reader thread; it ends soon after `stop` is set.
pub fn spawn(
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    report: Arc<Report>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("drop-log".into())
        .spawn(move || run(&state, &metrics, &report, &stop))
}

fn run(state: &ArcSwap<Snapshot>, metrics: &Metrics, report: &Report, stop: &AtomicBool) {
    let mut bound: Option<(u16, NflogReader)> = None;
    while !stop.load(Ordering::Relaxed) {
        let want = state.load().policy.log_drops.map(|l| l.group);
        if bound.as_ref().map(|(g, _)| *g) != want {
            bound = None;
            metrics.kernel_drop_log_up.store(0, Ordering::Relaxed);
            report.set_drop_log(want.map(|g| (g, Err("not bound yet".to_owned()))));
            if let Some(group) = want {
                match NflogReader::bind(group) {
                    Ok(r) => {
                        info!(group, "reading the default deny's drops from NFLOG");
                        metrics.kernel_drop_log_up.store(1, Ordering::Relaxed);
                        report.set_drop_log(Some((group, Ok(()))));
                        bound = Some((group, r));
                    }
                    Err(e) => {
                        warn!(group, error = %e, "cannot read NFLOG group for log_drops (another program reads it?); drops are still enforced and counted; retrying");
                        report.set_drop_log(Some((group, Err(e.to_string()))));
                        std::thread::sleep(RETRY);
                        continue;
                    }
                }
            }
        }
        let Some((group, reader)) = bound.as_mut() else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        match reader.receive() {
            Ok(packets) => {
                let snap = state.load();
                for d in packets
                    .iter()
                    .filter(|d| d.prefix == crate::nft::DROP_PREFIX)
                {
                    Metrics::inc(&metrics.kernel_drops_logged_total);
                    log_drop(&snap, d);
                }
            }
            Err(e) => {
                warn!(group = *group, error = %e, "reading NFLOG failed; binding again");
                bound = None;
            }
        }
    }
}

/// The container at `ip` in `snap`, else the address.
fn name(snap: &Snapshot, ip: IpAddr) -> String {
    match snap.dir.container_at(ip) {
        Some(c) => snap.policy.container_name(c).to_owned(),
        None => ip.to_string(),
    }
}

fn log_drop(snap: &Snapshot, d: &Dropped) {
    let protocol = match d.proto {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        1 => "icmp".to_owned(),
        58 => "icmpv6".to_owned(),
        n => n.to_string(),
    };
    warn!(
        source = %name(snap, d.src),
        destination = %name(snap, d.dst),
        source_address = %d.src,
        destination_address = %d.dst,
        protocol,
        destination_port = d.ports.map(|p| p.1),
        decided_by = "default deny (no access entry allows it)",
        "kernel dropped a packet between managed containers"
    );
}
