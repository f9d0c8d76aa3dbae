//! The drift gate: does a contract directory hold exactly the bytes its `manifest.sha256` pins,
//! at the contract version this build judges?
//!
//! Every problem becomes one [`Finding`] naming the file, so a CI log says what to look at.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::checksums::{ChecksumManifest, sha256_hex};
use super::layout::{self, CHECKSUMS, SCRIPTS_DIR, SCRIPTS_MANIFEST, SOURCE, VECTORS};
use super::tree::{self, EntryKind};
use super::vectors::VectorsFile;

/// The contract could not be examined at all (as opposed to: it was examined and is wrong).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: not a contract directory ({reason}); pass --contract DIR", path.display())]
    NotADirectory { path: PathBuf, reason: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Relative to the contract root, `/`-separated.
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The bytes differ from what `manifest.sha256` pins.
    Drifted { expected: String, actual: String },
    /// A file the contract needs is not there.
    Missing { why: String },
    /// A file nothing in the contract accounts for.
    Unexpected { actual: String },
    /// A contract file that `manifest.sha256` does not pin.
    Unpinned { actual: String },
    /// A Lua file whose bytes differ from the `sha256` its scripts manifest records.
    ScriptDigest {
        script: String,
        expected: String,
        actual: String,
    },
    /// A link, device or other non-regular entry.
    NotRegular,
    /// Unparseable, or of another contract version; the message names line and column.
    Invalid { message: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = &self.path;
        match &self.problem {
            Problem::Drifted { expected, actual } => write!(
                f,
                "drifted: {path}: {CHECKSUMS} pins sha256 {expected}, actual {actual}"
            ),
            Problem::Missing { why } => write!(f, "missing: {path}: {why}"),
            Problem::Unexpected { actual } => write!(
                f,
                "unexpected: {path}: not listed in {CHECKSUMS} (actual sha256 {actual})"
            ),
            Problem::Unpinned { actual } => write!(
                f,
                "unpinned: {path}: a contract file {CHECKSUMS} does not list (actual sha256 {actual}); \
                 run `tk-conform contract seal` if the change is intended"
            ),
            Problem::ScriptDigest {
                script,
                expected,
                actual,
            } => write!(
                f,
                "drifted: {path}: {SCRIPTS_MANIFEST} records sha256 {expected} for `{script}`, actual {actual}"
            ),
            Problem::NotRegular => write!(
                f,
                "not a regular file: {path}: contract files must be plain files, not links or devices"
            ),
            Problem::Invalid { message } => write!(f, "invalid: {path}: {message}"),
        }
    }
}

/// The outcome of one verification: empty findings mean the contract is intact.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub root: PathBuf,
    /// How many files `manifest.sha256` pins.
    pub pinned: usize,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }
}

