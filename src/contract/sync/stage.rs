//! Staging the new contract beside the target, verifying it, and swapping it in.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::upstream::Vendored;
use super::{SyncError, io_error};
use crate::contract::checksums::{ChecksumManifest, sha256_hex};
use crate::contract::layout::{self, CHECKSUMS, PROTO, SCRIPTS_MANIFEST, SOURCE, VECTORS};
use crate::contract::tree::{self, EntryKind};
use crate::contract::verify;

/// Stages the new contract beside `target`, verifies it, and swaps it in.
pub(super) fn install(target: &Path, files: &[Vendored], source: &str) -> Result<(), SyncError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    check_replaceable(target)?;

    let staged = tempfile::Builder::new()
        .prefix(".contract-sync-")
        .tempdir_in(&parent)
        .map_err(io_error(&parent))?;
    let mut pins = ChecksumManifest::default();
    for f in files {
        let out = staged.path().join(&f.dest);
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        std::fs::write(&out, &f.bytes).map_err(io_error(&out))?;
        pins.entries.insert(f.dest.clone(), sha256_hex(&f.bytes));
    }
    let source_path = staged.path().join(SOURCE);
    std::fs::write(&source_path, source).map_err(io_error(&source_path))?;
    pins.entries
        .insert(SOURCE.to_owned(), sha256_hex(source.as_bytes()));
    let checksums = staged.path().join(CHECKSUMS);
    std::fs::write(&checksums, pins.render()).map_err(io_error(&checksums))?;
    let report =
        verify::verify(staged.path()).map_err(|e| SyncError::StagedInvalid(e.to_string()))?;
    if !report.is_ok() {
        let lines: Vec<String> = report.findings.iter().map(|f| f.to_string()).collect();
        return Err(SyncError::StagedInvalid(lines.join("; ")));
    }
    swap_in(staged, target, &parent)
}

/// Refuses to replace a directory holding anything but contract files: sync must never delete
/// data it did not put there.
fn check_replaceable(target: &Path) -> Result<(), SyncError> {
    let refuse = |message: String| SyncError::Target {
        target: target.to_owned(),
        message,
    };
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(target)(e)),
    };
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    let mut allowed: BTreeSet<String> = [CHECKSUMS, SOURCE, PROTO, VECTORS, SCRIPTS_MANIFEST]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Ok(text) = std::fs::read_to_string(target.join(CHECKSUMS))
        && let Ok(m) = ChecksumManifest::parse(&text, Path::new(CHECKSUMS))
    {
        allowed.extend(m.entries.into_keys());
    }
    if let Ok(m) = layout::read_scripts_manifest(&target.join(SCRIPTS_MANIFEST)) {
        allowed.extend(layout::pinned_files(Some(&m)));
    }
    let on_disk = tree::list(target).map_err(io_error(target))?;
    let foreign: Vec<&String> = on_disk
        .iter()
        .filter(|(p, kind)| **kind == EntryKind::Other || !allowed.contains(*p))
        .map(|(p, _)| p)
        .collect();
    if !foreign.is_empty() {
        return Err(refuse(format!(
            "it holds files that are not part of a contract ({}); move them away first",
            foreign
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Renames the old contract aside, the staged one into place, then deletes the old one. If the
/// second rename fails, the old contract is renamed back.
fn swap_in(staged: tempfile::TempDir, target: &Path, parent: &Path) -> Result<(), SyncError> {
    if std::fs::symlink_metadata(target).is_err() {
        let staged_path = staged.keep();
        return std::fs::rename(&staged_path, target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staged_path);
            io_error(target)(e)
        });
    }
    // An empty placeholder: renaming a directory onto an empty one replaces it.
    let aside = tempfile::Builder::new()
        .prefix(".contract-old-")
        .tempdir_in(parent)
        .map_err(io_error(parent))?
        .keep();
    if let Err(e) = std::fs::rename(target, &aside) {
        let _ = std::fs::remove_dir(&aside);
        return Err(io_error(target)(e));
    }
    let staged_path = staged.keep();
    if let Err(e) = std::fs::rename(&staged_path, target) {
        let _ = std::fs::rename(&aside, target);
        let _ = std::fs::remove_dir_all(&staged_path);
        return Err(io_error(target)(e));
    }
    std::fs::remove_dir_all(&aside).map_err(io_error(&aside))
}
