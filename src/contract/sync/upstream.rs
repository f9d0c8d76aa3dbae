//! Finding the contract's pieces in an upstream tree (either layout) and checking them
//! against the upstream's own checksums and versions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::{SourceNote, SyncError, UpstreamLayout, io_error};
use crate::contract::checksums::{ChecksumManifest, sha256_hex};
use crate::contract::layout::{
    self, CHECKSUMS, PROTO, SCRIPTS_DIR, SCRIPTS_MANIFEST, VECTORS, is_plain_relative,
};
use crate::contract::vectors::VectorsFile;

/// How deep below the root the ThrottleKit scripts folder is looked for.
const MAX_SEARCH_DEPTH: usize = 8;

/// Where the contract's pieces sit in an upstream tree.
pub(super) struct Upstream {
    root: PathBuf,
    contract_dir: PathBuf,
    scripts_dir: PathBuf,
    pub(super) layout: UpstreamLayout,
}

impl Upstream {
    /// `path` relative to the upstream root, for messages and SOURCE.
    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/")
    }
}

fn is_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

pub(super) fn locate(root: &Path, from: &str) -> Result<Upstream, SyncError> {
    let not_contract = |message: String| SyncError::NotAContract {
        from: from.to_owned(),
        message,
    };
    if !root.is_dir() {
        return Err(not_contract(
            "not a directory (pass a checkout, a contract folder, or an http(s) URL of a .tar.gz)"
                .into(),
        ));
    }
    let holds_contract = |d: &Path| is_file(&d.join(PROTO)) && is_file(&d.join(VECTORS));
    let contract_dir = if holds_contract(root) {
        root.to_owned()
    } else if holds_contract(&root.join("contract")) {
        root.join("contract")
    } else {
        return Err(not_contract(format!(
            "no contract folder: expected {PROTO} and {VECTORS} in it or in its contract/ folder"
        )));
    };
    let own_scripts = contract_dir.join(SCRIPTS_DIR);
    let (scripts_dir, layout) = if is_file(&own_scripts.join("manifest.json")) {
        (own_scripts, UpstreamLayout::TkConform)
    } else {
        (find_scripts_dir(root, from)?, UpstreamLayout::ThrottleKit)
    };
    Ok(Upstream {
        root: root.to_owned(),
        contract_dir,
        scripts_dir,
        layout,
    })
}

