//! What the daemon loop knows about itself beyond the rules snapshot, for
//! `portcullis status` (the admin thread reads it): the last refused reload
//! with its time, the last successful one, and the same-bridge check
//! ([`super::bridge`]). Written only by the daemon loop, on start and on
//! reloads, so a mutex is enough.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::bridge::BridgeNetfilter;
use crate::state::metrics::Metrics;

/// A moment, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(SystemTime);

impl Stamp {
    pub fn now() -> Stamp {
        Stamp(SystemTime::now())
    }

    fn json(&self) -> serde_json::Value {
        let unix = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        serde_json::json!({ "at": httpdate::fmt_http_date(self.0), "at_unix": unix })
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// The last refused reload, until a later one succeeds.
    last_error: Option<(String, Stamp)>,
    /// The last reload that applied new rules.
    last_ok: Option<Stamp>,
    bridge: Option<BridgeNetfilter>,
    /// `log_drops`: its NFLOG group, and whether it is read (or why not).
    drop_log: Option<(u16, Result<(), String>)>,
}

/// Shared between the daemon loop (writes) and the admin endpoint (reads).
#[derive(Debug)]
pub struct Report {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

impl Report {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Report> {
        Arc::new(Report {
            inner: Mutex::new(Inner::default()),
            metrics,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reload was refused: shown until a later reload succeeds.
    pub fn reload_refused(&self, error: String) {
        self.inner().last_error = Some((error, Stamp::now()));
    }

    /// A reload applied new rules: any earlier refusal is history.
    pub fn reload_applied(&self) {
        let mut inner = self.inner();
        inner.last_error = None;
        inner.last_ok = Some(Stamp::now());
    }

    /// The last refusal still standing, for the systemd status line.
    pub fn last_error(&self) -> Option<String> {
        self.inner().last_error.as_ref().map(|(e, _)| e.clone())
    }

    /// Records the bridge check and sets `bridge_netfilter_ok`.
    pub fn set_bridge(&self, state: BridgeNetfilter) {
        self.metrics
            .bridge_netfilter_ok
            .store(u64::from(state.ok()), std::sync::atomic::Ordering::Relaxed);
        self.inner().bridge = Some(state);
    }

    pub fn bridge(&self) -> Option<BridgeNetfilter> {
        self.inner().bridge.clone()
    }

    /// Records whether the `log_drops` group is read (`None`: no `log_drops`).
    pub fn set_drop_log(&self, state: Option<(u16, Result<(), String>)>) {
        self.inner().drop_log = state;
    }

    /// `status.drop_log`: `null` (no `log_drops`) or `{"group", "reading",
    /// "error"}`.
    pub fn drop_log_json(&self) -> serde_json::Value {
        match &self.inner().drop_log {
            None => serde_json::Value::Null,
            Some((group, r)) => serde_json::json!({
                "group": group,
                "reading": r.is_ok(),
                "error": r.as_ref().err(),
            }),
        }
    }

    /// `status.reload`: `{"last_error": null | {"error", "at", "at_unix"},
    /// "last_applied": null | {"at", "at_unix"}}`.
    pub fn reload_json(&self) -> serde_json::Value {
        let inner = self.inner();
        serde_json::json!({
            "last_error": inner.last_error.as_ref().map(|(e, at)| {
                let mut v = at.json();
                v["error"] = e.clone().into();
                v
            }),
            "last_applied": inner.last_ok.as_ref().map(Stamp::json),
        })
    }

    /// `status.bridge_netfilter`: `{"enforced": true|false|null, "detail"}`
    /// (`null`: the rules name no container, nothing to enforce).
    pub fn bridge_json(&self) -> serde_json::Value {
        match self.inner().bridge.as_ref() {
            None => serde_json::Value::Null,
            Some(b) => serde_json::json!({
                "enforced": match b {
                    BridgeNetfilter::NotNeeded => serde_json::Value::Null,
                    BridgeNetfilter::Enforced => true.into(),
                    BridgeNetfilter::NotEnforced(_) => false.into(),
                },
                "detail": b.describe(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_refused_reload_stands_until_a_good_one() {
        let metrics = Arc::new(Metrics::default());
        let r = Report::new(metrics);
        assert!(r.reload_json()["last_error"].is_null());
        r.reload_refused("rules.json:3:5: unknown field `protocl`".into());
        let v = r.reload_json();
        assert_eq!(
            v["last_error"]["error"],
            "rules.json:3:5: unknown field `protocl`"
        );
        assert!(v["last_error"]["at_unix"].as_u64().unwrap_or(0) > 0, "{v}");
        assert!(
            v["last_error"]["at"]
                .as_str()
                .unwrap_or("")
                .ends_with("GMT"),
            "{v}"
        );
        assert!(r.last_error().is_some());
        r.reload_applied();
        let v = r.reload_json();
        assert!(v["last_error"].is_null(), "{v}");
        assert!(
            v["last_applied"]["at_unix"].as_u64().unwrap_or(0) > 0,
            "{v}"
        );
        assert!(r.last_error().is_none());
    }

    #[test]
    fn the_bridge_check_sets_the_metric_and_status() {
        let metrics = Arc::new(Metrics::default());
        let r = Report::new(metrics.clone());
        assert!(r.bridge_json().is_null());
        r.set_bridge(BridgeNetfilter::NotEnforced("br_netfilter missing".into()));
        assert_eq!(metrics.bridge_netfilter_ok.load(Ordering::Relaxed), 0);
        assert_eq!(r.bridge_json()["enforced"], false);
        assert_eq!(
            r.bridge_json()["detail"],
            "same-bridge traffic NOT enforced: br_netfilter missing"
        );
        r.set_bridge(BridgeNetfilter::Enforced);
        assert_eq!(metrics.bridge_netfilter_ok.load(Ordering::Relaxed), 1);
        assert_eq!(r.bridge_json()["enforced"], true);
        r.set_bridge(BridgeNetfilter::NotNeeded);
        assert_eq!(metrics.bridge_netfilter_ok.load(Ordering::Relaxed), 1);
        assert!(r.bridge_json()["enforced"].is_null());
    }
}
