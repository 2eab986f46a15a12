//! `portcullis run`: load → resolve → install → serve, then reload on
//! SIGHUP, on a change of the rule file, and when discovered containers
//! move or guarded networks change (the [`Discovery`] source chosen at
//! start wakes the loop).
//!
//! Every reload is all-or-nothing: the new file is validated and compiled,
//! its ruleset installed in one nftables transaction, and only then is the
//! new snapshot published to the proxy. If any step fails the previous
//! rules stay in force in the kernel and in the proxy. On stop the proxy
//! drains and the nftables rules are left in place (fail closed); only
//! `portcullis down` removes them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::bridge::{self, BridgeNetfilter};
use super::drift::Kernel;
use super::notify;
use super::report::Report;
use super::rulefile::RuleFileWatch;
use crate::balance::{health, Balancer};
use crate::discovery::{self, Discovery};
use crate::nft;
use crate::policy::Policy;
use crate::proxy::frontend::{self, Listeners};
use crate::proxy::{self, ProxyCtx};
use crate::rules::{self, RuleError};
use crate::state::metrics::Metrics;
use crate::state::snapshot::{placement, Snapshot};
use crate::tls::{self, Certificates};

const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Rules(#[from] RuleError),
    #[error("cannot install the nftables ruleset: {0}")]
    Nft(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Frontend(#[from] frontend::BindError),
    #[error("{0}")]
    Reload(String),
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
}

/// How the daemon is told to stop or reload.
pub struct Control {
    pub stop: watch::Receiver<bool>,
    pub reload: tokio::sync::mpsc::Receiver<()>,
}

/// Where the daemon ended up listening (useful to tests and the demo).
#[derive(Debug, Clone)]
pub struct Started {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

/// The rules and the certificates they name, read and checked together:
/// either both are good or the load is refused.
fn load_policy(path: &Path) -> Result<(Policy, Certificates), RuleError> {
    let set = rules::load(path)?;
    let certs = tls::load(&set, &tls::base_of(path), std::time::SystemTime::now())?;
    Ok((Policy::compile(set)?, certs))
}

async fn install(kernel: &Arc<Kernel>, rs: nft::ruleset::Ruleset) -> Result<(), DaemonError> {
    let kernel = kernel.clone();
    tokio::task::spawn_blocking(move || kernel.install(rs))
        .await
        .map_err(|e| DaemonError::Nft(e.to_string()))?
        .map_err(|e| DaemonError::Nft(e.to_string()))
}

/// Runs the daemon until `ctl.stop` turns true. `on_started` is told where
/// it listens once the rules are installed.
pub async fn run(
    path: PathBuf,
    discovery: discovery::Config,
    mut ctl: Control,
    on_started: impl FnOnce(Started),
) -> Result<(), DaemonError> {
    let (policy, certs) = load_policy(&path)?;
    let (policy, certs) = (Arc::new(policy), Arc::new(certs));
    let metrics = Arc::new(Metrics::default());
    metrics.labelled.certificates(&certs);
    let source = discovery::open(&discovery, metrics.clone());
    let dir = discovery::directory(&*source, &policy, &discovery::NothingKnown).await;
    let proxy_addr = SocketAddr::from(([0, 0, 0, 0], policy.proxy_port));
    let listener = TcpListener::bind(proxy_addr)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: proxy_addr,
            what: "transparent proxy",
            source,
        })?;
    let listener6 = bind_proxy_v6(policy.proxy_port);
    let admin_listener =
        std::net::TcpListener::bind(policy.admin).map_err(|source| DaemonError::Bind {
            addr: policy.admin,
            what: "admin endpoint",
            source,
        })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(policy.admin);
    let lb = Arc::new(Balancer::compile(&policy));
    let mut frontends = Listeners::default();
    let bound = frontends
        .prepare(&frontend::listen_addrs(&lb, &certs))
        .await?;
    let kernel = Kernel::new(metrics.clone());
    install(&kernel, nft::compile::compile(&policy, &dir)).await?;
    info!(rules = %path.display(), containers = policy.containers.len(), entries = policy.entries.len(), "rules installed");
    kernel.watch();
    let drop_log_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let report = Report::new(metrics.clone());
    check_bridge(&report, &policy);

    let state = Arc::new(ArcSwap::from_pointee(Snapshot {
        policy: policy.clone(),
        dir,
        version: 1,
        lb: lb.clone(),
        tls: certs,
    }));
    let ctx = Arc::new(ProxyCtx::new(state.clone(), metrics.clone()));
    // `POST /reload` on the admin endpoint (`portcullis reload`, the unit's
    // ExecReload): a reload whose result goes back to the caller.
    let (reload_req_tx, mut reload_req) =
        tokio::sync::mpsc::channel::<super::admin::ReloadReply>(8);
    spawn_admin(
        admin_listener,
        super::admin::Admin {
            state: state.clone(),
            metrics: metrics.clone(),
            cache: ctx.cache.clone(),
            kernel: kernel.clone(),
            source: source.clone(),
            report: report.clone(),
            reload: reload_req_tx,
        },
    );
    frontends.commit(bound, &ctx);
    let mut checks = health::spawn(lb, placement(&state));
    let drop_log = super::drop_log::spawn(
        state.clone(),
        metrics.clone(),
        report.clone(),
        drop_log_stop.clone(),
    )
    .map_err(|source| DaemonError::Thread {
        what: "drop-log",
        source,
    })?;
    let (proxy_stop_tx, proxy_stop) = watch::channel(false);
    let proxy_task6 = listener6.map(|l| {
        tokio::spawn(proxy::serve_transparent(
            l,
            ctx.clone(),
            proxy_stop.clone(),
            DRAIN,
        ))
    });
    let proxy_task = tokio::spawn(proxy::serve_transparent(
        listener,
        ctx.clone(),
        proxy_stop,
        DRAIN,
    ));
    on_started(Started {
        proxy: proxy_addr,
        admin: admin_addr,
    });
    // Only now: the ruleset is in the kernel and every listener is bound.
    notify::ready(&status_line(&path, &state, &report));

    let mut file = RuleFileWatch::new(&path, &state.load().tls.files());
    let (resync_tx, mut resync) = tokio::sync::mpsc::channel::<()>(1);
    let mut follower: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        // Follow the source once the rules name one of its containers or
        // networks (also when a reload adds the first one).
        if follower.is_none() && !source.names(&state.load().policy).is_empty() {
            follower = Some(tokio::spawn(source.follow(resync_tx.clone())));
        }
        let mut reply = None;
        let mut resync_only = false;
        let reason = tokio::select! {
            _ = ctl.stop.changed() => break,
            Some(()) = ctl.reload.recv() => "signal",
            Some(r) = reload_req.recv() => { reply = Some(r); "admin" }
            () = file.changed() => "file change",
            Some(()) = resync.recv() => { resync_only = true; source.kind() }
        };
        // Discovery resyncs change nothing most of the time: no RELOADING for them.
        if !resync_only {
            notify::reloading(reason);
        }
        let result = reload(
            &path,
            &*source,
            &state,
            Trigger {
                reason,
                resync_only,
            },
            &mut frontends,
            &ctx,
            &kernel,
        )
        .await;
        if let Some(r) = reply {
            let _ = r.send(match &result {
                Ok(_) => Ok(state.load().version),
                Err(e) => Err(e.to_string()),
            });
        }
        match &result {
            Ok(false) => {}
            Ok(true) => report.reload_applied(),
            Err(e) => report.reload_refused(e.to_string()),
        }
        // A reload of the file (refused or not) checks the bridges again:
        // the rules may now name containers, or the host may have changed.
        if !resync_only {
            check_bridge(&report, &state.load().policy);
        }
        if !resync_only || !matches!(result, Ok(false)) {
            notify::ready(&status_line(&path, &state, &report));
        }
        // New rules may name other certificate files: watch those.
        let certs = state.load().tls.files();
        if file.files()[1..] != certs[..] {
            file = RuleFileWatch::new(&path, &certs);
        }
        match result {
            Ok(true) => {
                Metrics::inc(&metrics.reloads_total);
                metrics.labelled.reload(true);
                let lb = state.load().lb.clone();
                if !Arc::ptr_eq(&lb, &checks.lb) {
                    // New rules: the old checks stop as they are dropped.
                    checks = health::spawn(lb, placement(&state));
                }
            }
            Ok(false) => {}
            Err(e) => {
                Metrics::inc(&metrics.reload_failures_total);
                metrics.labelled.reload(false);
                error!(trigger = reason, error = %e, "reload refused; the previous rules stay in force");
            }
        }
    }
    info!("stopping: draining connections; nftables rules stay in place");
    kernel.stop();
    notify::stopping();
    if let Some(f) = follower {
        f.abort();
    }
    frontends.stop_all().await;
    drop(checks);
    // The drop-log thread notices within its receive timeout; not awaited.
    drop_log_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(drop_log);
    let _ = proxy_stop_tx.send(true);
    let _ = proxy_task.await;
    if let Some(t) = proxy_task6 {
        let _ = t.await;
    }
    Ok(())
}

