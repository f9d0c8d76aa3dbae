//! A directory tree listed as `/`-separated relative paths, for checksum gates and staging.

use std::collections::BTreeMap;
use std::path::Path;

/// What sits at one path of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    /// A symbolic link, socket, fifo or device: never part of a contract.
    Other,
}

/// Every non-directory entry below `root`, by relative path. Links are reported, not followed.
pub fn list(root: &Path) -> std::io::Result<BTreeMap<String, EntryKind>> {
    let mut out = BTreeMap::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, EntryKind>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if kind.is_file() {
            out.insert(rel, EntryKind::File);
        } else {
            out.insert(rel, EntryKind::Other);
        }
    }
    Ok(())
}