pub fn verify(root: &Path) -> Result<VerifyReport, VerifyError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(VerifyError::NotADirectory {
                path: root.to_owned(),
                reason: "it is a file".into(),
            });
        }
        Err(e) => {
            return Err(VerifyError::NotADirectory {
                path: root.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    let on_disk = tree::list(root).map_err(|source| VerifyError::Io {
        path: root.to_owned(),
        source,
    })?;
    let mut findings = Vec::new();
    let mut digests = Digests::new(root);
    let invalid = |path: &str, message: String| Finding {
        path: path.to_owned(),
        problem: Problem::Invalid { message },
    };

    let pinned = match std::fs::read_to_string(root.join(CHECKSUMS)) {
        Ok(text) => match ChecksumManifest::parse(&text, Path::new(CHECKSUMS)) {
            Ok(m) => m.entries,
            Err(e) => {
                findings.push(invalid(CHECKSUMS, e.to_string()));
                BTreeMap::new()
            }
        },
        Err(_) => {
            findings.push(Finding {
                path: CHECKSUMS.into(),
                problem: Problem::Missing {
                    why: "no checksum manifest; run `tk-conform contract seal` to write one".into(),
                },
            });
            BTreeMap::new()
        }
    };

    let scripts_present = on_disk.get(SCRIPTS_MANIFEST) == Some(&EntryKind::File);
    let scripts = if scripts_present {
        match layout::read_scripts_manifest(&root.join(SCRIPTS_MANIFEST)) {
            Ok(m) => Some(m),
            Err(e) => {
                findings.push(invalid(SCRIPTS_MANIFEST, e.detail()));
                None
            }
        }
    } else {
        None
    };
    if on_disk.get(VECTORS) == Some(&EntryKind::File)
        && let Err(e) = layout::read_versioned_json::<VectorsFile>(&root.join(VECTORS))
    {
        findings.push(invalid(VECTORS, e.detail()));
    }

    // What the contract's own files say must be pinned.
    let mut required: BTreeMap<String, String> = layout::pinned_files(scripts.as_ref())
        .into_iter()
        .map(|p| {
            let why = if p == SOURCE {
                "records where the contract came from; `tk-conform contract sync` or `seal` writes it"
            } else {
                "a required contract file"
            };
            (p, why.to_owned())
        })
        .collect();
    if scripts_present {
        required.insert(SCRIPTS_MANIFEST.into(), "the scripts manifest".into());
    }
    if let Some(m) = &scripts {
        for s in &m.scripts {
            required.insert(
                format!("{SCRIPTS_DIR}/{}", s.file),
                format!("named by {SCRIPTS_MANIFEST} for `{}`", s.name),
            );
        }
    }

    for (path, expected) in &pinned {
        match on_disk.get(path) {
            None => findings.push(Finding {
                path: path.clone(),
                problem: Problem::Missing {
                    why: format!("listed in {CHECKSUMS} (expected sha256 {expected})"),
                },
            }),
            Some(EntryKind::Other) => findings.push(Finding {
                path: path.clone(),
                problem: Problem::NotRegular,
            }),
            Some(EntryKind::File) => {
                let actual = digests.of(path)?;
                if &actual != expected {
                    findings.push(Finding {
                        path: path.clone(),
                        problem: Problem::Drifted {
                            expected: expected.clone(),
                            actual,
                        },
                    });
                }
            }
        }
    }
    for (path, why) in &required {
        if pinned.contains_key(path) {
            continue;
        }
        match on_disk.get(path) {
            None => findings.push(Finding {
                path: path.clone(),
                problem: Problem::Missing { why: why.clone() },
            }),
            Some(EntryKind::Other) => findings.push(Finding {
                path: path.clone(),
                problem: Problem::NotRegular,
            }),
            Some(EntryKind::File) => findings.push(Finding {
                path: path.clone(),
                problem: Problem::Unpinned {
                    actual: digests.of(path)?,
                },
            }),
        }
    }
    for (path, kind) in &on_disk {
        if pinned.contains_key(path) || required.contains_key(path) {
            continue;
        }
        if path == CHECKSUMS {
            if *kind == EntryKind::Other {
                findings.push(Finding {
                    path: path.clone(),
                    problem: Problem::NotRegular,
                });
            }
            continue;
        }
        findings.push(Finding {
            path: path.clone(),
            problem: match kind {
                EntryKind::File => Problem::Unexpected {
                    actual: digests.of(path)?,
                },
                EntryKind::Other => Problem::NotRegular,
            },
        });
    }
    if let Some(m) = &scripts {
        for s in &m.scripts {
            let path = format!("{SCRIPTS_DIR}/{}", s.file);
            if on_disk.get(&path) != Some(&EntryKind::File) {
                continue;
            }
            let actual = digests.of(&path)?;
            if !actual.eq_ignore_ascii_case(&s.sha256) {
                findings.push(Finding {
                    path,
                    problem: Problem::ScriptDigest {
                        script: s.name.clone(),
                        expected: s.sha256.clone(),
                        actual,
                    },
                });
            }
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(VerifyReport {
        root: root.to_owned(),
        pinned: pinned.len(),
        findings,
    })
}

/// Reads and hashes each file at most once.
struct Digests<'a> {
    root: &'a Path,
    cache: BTreeMap<String, String>,
}

impl<'a> Digests<'a> {
    fn new(root: &'a Path) -> Self {
        Digests {
            root,
            cache: BTreeMap::new(),
        }
    }

    fn of(&mut self, rel: &str) -> Result<String, VerifyError> {
        if let Some(d) = self.cache.get(rel) {
            return Ok(d.clone());
        }
        let path = self.root.join(rel);
        let bytes = std::fs::read(&path).map_err(|source| VerifyError::Io { path, source })?;
        let digest = sha256_hex(&bytes);
        self.cache.insert(rel.to_owned(), digest.clone());
        Ok(digest)
    }
}
