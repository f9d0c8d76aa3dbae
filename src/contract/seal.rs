//! Re-pinning: rewrite `manifest.sha256` from the files on disk after an intended edit.
//!
//! Sealing is for maintainers, so it refuses anything it should not bless: an unparseable or
//! wrong-version vectors file or scripts manifest, a missing contract file, a stray file, or a
//! Lua file whose bytes disagree with the `sha256` its scripts manifest records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checksums::{ChecksumManifest, sha256_hex};
use super::layout::{self, CHECKSUMS, SCRIPTS_DIR, SCRIPTS_MANIFEST, SOURCE, VECTORS};
use super::tree::{self, EntryKind};
use super::vectors::VectorsFile;
use crate::report::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{}: not a contract directory ({reason}); pass --contract DIR", path.display())]
    NotADirectory { path: PathBuf, reason: String },
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to seal {}:\n{}", root.display(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Refused {
        root: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct SealReport {
    /// Every pinned path, in manifest order.
    pub pinned: Vec<String>,
    /// Paths whose digest is new or differs from the previous manifest.
    pub changed: Vec<String>,
    /// True when SOURCE was missing and seal wrote one.
    pub wrote_source: bool,
}

pub fn seal(root: &Path) -> Result<SealReport, SealError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(SealError::NotADirectory {
                path: root.to_owned(),
                reason: "it is a file".into(),
            });
        }
        Err(e) => {
            return Err(SealError::NotADirectory {
                path: root.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SealError::Io { path, source }
    };
    let on_disk = tree::list(root).map_err(io(root))?;
    let mut problems = Vec::new();
    // A missing SOURCE is written (and pinned) along with the manifest, once nothing is refused.
    let new_source = (!on_disk.contains_key(SOURCE)).then(|| {
        format!(
            "source: files on disk, sealed by `tk-conform contract seal` (tk-conform {})\n",
            env!("CARGO_PKG_VERSION")
        )
    });

    let scripts = if on_disk.contains_key(SCRIPTS_MANIFEST) {
        match layout::read_scripts_manifest(&root.join(SCRIPTS_MANIFEST)) {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(format!("invalid: {SCRIPTS_MANIFEST}: {}", e.detail()));
                None
            }
        }
    } else {
        None
    };
    if on_disk.contains_key(VECTORS)
        && let Err(e) = layout::read_versioned_json::<VectorsFile>(&root.join(VECTORS))
    {
        problems.push(format!("invalid: {VECTORS}: {}", e.detail()));
    }

    let mut files = layout::pinned_files(scripts.as_ref());
    if on_disk.contains_key(SCRIPTS_MANIFEST) && !files.iter().any(|f| f == SCRIPTS_MANIFEST) {
        files.push(SCRIPTS_MANIFEST.into());
        files.sort();
    }
    let mut digests = BTreeMap::new();
    for file in &files {
        if let (true, Some(text)) = (file == SOURCE, &new_source) {
            digests.insert(file.clone(), sha256_hex(text.as_bytes()));
            continue;
        }
        match on_disk.get(file) {
            Some(EntryKind::File) => {
                let path = root.join(file);
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                digests.insert(file.clone(), sha256_hex(&bytes));
            }
            Some(EntryKind::Other) => problems.push(format!(
                "not a regular file: {file}: contract files must be plain files"
            )),
            None => problems.push(format!("missing: {file}: a contract file")),
        }
    }
    for (path, _) in on_disk
        .iter()
        .filter(|(p, _)| !digests.contains_key(*p) && !files.contains(p) && *p != CHECKSUMS)
    {
        problems.push(format!(
            "unexpected: {path}: not a contract file; move it out of the contract directory"
        ));
    }
    if let Some(m) = &scripts {
        for s in &m.scripts {
            let path = format!("{SCRIPTS_DIR}/{}", s.file);
            if let Some(actual) = digests.get(&path)
                && !actual.eq_ignore_ascii_case(&s.sha256)
            {
                problems.push(format!(
                    "drifted: {path}: {SCRIPTS_MANIFEST} records sha256 {} for `{}`, actual {actual}; \
                     update the scripts manifest first",
                    s.sha256, s.name
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(SealError::Refused {
            root: root.to_owned(),
            problems,
        });
    }

    let previous = std::fs::read_to_string(root.join(CHECKSUMS))
        .ok()
        .and_then(|t| ChecksumManifest::parse(&t, Path::new(CHECKSUMS)).ok())
        .unwrap_or_default();
    let changed = digests
        .iter()
        .filter(|(p, d)| previous.entries.get(*p) != Some(*d))
        .map(|(p, _)| p.clone())
        .collect();
    if let Some(text) = &new_source {
        let source_path = root.join(SOURCE);
        write_atomic(&source_path, text.as_bytes()).map_err(io(&source_path))?;
    }
    let manifest = ChecksumManifest { entries: digests };
    let checksums_path = root.join(CHECKSUMS);
    write_atomic(&checksums_path, manifest.render().as_bytes()).map_err(io(&checksums_path))?;
    let wrote_source = new_source.is_some();
    Ok(SealReport {
        pinned: manifest.entries.keys().cloned().collect(),
        changed,
        wrote_source,
    })
}
