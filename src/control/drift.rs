//! Drift repair: the kernel keeps holding the rules Portcullis installed.
//!
//! Anything else on the host can change table `inet portcullis` — `nft
//! flush ruleset`, a stray `nft delete`, a script adding an element. Each
//! would silently change what is enforced (a removed table fails open for
//! every flow the kernel used to drop). So every install goes through
//! [`Kernel::install`], which remembers the ruleset and the kernel's
//! [`Fingerprint`] of it; a watcher thread looks again whenever nftables
//! announces a change (netlink notifications) and at least every
//! [`TICK`], and applies the ruleset again if the table is gone or differs.
//! Each repair is counted (`nft_drift_repairs_total`) and logged; while
//! the kernel does not hold the compiled rules `nft_in_sync` is 0,
//! `/healthz` answers 503 and `status` says what differs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{error, info, warn};

use crate::nft::readback::{self, ChangeWatch, Fingerprint};
use crate::nft::{self, NftError, Ruleset};
use crate::state::metrics::Metrics;

/// The longest the watcher sleeps without a notification.
pub const TICK: Duration = Duration::from_millis(500);

/// What Portcullis last installed, and how the kernel described it then.
struct Installed {
    ruleset: Ruleset,
    fingerprint: Option<Fingerprint>,
}

/// The one way the daemon changes nftables, and what it knows of the result.
pub struct Kernel {
    installed: Mutex<Option<Installed>>,
    /// How the kernel differs from what was installed; `None` in sync.
    drift: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
    stop: AtomicBool,
}

impl Kernel {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Kernel> {
        Arc::new(Kernel {
            installed: Mutex::new(None),
            drift: Mutex::new(None),
            metrics,
            stop: AtomicBool::new(false),
        })
    }

    fn installed(&self) -> MutexGuard<'_, Option<Installed>> {
        self.installed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs `rs` (one transaction) and records it as what the kernel
    /// must hold. Blocking: call from a blocking thread.
    pub fn install(&self, rs: Ruleset) -> Result<(), NftError> {
        let mut installed = self.installed();
        nft::install(&rs)?;
        let fingerprint = self.read_back();
        *installed = Some(Installed {
            ruleset: rs,
            fingerprint,
        });
        self.set_drift(
            fingerprint
                .is_none()
                .then(|| "the kernel's table could not be read back after installing".to_owned()),
        );
        Ok(())
    }

    fn read_back(&self) -> Option<Fingerprint> {
        match readback::fingerprint() {
            Ok(f) => f,
            Err(e) => {
                error!(error = %e, "cannot read table inet portcullis back from the kernel");
                None
            }
        }
    }

    /// How the kernel differs from the installed rules, `None` if in sync.
    pub fn drift(&self) -> Option<String> {
        self.drift.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_drift(&self, drift: Option<String>) {
        self.metrics.nft_in_sync.store(
            u64::from(drift.is_none()),
            std::sync::atomic::Ordering::Relaxed,
        );
        *self.drift.lock().unwrap_or_else(|p| p.into_inner()) = drift;
    }

    /// Compares the kernel with what was installed and repairs a
    /// difference. Returns whether a repair was made.
    pub fn check(&self) -> bool {
        let mut installed = self.installed();
        let Some(inst) = installed.as_mut() else {
            return false;
        };
        let what = match readback::fingerprint() {
            Ok(Some(f)) if Some(f) == inst.fingerprint => {
                self.set_drift(None);
                return false;
            }
            Ok(Some(_)) => "table inet portcullis was changed by something other than portcullis",
            Ok(None) => "table inet portcullis was removed by something other than portcullis",
            Err(e) => {
                // Not seeing the kernel is not being in sync with it.
                self.set_drift(Some(format!("cannot read the kernel's table: {e}")));
                warn!(error = %e, "cannot read table inet portcullis back; retrying");
                return false;
            }
        };
        self.set_drift(Some(what.to_owned()));
        warn!(
            drift = what,
            "nftables drift: applying the compiled rules again"
        );
        match nft::install(&inst.ruleset) {
            Ok(()) => {
                Metrics::inc(&self.metrics.nft_drift_repairs_total);
                inst.fingerprint = self.read_back();
                if inst.fingerprint.is_some() {
                    self.set_drift(None);
                }
                info!(
                    drift = what,
                    "nftables drift repaired: the compiled rules are in force again"
                );
                true
            }
            Err(e) => {
                error!(drift = what, error = %e, "nftables drift NOT repaired; retrying");
                false
            }
        }
    }

    /// Starts the watcher thread; it ends after [`Kernel::stop`].
    pub fn watch(self: &Arc<Self>) {
        let kernel = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nft-drift".into())
            .spawn(move || {
                let mut watch = match ChangeWatch::new(TICK) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        warn!(error = %e, "no nftables change notifications; checking every {TICK:?} instead");
                        None
                    }
                };
                while !kernel.stop.load(Ordering::Relaxed) {
                    match watch.as_mut().map(ChangeWatch::wait) {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            warn!(error = %e, "nftables change notifications failed; polling instead");
                            watch = None;
                        }
                        None => std::thread::sleep(TICK),
                    }
                    if kernel.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    kernel.check();
                }
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the nftables drift watcher");
            self.set_drift(Some("the drift watcher is not running".into()));
        }
    }

    /// Stops the watcher (the rules stay in the kernel). Waits for a check
    /// in progress, so nothing is applied after this returns — whoever
    /// removes the table next (`portcullis down`, the demo) is not undone.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        *self.installed() = None;
    }
}
