//! Noticing a change of the rule file, or of a certificate or key file it
//! names (inotify through the `notify` crate): either is a reload.
//!
//! The files' directories are watched, not the files: editors, deployment
//! tools and certificate renewers replace a file by writing a new one and
//! renaming it over the old, which a watch on the old inode would never
//! see. Events for other names in those directories are ignored. If
//! inotify cannot be used (no instances left, an unusual file system) the
//! watch falls back to comparing the files' modification times every
//! second, and says so.

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
    paths: Vec<PathBuf>,
    events: Option<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)>,
    mtimes: Vec<Option<SystemTime>>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The directory a file is watched through, absolute: events name a file
/// by the absolute directory watched joined with its name, whatever the
/// path was given as.
fn dir_of(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
}

impl RuleFileWatch {
    /// Watches the rule file and the certificate files `also` (a rule set's
    /// [`Certificates::files`](crate::tls::Certificates::files)).
    pub fn new(path: &Path, also: &[PathBuf]) -> RuleFileWatch {
        let mut paths = vec![path.to_owned()];
        paths.extend(also.iter().cloned());
        let events = match Self::inotify(&paths) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot watch the rule and certificate files with inotify; checking their modification times every second instead");
                None
            }
        };
        RuleFileWatch {
            mtimes: paths.iter().map(|p| mtime(p)).collect(),
            paths,
            events,
        }
    }

    /// The files watched: the rule file first.
    pub fn files(&self) -> &[PathBuf] {
        &self.paths
    }

    fn inotify(
        paths: &[PathBuf],
    ) -> notify::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let wanted: Vec<(PathBuf, std::ffi::OsString)> = paths
            .iter()
            .filter_map(|p| Some((dir_of(p), p.file_name()?.to_owned())))
            .collect();
        let mut dirs: Vec<PathBuf> = wanted.iter().map(|(d, _)| d.clone()).collect();
        dirs.sort();
        dirs.dedup();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let ours = match &ev {
                // An error may mean lost events: look again.
                Err(_) => true,
                Ok(ev) => {
                    !ev.kind.is_access()
                        && ev.paths.iter().any(|p| {
                            wanted.iter().any(|(d, n)| {
                                p.file_name() == Some(n.as_os_str())
                                    && p.parent().is_some_and(|pd| pd == d)
                            })
                        })
                }
            };
            if ours {
                let _ = tx.send(());
            }
        })?;
        for dir in &dirs {
            w.watch(dir, RecursiveMode::NonRecursive)?;
        }
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
                let now: Vec<_> = self.paths.iter().map(|p| mtime(p)).collect();
                if now != self.mtimes {
                    self.mtimes = now;
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
        let mut w = super::RuleFileWatch::new(&path, &[]);
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

    #[test]
    fn a_relative_path_is_watched_through_its_absolute_directory() {
        // notify reports events under the absolute directory it watches:
        // `rules.json` given relative must still match them.
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(super::dir_of(std::path::Path::new("rules.json")), cwd);
        assert_eq!(
            super::dir_of(std::path::Path::new("tls/site.pem")),
            cwd.join("tls")
        );
    }

    #[tokio::test]
    async fn a_certificate_file_elsewhere_is_watched_too() {
        let rules = tempfile::tempdir().expect("tempdir");
        let certs = tempfile::tempdir().expect("tempdir");
        let path = rules.path().join("rules.json");
        let cert = certs.path().join("site.pem");
        std::fs::write(&path, "{}").expect("write");
        std::fs::write(&cert, "old").expect("write");
        let mut w = super::RuleFileWatch::new(&path, std::slice::from_ref(&cert));
        std::fs::write(certs.path().join("other.pem"), "x").expect("write");
        let quiet = tokio::time::timeout(Duration::from_millis(300), w.changed()).await;
        assert!(
            quiet.is_err(),
            "a neighbour of the certificate woke the watch"
        );
        let tmp = certs.path().join(".site.pem.new");
        std::fs::write(&tmp, "new").expect("write");
        std::fs::rename(&tmp, &cert).expect("rename");
        tokio::time::timeout(Duration::from_secs(2), w.changed())
            .await
            .expect("the renewed certificate is seen");
    }
}
