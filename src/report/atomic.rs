//! Atomic file writes: readers see the old file or the new one, never half of one.

use std::io::{self, Write};
use std::path::Path;
use std::sync::RwLock;

/// Held (shared) by every write in progress; taken for good by [`stop_writes`].
static WRITES: RwLock<()> = RwLock::new(());

/// For an interrupt handler about to exit the process: waits for the writes in progress to land
/// and blocks every later one, so no half-written `.tmp-*` file is left behind.
pub fn stop_writes() {
    let guard = WRITES.write().unwrap_or_else(|e| e.into_inner());
    std::mem::forget(guard);
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let _writing = WRITES.read().unwrap_or_else(|e| e.into_inner());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    // Logs are for people and CI artifact uploads: readable like any file we write (not 0600).
    use std::os::unix::fs::PermissionsExt;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        super::write_atomic(&path, b"first, longer content").unwrap();
        super::write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