/// Looks below `root` for the folder whose `manifest.json` is a scripts manifest.
fn find_scripts_dir(root: &Path, from: &str) -> Result<PathBuf, SyncError> {
    let mut found = Vec::new();
    search(root, 0, &mut found).map_err(io_error(root))?;
    // The same manifest may be shipped twice (e.g. source and build output): fine if identical.
    let mut by_content: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for dir in found {
        let manifest = dir.join("manifest.json");
        let bytes = std::fs::read(&manifest).map_err(io_error(&manifest))?;
        by_content.entry(sha256_hex(&bytes)).or_default().push(dir);
    }
    match by_content.len() {
        0 => Err(SyncError::NotAContract {
            from: from.to_owned(),
            message:
                "no scripts folder found: expected a manifest.json listing `scripts` (and the \
                      *.lua files it names) below the root"
                    .into(),
        }),
        1 => {
            let mut dirs = by_content.into_values().next().unwrap_or_default();
            dirs.sort();
            Ok(dirs.remove(0))
        }
        _ => Err(SyncError::NotAContract {
            from: from.to_owned(),
            message: format!(
                "several different scripts manifests found ({}); sync from a tree that holds one",
                by_content
                    .values()
                    .flatten()
                    .map(|d| d.join("manifest.json").display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn search(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let manifest = dir.join("manifest.json");
    if is_file(&manifest) && looks_like_scripts_manifest(&manifest) {
        found.push(dir.to_owned());
    }
    if depth >= MAX_SEARCH_DEPTH {
        return Ok(());
    }
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let skip = name.starts_with('.') || name == "node_modules" || name == "target";
        if !skip && entry.file_type()?.is_dir() {
            subdirs.push(entry.path());
        }
    }
    subdirs.sort();
    for sub in subdirs {
        search(&sub, depth + 1, found)?;
    }
    Ok(())
}

fn looks_like_scripts_manifest(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) else {
        return false;
    };
    map.get("scripts").is_some_and(|s| s.is_array()) && map.contains_key("contractVersion")
}

/// One file to vendor: where it goes, where it came from, and its bytes.
pub(super) struct Vendored {
    pub(super) dest: String,
    pub(super) origin: String,
    pub(super) bytes: Vec<u8>,
}

/// Checks the upstream against its own checksums and versions, and reads what to vendor.
pub(super) fn collect(up: &Upstream) -> Result<Vec<Vendored>, SyncError> {
    let checksums_path = up.contract_dir.join(CHECKSUMS);
    let checksums_rel = up.rel(&checksums_path);
    if !is_file(&checksums_path) {
        return Err(SyncError::UpstreamInvalid {
            path: checksums_rel,
            message: "missing: without its checksums the upstream cannot be checked".into(),
        });
    }
    let text = std::fs::read_to_string(&checksums_path).map_err(io_error(&checksums_path))?;
    let pins = ChecksumManifest::parse(&text, Path::new(&checksums_rel)).map_err(|e| {
        SyncError::UpstreamInvalid {
            path: checksums_rel.clone(),
            message: e.to_string(),
        }
    })?;
    // Every pinned file must be there with the pinned bytes.
    let mut pinned: BTreeSet<PathBuf> = BTreeSet::new();
    for (listed, expected) in &pins.entries {
        let file = resolve_pinned(up, listed).ok_or_else(|| SyncError::UpstreamInvalid {
            path: checksums_rel.clone(),
            message: format!("it pins `{listed}`, which the upstream does not contain"),
        })?;
        let bytes = read_regular(up, &file)?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(SyncError::UpstreamMismatch {
                path: up.rel(&file),
                pinned_by: checksums_rel.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        pinned.insert(file);
    }
    let mut out = Vec::new();
    for name in [PROTO, VECTORS] {
        let file = up.contract_dir.join(name);
        if !pinned.contains(&file) {
            return Err(SyncError::UpstreamInvalid {
                path: checksums_rel.clone(),
                message: format!("it does not pin {}", up.rel(&file)),
            });
        }
        out.push(Vendored {
            dest: name.to_owned(),
            origin: up.rel(&file),
            bytes: read_regular(up, &file)?,
        });
    }
    let vectors_text = String::from_utf8_lossy(&out[1].bytes).into_owned();
    layout::parse_versioned_json::<VectorsFile>(&vectors_text, Path::new(&out[1].origin)).map_err(
        |e| SyncError::UpstreamInvalid {
            path: out[1].origin.clone(),
            message: e.detail(),
        },
    )?;

    let manifest_path = up.scripts_dir.join("manifest.json");
    let manifest_rel = up.rel(&manifest_path);
    let manifest_bytes = read_regular(up, &manifest_path)?;
    let manifest = layout::parse_versioned_json::<crate::contract::scripts::ScriptsManifest>(
        &String::from_utf8_lossy(&manifest_bytes),
        Path::new(&manifest_rel),
    )
    .map_err(|e| SyncError::UpstreamInvalid {
        path: manifest_rel.clone(),
        message: e.detail(),
    })?;
    out.push(Vendored {
        dest: SCRIPTS_MANIFEST.to_owned(),
        origin: manifest_rel.clone(),
        bytes: manifest_bytes,
    });
    let mut seen = BTreeSet::new();
    for script in &manifest.scripts {
        if !is_plain_relative(&script.file) {
            return Err(SyncError::UpstreamInvalid {
                path: manifest_rel.clone(),
                message: format!(
                    "script `{}` names `{}`, which is not a plain relative path",
                    script.name, script.file
                ),
            });
        }
        if !seen.insert(script.file.clone()) {
            continue;
        }
        let file = up.scripts_dir.join(&script.file);
        if !file.exists() && std::fs::symlink_metadata(&file).is_err() {
            return Err(SyncError::UpstreamInvalid {
                path: manifest_rel.clone(),
                message: format!(
                    "script `{}` names `{}`, which the upstream does not contain",
                    script.name, script.file
                ),
            });
        }
        let bytes = read_regular(up, &file)?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&script.sha256) {
            return Err(SyncError::UpstreamMismatch {
                path: up.rel(&file),
                pinned_by: manifest_rel.clone(),
                expected: script.sha256.clone(),
                actual,
            });
        }
        out.push(Vendored {
            dest: format!("{SCRIPTS_DIR}/{}", script.file),
            origin: up.rel(&file),
            bytes,
        });
    }
    Ok(out)
}

/// Finds the file a `manifest.sha256` line names: relative to the manifest's folder first, then
/// to each folder above it up to the upstream root. Never outside the root.
fn resolve_pinned(up: &Upstream, listed: &str) -> Option<PathBuf> {
    let mut base = Some(up.contract_dir.as_path());
    while let Some(dir) = base {
        if let Some(candidate) = normalize_within(&up.root, &dir.join(listed))
            && std::fs::symlink_metadata(&candidate).is_ok()
        {
            return Some(candidate);
        }
        if dir == up.root {
            break;
        }
        base = dir.parent();
    }
    None
}

/// Resolves `.` and `..` lexically; `None` when the result leaves `root`.
fn normalize_within(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root).then_some(out)
}

/// Reads an upstream file that must be a plain file (a link could point anywhere).
fn read_regular(up: &Upstream, path: &Path) -> Result<Vec<u8>, SyncError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_error(path))?;
    if !meta.is_file() {
        return Err(SyncError::UpstreamInvalid {
            path: up.rel(path),
            message: "not a plain file (a link or special file)".into(),
        });
    }
    std::fs::read(path).map_err(io_error(path))
}

pub(super) fn source_text(note: &SourceNote, up: &Upstream, files: &[Vendored]) -> String {
    let mut text = format!(
        "# Where this contract came from. Written by `tk-conform contract sync`.\n\
         source: {}\nlayout: {}\nsynced-at: {}\nsynced-by: tk-conform {}\n",
        note.from,
        up.layout.name(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(digest) = &note.archive_sha256 {
        text.push_str(&format!("archive-sha256: {digest}\n"));
    }
    text.push_str("files:\n");
    for f in files {
        text.push_str(&format!("  {} <- {}\n", f.dest, f.origin));
    }
    text
}