/// The IPv6 twin of the transparent listener (`[::]:PORT`, IPv6 only, so
/// it does not collide with the IPv4 one). A host without IPv6 gets none:
/// redirected IPv6 flows cannot exist there. Any other failure is logged;
/// redirected IPv6 flows are then refused (fail closed), never let through.
fn bind_proxy_v6(port: u16) -> Option<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    let bound = (|| {
        let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    })();
    match bound {
        Ok(l) => Some(l),
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => None,
        Err(e) => {
            warn!(addr = %addr, error = %e, "no IPv6 transparent listener: redirected IPv6 flows will be refused");
            None
        }
    }
}

fn status_line(path: &Path, state: &ArcSwap<Snapshot>, report: &Report) -> String {
    let snap = state.load();
    let mut line = notify::status_line(
        path,
        snap.version,
        snap.policy.containers.len(),
        snap.policy.entries.len(),
        report.last_error().as_deref(),
    );
    if let Some(b @ BridgeNetfilter::NotEnforced(_)) = report.bridge() {
        line.push_str("; ");
        line.push_str(&b.describe());
    }
    line
}

/// Checks that traffic between containers on one bridge reaches nftables
/// ([`bridge`]) for the rules in force, records it for `status` and the
/// metric, and logs an ERROR while it does not.
fn check_bridge(report: &Report, policy: &Policy) {
    let found = bridge::check(Path::new("/proc"), !policy.containers.is_empty());
    if let BridgeNetfilter::NotEnforced(_) = &found {
        error!(problem = %found.describe(), "access rules between containers on one bridge are NOT enforced");
    }
    report.set_bridge(found);
}

