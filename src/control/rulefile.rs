//! Noticing a change of the rule file (inotify through the `notify` crate).
//!
//! The file's directory is watched, not the file: editors and deployment
//! tools replace a file by writing a new one and renaming it over the old,
//! which a watch on the old inode would never see. Events for other names
//! in the directory are ignored. If inotify cannot be used (no instances
//! left, an unusual file system) the watch falls back to comparing the
//! file's modification time every second, and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

/// How often the fallback looks at the modification time.
const POLL: Duration = Duration::from_secs(1);
/// Events that come together (write, then close; rename) are one change.
const SETTLE: Duration = Duration::from_millis(50);

pub struct RuleFileWatch {
    path: PathBuf,
    events: Option<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)>,
    mtime: Option<SystemTime>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl RuleFileWatch {
    pub fn new(path: &Path) -> RuleFileWatch {
        let events = match Self::inotify(path) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot watch the rule file with inotify; checking its modification time every second instead");
                None
            }
        };
        RuleFileWatch {
            path: path.to_owned(),
            events,
            mtime: mtime(path),
        }
    }

    fn inotify(
        path: &Path,
    ) -> notify::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let name = path.file_name().map(|n| n.to_owned());
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let ours = match &ev {
                // An error may mean lost events: look again.
                Err(_) => true,
                Ok(ev) => {
                    !ev.kind.is_access()
                        && ev.paths.iter().any(|p| p.file_name() == name.as_deref())
                }
            };
            if ours {
                let _ = tx.send(());
            }
        })?;
        w.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok((w, rx))
    }

    /// Returns when the rule file may have changed.
    pub async fn changed(&mut self) {
        match &mut self.events {
            Some((_, rx)) => {
                if rx.recv().await.is_none() {
                    // The watcher is gone; fall back to polling.
                    self.events = None;
                    return;
                }
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
            }
            None => loop {
                tokio::time::sleep(POLL).await;
                let m = mtime(&self.path);
                if m != self.mtime {
                    self.mtime = m;
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn a_rename_over_the_file_is_a_change_and_neighbours_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.json");
        std::fs::write(&path, "{}").expect("write");
        let mut w = super::RuleFileWatch::new(&path);
        assert!(w.events.is_some(), "inotify is available here");
        // A neighbour changing is not a change of the rule file.
        std::fs::write(dir.path().join("other.json"), "{}").expect("write");
        let quiet = tokio::time::timeout(Duration::from_millis(300), w.changed()).await;
        assert!(quiet.is_err(), "a neighbour's change woke the watch");
        // Replaced by rename, as deployment tools do: seen at once.
        let tmp = dir.path().join(".rules.json.tmp");
        std::fs::write(&tmp, "{\"version\": 1}").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        tokio::time::timeout(Duration::from_secs(2), w.changed())
            .await
            .expect("the rename is seen");
    }
}
