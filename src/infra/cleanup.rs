//! What a run must undo even when it is interrupted: an interrupt handler exits the process
//! without running destructors, so the things destructors would remove are registered here too.
//!
//! - [`TempFolder`]: a temporary folder (a Redis's or a server's), removed on drop and by
//!   [`on_interrupt`].
//! - [`Namespace`]: the run's keys (`<prefix>:*`) on a Redis the harness did not start, deleted
//!   by [`Namespace::delete`] at the end of the run and by [`on_interrupt`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live temp folders, for an interrupt.
static FOLDERS: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
/// Live namespaces on external Redis servers: id → (url, prefix).
static NAMESPACES: Mutex<BTreeMap<u64, (String, String)>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
/// Set by [`on_interrupt`]: no new temp folder may appear behind its back.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long calls already on their way may take to land before the keys are deleted.
const SETTLE: Duration = Duration::from_millis(100);
/// How long an interrupted run may spend deleting one namespace.
const DELETE_BOUND: Duration = Duration::from_secs(10);

/// A temporary folder that an interrupt removes as well as a drop.
#[derive(Debug)]
pub struct TempFolder {
    id: u64,
    dir: tempfile::TempDir,
}

impl TempFolder {
    /// A fresh folder in the system temp dir, named `<prefix>XXXXXX`.
    pub fn new(prefix: &str) -> std::io::Result<TempFolder> {
        if STOPPING.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the run was interrupted"));
        }
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        lock(&FOLDERS).insert(id, dir.path().to_path_buf());
        Ok(TempFolder { id, dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        lock(&FOLDERS).remove(&self.id);
    }
}

/// The run's keys under `<prefix>:` on a Redis someone else runs. Registered while it lives, so
/// an interrupt deletes them; [`Namespace::delete`] does it at the end of a run that finishes.
#[derive(Debug)]
pub struct Namespace {
    id: u64,
    url: String,
    prefix: String,
}

impl Namespace {
    pub fn register(url: &str, prefix: &str) -> Namespace {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        lock(&NAMESPACES).insert(id, (url.to_owned(), prefix.to_owned()));
        Namespace {
            id,
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key under `<prefix>:` and nothing else; returns how many went.
    pub async fn delete(self) -> Result<u64, DeleteError> {
        delete(&self.url, &self.prefix).await
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        lock(&NAMESPACES).remove(&self.id);
    }
}

/// Why a namespace's keys could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Connect(#[from] super::RedisError),
    #[error("deleting {prefix}:* on {url}: {source}")]
    Delete {
        prefix: String,
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("deleting {prefix}:* on {url}: no answer within {DELETE_BOUND:?}")]
    Timeout { prefix: String, url: String },
}

async fn delete(url: &str, prefix: &str) -> Result<u64, DeleteError> {
    let work = async {
        let mut con = super::connect(url).await?;
        super::delete_prefixed(&mut con, prefix)
            .await
            .map_err(|source| DeleteError::Delete {
                prefix: prefix.into(),
                url: url.into(),
                source,
            })
    };
    tokio::time::timeout(DELETE_BOUND, work)
        .await
        .map_err(|_| DeleteError::Timeout {
            prefix: prefix.into(),
            url: url.into(),
        })?
}

/// For an interrupt handler about to exit the process: kills every owned child, then deletes
/// every registered namespace and removes every registered temp folder. Returns what failed.
pub async fn on_interrupt() -> Vec<String> {
    STOPPING.store(true, Ordering::SeqCst);
    super::kill_all_owned();
    let mut failed = Vec::new();
    let namespaces = std::mem::take(&mut *lock(&NAMESPACES));
    if !namespaces.is_empty() {
        // Writers are stopped (killed, or refusing new calls); let the calls in flight land.
        tokio::time::sleep(SETTLE).await;
    }
    for (url, prefix) in namespaces.values() {
        if let Err(e) = delete(url, prefix).await {
            failed.push(e.to_string());
        }
    }
    let folders = std::mem::take(&mut *lock(&FOLDERS));
    for dir in folders.values() {
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            failed.push(format!("removing {}: {e}", dir.display()));
        }
    }
    failed
}

/// True once an interrupt is being handled: in-process writers to a shared Redis stop.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_registered_while_it_lives() {
        let folder = TempFolder::new("tk-conform-cleanup-test-").unwrap();
        let path = folder.path().to_path_buf();
        assert!(lock(&FOLDERS).values().any(|p| *p == path));
        drop(folder);
        assert!(!path.exists());
        assert!(!lock(&FOLDERS).values().any(|p| *p == path));
    }
}
