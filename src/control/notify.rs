//! Readiness and reload notifications to the service manager (systemd's
//! `Type=notify` protocol, through the `sd-notify` crate).
//!
//! Why: `systemctl start portcullis` must return only once enforcement is
//! real, so `READY=1` is sent after the ruleset is in the kernel and every
//! listener is bound, never before. A reload is bracketed by `RELOADING=1`
//! (with `MONOTONIC_USEC`, which `Type=notify-reload` on systemd ≥ 253
//! requires and older versions ignore) and `READY=1`, and every state change
//! carries a `STATUS=` line saying which rules are in force, so
//! `systemctl status` answers "what is enforced" without the admin endpoint.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op. A failed
//! send is logged, never fatal: the rules are enforced either way.

use sd_notify::NotifyState;
use tracing::warn;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager");
    }
}

/// The rules are in the kernel and the listeners are up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts; the previous rules stay in force until [`ready`].
pub fn reloading(trigger: &str) {
    let status = format!("reloading ({trigger})");
    send(&reloading_states(&status));
}

fn reloading_states(status: &str) -> Vec<NotifyState<'_>> {
    let mut states = vec![NotifyState::Reloading];
    // Only a clock failure (never seen) leaves MONOTONIC_USEC out.
    states.extend(NotifyState::monotonic_usec_now().ok());
    states.push(NotifyState::Status(status));
    states
}

/// The daemon is stopping (SIGTERM): connections drain, the rules stay.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining connections; the nftables rules stay in force"),
    ]);
}

/// The `STATUS=` text for the rules in force.
pub fn status_line(
    path: &std::path::Path,
    version: u64,
    containers: usize,
    entries: usize,
    last_error: Option<&str>,
) -> String {
    let mut s = format!(
        "enforcing {} (rules version {version}: {containers} containers, {entries} access entries)",
        path.display()
    );
    if let Some(e) = last_error {
        s.push_str("; last reload refused, previous rules kept: ");
        s.push_str(e);
    }
    s
}

#[cfg(test)]
mod tests {
    fn text(states: &[sd_notify::NotifyState]) -> String {
        states.iter().map(|s| format!("{s}\n")).collect()
    }

    #[test]
    fn reload_carries_a_monotonic_timestamp() {
        let msg = text(&super::reloading_states("reloading (signal)"));
        assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg}");
        assert!(msg.ends_with("STATUS=reloading (signal)\n"), "{msg}");
    }

    #[test]
    fn status_says_what_is_enforced_and_why_a_reload_was_refused() {
        let path = std::path::Path::new("/etc/portcullis/rules.json");
        assert_eq!(
            super::status_line(path, 3, 2, 1, None),
            "enforcing /etc/portcullis/rules.json (rules version 3: 2 containers, 1 access entries)"
        );
        assert_eq!(
            super::status_line(path, 3, 2, 1, Some("bad json")),
            "enforcing /etc/portcullis/rules.json (rules version 3: 2 containers, 1 access entries); \
             last reload refused, previous rules kept: bad json"
        );
    }
}