fn spawn_admin(listener: std::net::TcpListener, admin: super::admin::Admin) {
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return error!(error = %e, "admin runtime failed to start"),
            };
            rt.block_on(async move {
                let _ = listener.set_nonblocking(true);
                match TcpListener::from_std(listener) {
                    Ok(l) => super::admin::serve(l, admin).await,
                    Err(e) => error!(error = %e, "admin listener failed"),
                }
            });
        })
        .map(|_| ())
        .unwrap_or_else(|e| error!(error = %e, "admin thread failed to start"));
}

/// What set a reload off.
struct Trigger {
    /// For the log: `signal`, `admin`, `file change`, or the source's kind.
    reason: &'static str,
    /// The discovery source saw containers or networks move: the rules
    /// stay, only the addresses and subnets are resolved again (and nothing
    /// is done if none changed).
    resync_only: bool,
}

/// One reload. `Ok(false)`: nothing changed.
async fn reload(
    path: &Path,
    source: &dyn Discovery,
    state: &ArcSwap<Snapshot>,
    trigger: Trigger,
    frontends: &mut Listeners,
    ctx: &Arc<ProxyCtx>,
    kernel: &Arc<Kernel>,
) -> Result<bool, DaemonError> {
    let current = state.load_full();
    let (policy, certs) = if trigger.resync_only {
        (current.policy.clone(), current.tls.clone())
    } else {
        let (p, c) = load_policy(path)?;
        (Arc::new(p), Arc::new(c))
    };
    if policy.proxy_port != current.policy.proxy_port {
        return Err(DaemonError::Reload(format!(
            "proxy.listen_port changed from {} to {}: restart the daemon to move the listener",
            current.policy.proxy_port, policy.proxy_port
        )));
    }
    let dir = discovery::directory(source, &policy, &*current).await;
    if trigger.resync_only && dir == current.dir {
        return Ok(false);
    }
    // Same rules: keep the balancer (and its health state); new rules:
    // bind any new frontend address before anything is applied.
    let lb = if Arc::ptr_eq(&policy, &current.policy) {
        current.lb.clone()
    } else {
        let lb = Balancer::compile(&policy);
        lb.carry_state_from(&current.lb);
        Arc::new(lb)
    };
    let bound = frontends
        .prepare(&frontend::listen_addrs(&lb, &certs))
        .await?;
    install(kernel, nft::compile::compile(&policy, &dir)).await?;
    let version = current.version + 1;
    state.store(Arc::new(Snapshot {
        policy,
        dir,
        version,
        lb,
        tls: certs.clone(),
    }));
    ctx.metrics.labelled.certificates(&certs);
    frontends.commit(bound, ctx);
    info!(trigger = trigger.reason, version, "rules reloaded");
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn ipv6_listener_leaves_the_ipv4_port_free() {
        let Some(v6) = super::bind_proxy_v6(0) else {
            // Only a kernel without IPv6 may leave it out.
            assert!(
                !std::path::Path::new("/proc/net/if_inet6").exists(),
                "IPv6 is up, yet no IPv6 listener"
            );
            return;
        };
        let port = v6.local_addr().expect("bound").port();
        assert!(v6.local_addr().expect("bound").is_ipv6());
        tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .expect("the IPv4 listener binds the same port beside it");
    }
}
