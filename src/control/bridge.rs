//! Does nftables see traffic between containers on one bridge?
//!
//! Two containers on the same Docker bridge talk through the bridge: their
//! packets are switched, never routed, so they pass through the `inet`
//! hooks of table `inet portcullis` only when `br_netfilter` is loaded and
//! `net.bridge.bridge-nf-call-iptables` / `…-ip6tables` are 1. Without
//! them every access rule between two such containers is silently not
//! enforced — the kernel sets and the redirect to the proxy are simply
//! never consulted.
//!
//! The daemon checks this at start and on every reload of the rule file
//! and says so when enforcement is missing: an ERROR log line, the metric
//! `bridge_netfilter_ok` at 0, `status.bridge_netfilter`, and the systemd
//! status line. It never claims enforcement it does not have.
//!
//! It does **not** load the module or write the sysctls itself: turning
//! `bridge-nf-call-iptables` on makes every bridge of the host (libvirt,
//! LXC, other Docker networks) pass through the host's iptables `FORWARD`
//! chain too, which with Docker's `FORWARD` policy `DROP` can cut off
//! traffic Portcullis has nothing to do with. That is the operator's call
//! (docs/wiki/operations.md, "Prerequisites"); the shipped unit could not
//! anyway (`ProtectKernelTunables=`, `ProtectKernelModules=`).

use std::path::Path;

/// The sysctls (under `/proc/sys/net/bridge/`) that must be 1.
pub const KEYS: [&str; 2] = ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"];

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeNetfilter {
    /// The rules name no container: nothing to enforce between containers.
    NotNeeded,
    /// `br_netfilter` is loaded and both sysctls are 1.
    Enforced,
    /// Same-bridge traffic is not seen by nftables; why, for the operator.
    NotEnforced(String),
}

impl BridgeNetfilter {
    /// Whether enforcement is complete as far as bridges go (for the metric).
    pub fn ok(&self) -> bool {
        !matches!(self, BridgeNetfilter::NotEnforced(_))
    }

    /// One sentence for `status`, logs and the systemd status line.
    pub fn describe(&self) -> String {
        match self {
            BridgeNetfilter::NotNeeded => "not needed: the rules name no container".to_owned(),
            BridgeNetfilter::Enforced => {
                "same-bridge traffic enforced (br_netfilter loaded, bridge-nf-call-iptables and -ip6tables are 1)".to_owned()
            }
            BridgeNetfilter::NotEnforced(why) => {
                format!("same-bridge traffic NOT enforced: {why}")
            }
        }
    }
}

/// Checks the sysctls under `proc_root` (`/proc` outside tests). `needed`:
/// whether the rules name any container.
pub fn check(proc_root: &Path, needed: bool) -> BridgeNetfilter {
    if !needed {
        return BridgeNetfilter::NotNeeded;
    }
    let net = proc_root.join("sys/net");
    if !net.is_dir() {
        // Not seeing /proc/sys is not knowing: say so, not "not loaded".
        return BridgeNetfilter::NotEnforced(format!(
            "cannot check: {} is not visible to the daemon (a unit with ProcSubset=pid hides it), \
             so whether traffic between containers on one bridge reaches nftables is unknown",
            net.display()
        ));
    }
    let dir = net.join("bridge");
    if !dir.is_dir() {
        return BridgeNetfilter::NotEnforced(format!(
            "the br_netfilter module is not loaded ({} is absent): traffic between containers on one \
             bridge never reaches nftables; load it (modprobe br_netfilter) and set \
             net.bridge.bridge-nf-call-iptables=1 and net.bridge.bridge-nf-call-ip6tables=1",
            dir.display()
        ));
    }
    let mut problems = Vec::new();
    for key in KEYS {
        let path = dir.join(key);
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "1" => {}
            Ok(v) => problems.push(format!("net.bridge.{key} is {}, not 1", v.trim())),
            Err(e) => problems.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    if problems.is_empty() {
        BridgeNetfilter::Enforced
    } else {
        BridgeNetfilter::NotEnforced(format!(
            "{}: traffic between containers on one bridge bypasses nftables; set {} (sysctl -w)",
            problems.join("; "),
            KEYS.map(|k| format!("net.bridge.{k}=1")).join(" and ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc` with `net/bridge` holding `values` (None: no module).
    fn proc_root(values: Option<[&str; 2]>) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "portcullis-bridge-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sys/net")).expect("temp dir");
        if let Some(values) = values {
            let dir = root.join("sys/net/bridge");
            std::fs::create_dir_all(&dir).expect("temp dir");
            for (key, v) in KEYS.iter().zip(values) {
                std::fs::write(dir.join(key), format!("{v}\n")).expect("write sysctl");
            }
        }
        root
    }

    #[test]
    fn both_set_is_enforced() {
        let root = proc_root(Some(["1", "1"]));
        assert_eq!(check(&root, true), BridgeNetfilter::Enforced);
        assert!(check(&root, true).ok());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn no_containers_need_nothing_even_without_the_module() {
        let root = proc_root(None);
        assert_eq!(check(&root, false), BridgeNetfilter::NotNeeded);
        assert!(check(&root, false).ok());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn module_not_loaded_is_not_enforced() {
        let root = proc_root(None);
        let s = check(&root, true);
        assert!(!s.ok());
        let text = s.describe();
        assert!(
            text.starts_with(
                "same-bridge traffic NOT enforced: the br_netfilter module is not loaded"
            ),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn one_sysctl_off_is_not_enforced_and_named() {
        for (values, off) in [
            (["0", "1"], "bridge-nf-call-iptables is 0"),
            (["1", "0"], "bridge-nf-call-ip6tables is 0"),
        ] {
            let root = proc_root(Some(values));
            let s = check(&root, true);
            assert!(!s.ok(), "{values:?}");
            assert!(s.describe().contains(off), "{}", s.describe());
            let _ = std::fs::remove_dir_all(root);
        }
    }

    #[test]
    fn a_hidden_proc_sys_is_not_enforced_and_not_called_a_missing_module() {
        let root = proc_root(None);
        std::fs::remove_dir_all(root.join("sys")).expect("remove");
        let s = check(&root, true);
        assert!(!s.ok());
        assert!(s.describe().contains("cannot check"), "{}", s.describe());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn an_unreadable_sysctl_is_not_enforced() {
        let root = proc_root(Some(["1", "1"]));
        std::fs::remove_file(root.join("sys/net/bridge").join(KEYS[1])).expect("remove");
        let s = check(&root, true);
        assert!(!s.ok());
        assert!(s.describe().contains("cannot read"), "{}", s.describe());
        let _ = std::fs::remove_dir_all(root);
    }
}
